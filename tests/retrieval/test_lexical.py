"""Lexical side: tokenisation (English stemming, Chinese segmentation), BM25 ranking, masks, persistence and
staying current with the store through its revision token (both stores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.core.config import Settings
from kb_service.core.records import Chunk, KnowledgeBase
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.fusion import rrf
from kb_service.retrieval.lexical import LexicalIndex, LexicalIndexes, lexical_tokens
from kb_service.stores.base import VectorStore
from kb_service.stores.changes import Changes
from kb_service.stores.filters import Filter


@pytest.mark.unit
def test_english_tokens_are_stemmed_without_stopwords() -> None:
    assert lexical_tokens("The Running of the Proteins, and RUNNERS!") == ["run", "protein", "runner"]


@pytest.mark.unit
def test_chinese_is_segmented_into_words() -> None:
    tokens = lexical_tokens("中华人民共和国的首都是北京")
    assert "北京" in tokens and "首都" in tokens and "中华" in tokens
    assert "的" in tokens or "首都" in tokens  # jieba keeps single-character words as their own tokens
    # Mixed scripts split at the boundary; full-width letters fold to ASCII (NFKC).
    assert lexical_tokens("使用ＧＰＵ加速") == ["gpu", "使用", "加速"]


@pytest.mark.unit
def test_rrf_adds_reciprocal_ranks() -> None:
    fused = rrf([["a", "b"], ["b", "c"]], k=60)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    assert sorted(fused, key=lambda x: -fused[x]) == ["b", "a", "c"]
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        rrf([["a"]], weights=[1.0, 2.0])


def _chunk(cid: str, doc: str, text: str, **meta: object) -> Chunk:
    return Chunk(id=cid, doc_id=doc, ord=0, text=text, hash=cid, page=1, metadata={"source": f"{doc}.txt", **meta})


@pytest.mark.unit
def test_index_ranks_masks_and_round_trips(tmp_path: Path) -> None:
    chunks = [
        _chunk("c1", "d1", "Insulin resistance in type 2 diabetes", lang="en"),
        _chunk("c2", "d2", "Diabetes and diabetes again: insulin, insulin, insulin", lang="en"),
        _chunk("c3", "d3", "北京是中国的首都", lang="zh"),
        _chunk("c4", "d4", "Unrelated text about volcanoes", lang="en"),
    ]
    index = LexicalIndex.build(chunks, "rev1")
    hits = index.search("insulin diabetes", top_k=10)
    assert [h.chunk.id for h in hits] == ["c2", "c1"]  # no-term chunks are left out
    assert hits[0].score > hits[1].score > 0
    assert [h.chunk.id for h in index.search("insulin", top_k=10, doc_ids=["d1"])] == ["c1"]
    # The gated search reuses the global scores of the same query: same numbers, masked to the documents.
    gated = index.search("insulin diabetes", top_k=10, doc_ids=["d2", "d4", "unknown"])
    assert [(h.chunk.id, h.score) for h in gated] == [(hits[0].chunk.id, hits[0].score)]
    assert index.search("insulin diabetes", top_k=10, doc_ids=[]) == []
    both = index.search("insulin diabetes", top_k=10, doc_ids=["d1", "d2"], filters=Filter.parse({"lang": "en"}))
    assert [h.chunk.id for h in both] == ["c2", "c1"]
    assert index.search("北京首都", top_k=5)[0].chunk.id == "c3"
    assert index.search("insulin", top_k=10, filters=Filter.parse({"lang": "zh"})) == []
    assert index.search("the of and", top_k=10) == []  # only stopwords
    assert [d for d, _ in index.search_documents("insulin diabetes", top_k=5)] == ["d2", "d1"]

    index.save(tmp_path / "idx")
    loaded = LexicalIndex.load(tmp_path / "idx")
    assert loaded.revision == "rev1"
    assert [h.chunk.id for h in loaded.search("insulin diabetes", top_k=10)] == ["c2", "c1"]
    assert [d for d, _ in loaded.search_documents("北京", top_k=5)] == ["d3"]
    assert LexicalIndex.build([], "empty").search("anything", top_k=3) == []


@pytest.mark.integration
def test_index_follows_ingest_replace_and_delete(
    store: VectorStore,
    kb: KnowledgeBase,
    embedder,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    ingestor = Ingestor.from_settings(Settings(chunk_size=64, chunk_overlap=8), store=store, kb=kb, embedder=embedder)
    indexes = LexicalIndexes(store, tmp_path / "lexical")
    assert indexes.get(kb).search("zebra", top_k=5) == []

    ingestor.ingest(
        [SourceItem("a.txt", text="The zebra grazes on the savanna."), SourceItem("b.txt", text="斑马在草原上吃草。")]
    )
    index = indexes.get(kb)
    assert [h.source for h in index.search("zebras", top_k=5)] == ["a.txt"]
    assert [h.source for h in index.search("斑马", top_k=5)] == ["b.txt"]
    assert indexes.get(kb) is index  # same revision: no rebuild

    # Replace: the new text is found, the old one is gone.
    ingestor.ingest([SourceItem("a.txt", text="The okapi hides in the rainforest.")])
    index = indexes.get(kb)
    assert index.search("zebra", top_k=5) == []
    assert [h.source for h in index.search("okapi", top_k=5)] == ["a.txt"]

    # A new process (fresh cache object) loads the persisted index of the current revision.
    reloaded = LexicalIndexes(store, tmp_path / "lexical").get(kb)
    assert reloaded.revision == index.revision and len(reloaded.chunks) == len(index.chunks)

    # Delete: nothing of the document is left in the lexical index.
    doc_id = index.search("okapi", top_k=1)[0].chunk.doc_id
    store.delete_document(kb, doc_id)
    index = indexes.get(kb)
    assert index.search("okapi", top_k=5) == []
    assert all(c.doc_id != doc_id for c in index.chunks)


@pytest.mark.integration
@pytest.mark.parametrize("chunk_context", ["none", "document"])
def test_index_catches_up_from_the_store_log_without_a_rebuild(
    store: VectorStore,
    kb: KnowledgeBase,
    embedder,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk_context: str,
) -> None:
    """Upload, replace and delete after the first build: the index follows by what changed, and answers exactly as
    an index built from every chunk at the same revision."""
    settings = Settings(chunk_size=64, chunk_overlap=8, chunk_context=chunk_context)
    ingestor = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder)
    indexes = LexicalIndexes(store, tmp_path / "lexical", chunk_context=chunk_context)
    ingestor.ingest(
        [
            SourceItem("a.txt", text="The zebra grazes on the savanna. " * 12),
            SourceItem("b.txt", text="斑马在草原上吃草。河马在河里游泳。"),
        ]
    )
    indexes.get(kb)
    builds: list[str] = []
    real_build = LexicalIndexes._build
    monkeypatch.setattr(LexicalIndexes, "_build", lambda self, k, rev: builds.append(rev) or real_build(self, k, rev))

    old_a = indexes.get(kb).search("zebra", top_k=1)[0].chunk.doc_id
    ingestor.ingest([SourceItem("a.txt", text="The okapi hides in the rainforest, far from any zebra.")])
    assert [h.source for h in indexes.get(kb).search("okapi", top_k=5)] == ["a.txt"]
    ingestor.ingest([SourceItem("c.txt", text="Zebras and okapis are both herbivores of Africa.")])
    b = indexes.get(kb).search("斑马", top_k=1)[0].chunk.doc_id
    store.delete_document(kb, b)
    index = indexes.get(kb)
    assert builds == []  # three revisions later, never rebuilt

    fresh = LexicalIndexes(store, tmp_path / "fresh", chunk_context=chunk_context).get(kb)
    assert builds == [index.revision] and fresh.revision == index.revision
    assert sorted(c.id for c in index.chunks) == sorted(c.id for c in fresh.chunks)
    assert index.entries(old_a) == index.entries(b) == 0
    for query in ["zebra", "okapi rainforest", "herbivores Africa", "斑马 草原", "a.txt"]:
        got = [(h.chunk.id, round(h.score, 4)) for h in index.search(query, top_k=10)]
        assert got == [(h.chunk.id, round(h.score, 4)) for h in fresh.search(query, top_k=10)], query
        docs = [(d, round(score, 4)) for d, score in index.search_documents(query, top_k=5)]
        assert docs == [(d, round(score, 4)) for d, score in fresh.search_documents(query, top_k=5)], query
    # Saved in the background: a new process starts from it (and catches up if it lags).
    for thread in list(indexes._saving.values()):
        thread.join()
    reloaded = LexicalIndexes(store, tmp_path / "lexical", chunk_context=chunk_context).get(kb)
    assert reloaded.revision == index.revision and builds == [index.revision]


@pytest.mark.unit
def test_updates_remove_compact_and_look_up_chunks() -> None:
    words = ["insulin", "volcano", "glacier", "protein", "comet", "coral", "desert", "forest", "magma", "tundra"]
    chunks = [_chunk(f"c{i}", f"d{i}", f"{w} facts and more {w}") for i, w in enumerate(words)]
    index = LexicalIndex.build(chunks, "r0")
    older = index.updated(Changes("r1", frozenset(), frozenset({"d0", "d1"})), [])
    assert older.bm25 is not None and len(older.bm25.segments) == 1 and older.rows.chunks == chunks  # masked
    assert older.chunk("c0") is None and older.chunk("c2") is chunks[2] and older.entries("d1") == 0
    assert older.search("volcano", top_k=5) == [] and index.search("volcano", top_k=5)[0].chunk.id == "c1"
    newer = older.updated(Changes("r2", frozenset(), frozenset({"d2", "d3"})), [])  # 40% removed: compacted
    assert len(newer.rows.chunks) == 6 and [c.id for c in newer.chunks] == [f"c{i}" for i in range(4, 10)]
    assert newer.chunk("c9") is chunks[9] and newer.chunk("c2") is None and newer.entries("d9") == 1
    back = _chunk("c1", "d1", "volcano facts again")  # a document back after its removal
    latest = newer.updated(Changes("r3", frozenset({"d1"}), frozenset()), [back])
    assert [h.chunk for h in latest.search("volcano", top_k=5)] == [back] and latest.chunk("c1") is back
    assert {d for d, _ in latest.search_documents("volcano magma", top_k=5)} == {"d1", "d8"}
    assert {h.chunk.id for h in latest.search("facts", top_k=10, doc_ids=["d1", "d9"])} == {"c1", "c9"}
    # Older snapshots are untouched by what was derived from them.
    assert older.chunk("c9") is chunks[9] and older.search("magma", top_k=1)[0].chunk.id == "c8"
    gone = latest.updated(Changes("r4", frozenset(), frozenset({f"d{i}" for i in range(10)})), [])
    assert gone.bm25 is None and gone.search("magma", top_k=3) == [] and gone.chunks == []
