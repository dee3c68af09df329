"""The retriever end to end on both stores with the real model: every mode, the gate, fallback, filters,
reranking (a real second embedding model and the CrossEncoder plumbing), traces and input errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import InvalidInput
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.sentence import SentenceTransformerEmbedder, resolve_model_path
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.pipeline import Retriever, SearchOptions
from kb_service.retrieval.rerank import CrossEncoderReranker, EmbeddingReranker
from kb_service.stores.base import VectorStore

pytestmark = pytest.mark.integration

CORPUS = {
    "volcano.md": "# Volcanoes\n\nA volcano is a rupture in the crust of a planet that lets hot lava, volcanic ash "
    "and gases escape from a magma chamber below the surface. Eruptions can be explosive or effusive.\n\n"
    "## Monitoring\n\nSeismometers and gas sensors warn of eruptions days in advance.",
    "bread.md": "# Baking bread\n\nKnead the dough for ten minutes, let it rise for an hour, then bake it at "
    "220 degrees until the crust is brown. Sourdough uses a starter culture instead of yeast.",
    "python.md": "# Python lists\n\nA list is an ordered, mutable sequence. Use append to add an item and sort to "
    "order the items in place. List comprehensions build lists from iterables.",
    "熊猫.txt": "大熊猫是中国特有的熊科动物，主要栖息在四川、陕西和甘肃的山区，以竹子为主要食物。",
    "tea.txt": "Green tea is made from unoxidised leaves of Camellia sinensis; black tea is fully oxidised.",
}


@pytest.fixture
def loaded(store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path) -> Iterator[Retriever]:  # type: ignore[no-untyped-def]
    ingestor = Ingestor.from_settings(Settings(chunk_size=48, chunk_overlap=8), store=store, kb=kb, embedder=embedder)
    ingestor.ingest(
        [SourceItem(name, text=text, metadata={"topic": name.split(".")[0]}) for name, text in CORPUS.items()]
    )
    yield Retriever(store, LexicalIndexes(store, tmp_path / "lexical"))


def _sources(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.chunk.metadata["source"] for h in result.hits]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
@pytest.mark.parametrize("gate", [False, True])
def test_every_mode_finds_the_right_document(
    loaded: Retriever, kb: KnowledgeBase, embedder, mode: str, gate: bool
) -> None:  # type: ignore[no-untyped-def]
    options = SearchOptions(top_k=3, mode=mode, gate=gate, rerank=False, trace=True)  # type: ignore[arg-type]
    assert (
        _sources(loaded.search(kb, embedder, "how do seismometers warn of a volcanic eruption", options))[0]
        == "volcano.md"
    )
    assert _sources(loaded.search(kb, embedder, "sort a list in python", options))[0] == "python.md"
    if mode != "dense":  # MiniLM is English-only; the lexical side carries Chinese
        assert _sources(loaded.search(kb, embedder, "大熊猫吃什么", options))[0] == "熊猫.txt"


def test_hits_carry_provenance_stage_scores_and_trace(loaded: Retriever, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    result = loaded.search(kb, embedder, "volcanic ash and lava", SearchOptions(top_k=5, rerank=False, trace=True))
    top = result.hits[0]
    assert top.chunk.metadata["source"] == "volcano.md" and top.chunk.section
    assert top.chunk.end > top.chunk.start >= 0
    assert {"dense", "lexical", "gate"} <= set(top.stages)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert result.trace.gated[0].document.source == "volcano.md"
    assert {"embed", "lexical", "gate", "dense", "fusion", "total"} <= set(result.trace.timings_ms)
    assert result.trace.candidates and result.trace.reranked == []


def test_gated_documents_are_read_from_the_store_only_for_a_trace(
    loaded: Retriever, kb: KnowledgeBase, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """In lexical mode every gated document comes from BM25, which knows ids only: the documents themselves are
    read (one more store call) only when a trace shows them."""
    reads: list[list[str]] = []
    real = loaded.store.get_documents
    monkeypatch.setattr(loaded.store, "get_documents", lambda kb, ids: reads.append(list(ids)) or real(kb, ids))
    options = SearchOptions(top_k=3, mode="lexical", gate=True, gate_docs=2, rerank=False)
    plain = loaded.search(kb, embedder, "volcanic ash and lava", options)
    assert reads == [] and plain.trace.gated == [] and _sources(plain)[0] == "volcano.md"
    traced = loaded.search(kb, embedder, "volcanic ash and lava", replace(options, trace=True))
    assert len(reads) == 1 and [d.document.source for d in traced.trace.gated][0] == "volcano.md"
    assert [h.chunk.id for h in traced.hits] == [h.chunk.id for h in plain.hits]
    assert traced.trace.gated[0].score == plain.hits[0].stages["gate"]


def test_dense_hits_come_as_ids_and_the_store_reads_chunks_the_lexical_index_lacks(
    loaded: Retriever, kb: KnowledgeBase, embedder, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """With the lexical index at hand the stores send dense hits as ids and scores, and the chunks come from the
    index; a document published after the index was taken is read from the store. Either way every hit carries the
    chunk and the dense score the full-row search gives."""
    stale = loaded.lexical.get(kb)
    comet = "# Comets\n\nA comet is an icy body that releases gas and dust when it passes close to the Sun."
    ingestor = Ingestor.from_settings(
        Settings(chunk_size=48, chunk_overlap=8), store=loaded.store, kb=kb, embedder=embedder
    )
    [added] = ingestor.ingest([SourceItem("comet.md", text=comet)])
    monkeypatch.setattr(loaded.lexical, "get", lambda kb: stale)
    reads: list[list[str]] = []
    real = loaded.store.get_chunks
    monkeypatch.setattr(loaded.store, "get_chunks", lambda kb, ids: reads.append(list(ids)) or real(kb, ids))
    query = "an icy comet releasing gas near the Sun"
    result = loaded.search(kb, embedder, query, SearchOptions(top_k=10, gate=False, rerank=False))
    assert "comet.md" in _sources(result)  # found by the dense side only: the stale index does not know it
    assert reads and {c for ids in reads for c in ids} == {
        h.chunk.id for h in result.hits if h.chunk.doc_id == added.doc_id
    }
    full = {h.chunk.id: h for h in loaded.store.search_chunks(kb, embedder.embed_queries([query]), top_k=50)[0]}
    dense = [h for h in result.hits if "dense" in h.stages]
    assert len(dense) == len(result.hits) and all(h.chunk == full[h.chunk.id].chunk for h in dense)
    assert [h.stages["dense"] for h in dense] == pytest.approx([full[h.chunk.id].score for h in dense], abs=1e-5)


def test_strict_gate_only_returns_gated_documents_and_fallback_widens(
    loaded: Retriever, kb: KnowledgeBase, embedder
) -> None:  # type: ignore[no-untyped-def]
    strict = SearchOptions(top_k=10, gate=True, gate_docs=1, fallback=False, rerank=False, trace=True)
    result = loaded.search(kb, embedder, "volcano eruption", strict)
    assert {h.chunk.doc_id for h in result.hits} == {result.trace.gated[0].document.id}
    widened = loaded.search(
        kb, embedder, "volcano eruption", SearchOptions(top_k=10, gate_docs=1, fallback=True, rerank=False)
    )
    assert len({h.chunk.doc_id for h in widened.hits}) > 1


def test_filters_reach_every_side(loaded: Retriever, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    for mode in ("dense", "lexical", "hybrid"):
        options = SearchOptions(top_k=5, mode=mode, filters={"source": "bread.md"}, rerank=False)  # type: ignore[arg-type]
        assert set(_sources(loaded.search(kb, embedder, "crust", options))) == {"bread.md"}
        options = SearchOptions(top_k=5, mode=mode, filters={"topic": ["tea", "bread"]}, rerank=False)  # type: ignore[arg-type]
        assert set(_sources(loaded.search(kb, embedder, "leaves crust", options))) <= {"bread.md", "tea.txt"}


def test_bad_queries_and_options_are_refused(loaded: Retriever, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="query must not be empty"):
        loaded.search(kb, embedder, "   ", SearchOptions())
    with pytest.raises(InvalidInput, match="query is 4001 characters long; the limit is 4000"):
        loaded.search(kb, embedder, "x" * 4001, SearchOptions())
    with pytest.raises(InvalidInput, match="top_k must be at most 200, got 500"):
        loaded.search(kb, embedder, "bread", SearchOptions(top_k=500))
    with pytest.raises(InvalidInput, match="mode must be 'dense', 'lexical' or 'hybrid', got 'fuzzy'"):
        loaded.search(kb, embedder, "bread", SearchOptions(mode="fuzzy"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="filter 'source' has an empty list of values"):
        loaded.search(kb, embedder, "bread", SearchOptions(filters={"source": []}))


def test_embedding_reranker_rescores_with_a_second_model(
    loaded: Retriever, kb: KnowledgeBase, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    reranker = EmbeddingReranker(embedder)  # the real model as its own second opinion: scores are cosines
    retriever = Retriever(loaded.store, loaded.lexical, reranker)
    options = SearchOptions(top_k=3, rerank=True, rerank_candidates=4, rerank_fusion=False, trace=True)
    result = retriever.search(kb, embedder, "kneading dough and baking", options)
    assert _sources(result)[0] == "bread.md"
    reranked = result.trace.reranked
    assert len(reranked) == 4 and [h.score for h in reranked] == sorted(
        (h.stages["rerank"] for h in reranked), reverse=True
    )
    q = embedder.embed_queries(["kneading dough and baking"])[0]
    expected = float(embedder.embed_documents([reranked[0].chunk.text])[0] @ q)
    # bf16 (CPUs that have it): a text embedded alone or inside a batch differs in the 4th decimal
    tolerance = 2e-3 if str(embedder.dtype) == "torch.bfloat16" else 1e-5
    assert reranked[0].stages["rerank"] == pytest.approx(expected, abs=tolerance)

    reranker.save_cache(tmp_path / "cache.npz")
    fresh = EmbeddingReranker(embedder)
    assert fresh.load_cache(tmp_path / "cache.npz") >= 4 and fresh.has(reranked[0].chunk.text)


def test_reranker_adds_a_weighted_rrf_term_to_the_first_stage_score(
    loaded: Retriever, kb: KnowledgeBase, embedder
) -> None:  # type: ignore[no-untyped-def]
    query = "kneading dough and baking"
    first = loaded.search(kb, embedder, query, SearchOptions(top_k=10, rerank=False, trace=True)).trace.candidates
    before = {c.chunk.id: c.score for c in first}
    retriever = Retriever(loaded.store, loaded.lexical, EmbeddingReranker(embedder))
    options = SearchOptions(top_k=10, rerank_candidates=4, rerank_weight=2.0, rrf_k=20, trace=True)
    result = retriever.search(kb, embedder, query, options)
    head = result.trace.reranked
    assert {c.chunk.id for c in head} == {c.chunk.id for c in first[:4]}  # the same head, re-ordered
    by_rerank = sorted(head, key=lambda c: -c.stages["rerank"])
    for rank, c in enumerate(by_rerank, start=1):  # first-stage fused score + 2 / (k + reranker rank)
        assert c.score == pytest.approx(before[c.chunk.id] + 2.0 / (20 + rank))
    assert [c.score for c in head] == sorted((c.score for c in head), reverse=True)
    tail = result.hits[4:]
    assert all(t.score < min(c.score for c in head) for t in tail)  # the rest keeps its order below the head
    with pytest.raises(InvalidInput, match="rerank_weight must be a number in"):
        retriever.search(kb, embedder, query, SearchOptions(rerank_weight=0))


@pytest.mark.unit
def test_precision_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kb_service.embeddings import sentence

    assert sentence.resolve_dtype("cuda:0", fp16=True, cpu_bf16="auto") == torch.float16
    assert sentence.resolve_dtype("cuda", fp16=False, cpu_bf16="on") == torch.float32
    assert sentence.resolve_dtype("cpu", fp16=True, cpu_bf16="on") == torch.bfloat16
    assert sentence.resolve_dtype("cpu", fp16=True, cpu_bf16="off") == torch.float32
    for fast, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(sentence, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert sentence.resolve_dtype("cpu", fp16=True, cpu_bf16="auto") == expected
    assert sentence.resolve_dtype("mps", fp16=True, cpu_bf16="on") == torch.float32


def test_bf16_embeddings_agree_with_fp32() -> None:
    texts = ["Aspirin lowers the risk of a second heart attack.", "长城是中国古代的防御工程。", "short"]
    fp32 = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", cpu_bf16="off")
    bf16 = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", cpu_bf16="on")
    a, b = fp32.embed_documents(texts), bf16.embed_documents(texts)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert np.min(np.sum(a * b, axis=1)) > 0.99  # measured ≥ 0.996 on 13k SciFact chunks
    assert fp32.info == bf16.info  # same fingerprint: a knowledge base may be searched in either precision


def test_cross_encoder_reranker_plumbing(loaded: Retriever, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    # No pretrained cross-encoder exists offline: MiniLM with a fresh (random) head checks batching and order only.
    reranker = CrossEncoderReranker(resolve_model_path("all-MiniLM-L6-v2"), device="cpu", batch_size=2, max_length=64)
    scores = reranker.score(["q1", "q2"], [["a", "b", "c"], ["d"]])
    assert [s.shape for s in scores] == [(3,), (1,)] and all(np.isfinite(s).all() for s in scores)
    retriever = Retriever(loaded.store, loaded.lexical, reranker)
    result = retriever.search(
        kb, embedder, "green tea", SearchOptions(top_k=5, rerank_candidates=3, rerank_fusion=False, trace=True)
    )
    head = result.trace.reranked
    assert [h.stages["rerank"] for h in head] == sorted((h.stages["rerank"] for h in head), reverse=True)
    assert len(result.hits) == 5


def test_settings_shape_the_default_options() -> None:
    settings = Settings(search_top_k=7, gate=False, rerank_backend="none", search_mode="lexical")
    options = SearchOptions.from_settings(settings, top_k=3, mode=None)
    assert (options.top_k, options.gate, options.rerank, options.mode) == (3, False, False, "lexical")


@pytest.mark.slow
def test_offline_multilingual_e5_model_is_built_and_multilingual() -> None:
    model = SentenceTransformerEmbedder("intfloat/multilingual-e5-small", device="cpu")
    assert model.info.dimension == 384 and model.query_prompt == "query" and model.document_prompt == "document"
    q = model.embed_queries(["大熊猫吃什么？"])[0]
    docs = model.embed_documents([CORPUS["熊猫.txt"], CORPUS["bread.md"]])
    assert docs[0] @ q > docs[1] @ q + 0.05


@pytest.mark.unit
@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"a b": "x"}, "filter key 'a b' may only contain letters, digits, '_' and '-'"),
        ({'x"]or 1': "x"}, "may only contain letters"),
        ({"topic": {"$gt": 1}}, "filter 'topic' must be a string, number or boolean, or a list of them"),
        ({"topic": [None]}, "must be a string, number or boolean"),
    ],
)
def test_filter_validation(filters: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")):
        SearchOptions(filters=filters).validate()


@pytest.mark.unit
def test_auto_reranker_only_where_it_is_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    from kb_service.embeddings import sentence
    from kb_service.retrieval.factory import build_reranker, rerank_kind

    for fast_bf16, expected in ((False, "none"), (True, "embedding")):
        monkeypatch.setattr(sentence, "cpu_has_fast_bf16", lambda fast_bf16=fast_bf16: fast_bf16)
        assert rerank_kind(Settings(rerank_backend="auto", embedding_device="cpu")) == expected
        assert rerank_kind(Settings(rerank_backend="auto", embedding_device="cpu", embedding_cpu_bf16="off")) == "none"
        assert rerank_kind(Settings(rerank_backend="auto", embedding_device="cpu", embedding_cpu_bf16="on")) == (
            "embedding"
        )
    assert rerank_kind(Settings(rerank_backend="auto", embedding_device="cuda:0")) == "embedding"
    assert rerank_kind(Settings(rerank_backend="cross-encoder", embedding_device="cpu")) == "cross-encoder"
    assert build_reranker(Settings(rerank_backend="none"), embedders=None) is None  # type: ignore[arg-type]


def test_the_memory_store_ranks_like_the_real_stores(
    loaded: Retriever, kb: KnowledgeBase, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The in-memory reference store offers only the core protocol (and revisions): the retriever's fallbacks (full
    rows instead of id search, no stored vectors to reuse, nothing to seal) give the same rankings as a real store."""
    from kb_service.stores.memory import MemoryStore

    memory = MemoryStore()
    memory.create_kb(kb)
    ingestor = Ingestor.from_settings(Settings(chunk_size=48, chunk_overlap=8), store=memory, kb=kb, embedder=embedder)
    ingestor.ingest(
        [SourceItem(name, text=text, metadata={"topic": name.split(".")[0]}) for name, text in CORPUS.items()]
    )
    reference = Retriever(memory, LexicalIndexes(memory, tmp_path / "memory-lexical"))
    for query in ("how do seismometers warn of a volcanic eruption", "bake bread with a starter", "大熊猫吃什么"):
        for options in (
            SearchOptions(top_k=5, rerank=False),
            SearchOptions(top_k=5, mode="dense", gate=False, rerank=False),
            SearchOptions(top_k=5, rerank=False, filters={"topic": ["tea", "bread"]}),
        ):
            real, ref = loaded.search(kb, embedder, query, options), reference.search(kb, embedder, query, options)
            assert [h.chunk.id for h in ref.hits] == [h.chunk.id for h in real.hits], (query, options)
            assert [h.score for h in ref.hits] == pytest.approx([h.score for h in real.hits], abs=1e-4)
