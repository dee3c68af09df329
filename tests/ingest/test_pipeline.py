"""Document semantics end to end on both stores with the real model: dedupe, replace, delete, visibility."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import StoreError
from kb_service.core.records import DocStatus, KnowledgeBase
from kb_service.ingest.pipeline import Ingestor, Outcome
from kb_service.ingest.sources import SourceItem, iter_paths
from kb_service.stores.base import VectorStore
from kb_service.stores.recovery import audit
from tests.fixtures import write_corpus

pytestmark = pytest.mark.integration


class CountingEmbedder:
    """The real embedder, counting how many texts it is asked to embed."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.embedded = 0

    @property
    def info(self):  # type: ignore[no-untyped-def]
        return self.inner.info

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += len(texts)
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def _ingestor(store: VectorStore, kb: KnowledgeBase, embedder, **overrides) -> Ingestor:  # type: ignore[no-untyped-def]
    settings = Settings(chunk_size=64, chunk_overlap=8, **overrides)
    return Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder)


def test_ingest_reingest_replace_delete(store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_corpus(tmp_path / "corpus")
    counting = CountingEmbedder(embedder)
    ingestor = _ingestor(store, kb, counting)

    first = ingestor.ingest(iter_paths([tmp_path / "corpus"]))
    assert {r.source: r.outcome for r in first} == dict.fromkeys(
        ["guide.docx", "manual.html", "notes.md", "report.pdf", "zh.txt"], Outcome.ADDED
    )
    total_chunks = sum(r.chunks for r in first)
    assert store.count_chunks(kb) == total_chunks
    assert store.count_documents(kb, status=DocStatus.READY) == 5

    embedded = counting.embedded
    again = ingestor.ingest(iter_paths([tmp_path / "corpus"]))
    assert {r.outcome for r in again} == {Outcome.UNCHANGED}
    assert counting.embedded == embedded, "unchanged content must not be embedded again"

    notes = tmp_path / "corpus" / "notes.md"
    old_id = next(r.doc_id for r in first if r.source == "notes.md")
    notes.write_text(notes.read_text() + "\n## Bridges\n\nThe Pont Neuf is the oldest bridge in Paris.\n")
    before = counting.embedded
    replaced = ingestor.ingest(iter_paths([tmp_path / "corpus"]))
    outcome = next(r for r in replaced if r.source == "notes.md")
    assert outcome.outcome == Outcome.REPLACED and outcome.replaced == old_id
    assert store.get_document(kb, old_id) is None and store.count_chunks(kb, doc_id=old_id) == 0
    # Only the new text is embedded: chunks whose text did not change reuse their stored vectors.
    assert 0 < counting.embedded - before < outcome.chunks + 1
    query = embedder.embed_queries(["oldest bridge in Paris"])
    top = store.search_chunks(kb, query, top_k=1)[0][0]
    assert top.chunk.doc_id == outcome.doc_id and "Pont Neuf" in top.chunk.text

    store.delete_document(kb, outcome.doc_id)
    assert store.count_chunks(kb, doc_id=outcome.doc_id) == 0
    assert store.count_chunks(kb) == sum(r.chunks for r in first if r.source != "notes.md")


def test_identical_content_under_two_names_is_stored_once(store: VectorStore, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    results = _ingestor(store, kb, embedder).ingest(
        [SourceItem(name="a.txt", text="Same words.\n"), SourceItem(name="b.txt", text="Same words.")]
    )
    assert [r.outcome for r in results] == [Outcome.ADDED, Outcome.UNCHANGED]
    assert results[0].doc_id == results[1].doc_id
    assert store.count_documents(kb) == 1


def test_a_changed_file_whose_new_content_exists_elsewhere_replaces_its_old_version(  # type: ignore[no-untyped-def]
    store: VectorStore, kb: KnowledgeBase, embedder
) -> None:
    """b.txt changes to the content a.txt already has: its old text must not stay searchable."""
    ingestor = _ingestor(store, kb, embedder)
    shared, old = "Shared text about turbines and their blades.", "Old text about gaskets and their seals."
    first = ingestor.ingest([SourceItem("a.txt", text=shared), SourceItem("b.txt", text=old)])
    old_id = first[1].doc_id
    [changed] = ingestor.ingest([SourceItem("b.txt", text=shared)])
    assert (changed.outcome, changed.doc_id, changed.replaced) == (Outcome.REPLACED, first[0].doc_id, old_id)
    assert store.get_document(kb, old_id) is None and store.count_chunks(kb, doc_id=old_id) == 0
    assert [d.source for d in store.list_documents(kb)] == ["a.txt"]
    [again] = ingestor.ingest([SourceItem("b.txt", text=shared)])
    assert again.outcome == Outcome.UNCHANGED


def test_a_ready_document_missing_chunks_is_ingested_again(store: VectorStore, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    """Re-uploading content whose stored copy lost chunks repairs it instead of answering unchanged."""
    ingestor = _ingestor(store, kb, embedder)
    [first] = ingestor.ingest([SourceItem("a.txt", text="Pumps need inspection. " * 200)])
    doc = store.get_document(kb, first.doc_id)
    assert doc is not None and doc.chunk_count > 1
    store.put_documents(kb, [replace(doc, chunk_count=doc.chunk_count + 1)])  # a row that claims a lost chunk
    assert audit(store, kb).incomplete_documents == 1 and not audit(store, kb).clean
    [again] = ingestor.ingest([SourceItem("a.txt", text="Pumps need inspection. " * 200)])
    assert again.outcome == Outcome.ADDED and audit(store, kb).clean


def test_parse_failures_are_reported_and_write_nothing(store: VectorStore, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    results = _ingestor(store, kb, embedder).ingest(
        [SourceItem(name="empty.txt", data=b""), SourceItem(name="ok.txt", text="Fine text.")]
    )
    assert [(r.source, r.outcome, r.reason) for r in results] == [
        ("empty.txt", Outcome.FAILED, "empty"),
        ("ok.txt", Outcome.ADDED, ""),
    ]
    assert store.count_documents(kb) == 1


class FailingStore:
    """The real store, with add_chunks failing as if the database went away mid-write."""

    def __init__(self, inner: VectorStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def add_chunks(self, kb, chunks):  # type: ignore[no-untyped-def]
        self.inner.add_chunks(kb, chunks[: len(chunks) // 2])
        raise StoreError("connection lost")


def test_a_failed_write_leaves_no_chunks_and_a_failed_document(store: VectorStore, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"Line {i} about pumps and valves." for i in range(100))
    results = _ingestor(FailingStore(store), kb, embedder).ingest([SourceItem(name="p.txt", text=text)])  # type: ignore[arg-type]
    assert results[0].outcome == Outcome.FAILED and "connection lost" in results[0].error
    assert store.count_chunks(kb) == 0
    doc = store.get_document(kb, results[0].doc_id)
    assert doc is not None and doc.status == DocStatus.FAILED and "connection lost" in doc.error
    # Retrying with a healthy store cleans up the failed row and succeeds.
    retry = _ingestor(store, kb, embedder).ingest([SourceItem(name="p.txt", text=text)])
    assert retry[0].outcome == Outcome.ADDED
    assert store.get_document(kb, retry[0].doc_id).status == DocStatus.READY


def test_chunk_mean_summary_vectors_cost_no_model_work(store: VectorStore, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    counting = CountingEmbedder(embedder)
    text = " ".join(f"Sentence {i} explains how centrifugal pump number {i} is serviced." for i in range(60))
    [result] = _ingestor(store, kb, counting, summary_vector="chunk-mean").ingest([SourceItem("pumps.txt", text=text)])
    assert result.outcome == Outcome.ADDED and result.chunks > 1
    assert counting.embedded == result.chunks  # the chunks only: no summary text was embedded
    chunks = [c for batch in store.iter_chunks(kb) for c in batch]
    mean = np.mean(embedder.embed_documents([c.text for c in chunks]), axis=0)
    [[best]] = store.search_documents(kb, (mean / np.linalg.norm(mean))[None, :].astype(np.float32), top_k=1)
    assert best[0] == result.doc_id and best[1] == pytest.approx(1.0, abs=1e-3)
