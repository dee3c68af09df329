"""Stored rerank vectors on both stores with the real model: the warmer fills them, a rerank uses them instead of
embedding its candidates (same scores), a search stores the ones it had to compute, and they go with their chunks."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from kb_service.core.config import Settings
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.runner import ModelThread
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.pipeline import Retriever, SearchOptions
from kb_service.retrieval.rerank import EmbeddingReranker
from kb_service.retrieval.rerank_warmer import RerankWarmer
from kb_service.stores.base import VectorStore

pytestmark = pytest.mark.integration

CORPUS = {
    "volcano.md": "# Volcanoes\n\nA volcano is a rupture in the crust of a planet that lets hot lava, volcanic ash "
    "and gases escape from a magma chamber below the surface.\n\n## Monitoring\n\nSeismometers and gas sensors "
    "warn of eruptions days in advance.",
    "bread.md": "# Baking bread\n\nKnead the dough for ten minutes, let it rise for an hour, then bake it at "
    "220 degrees until the crust is brown. Sourdough uses a starter culture instead of yeast.",
    "tea.txt": "Green tea is made from unoxidised leaves of Camellia sinensis; black tea is fully oxidised.",
}
QUERY = "kneading dough and baking"


class CountingEmbedder:
    """The real embedder, counting the passages it is asked to embed."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.passages = 0

    @property
    def info(self):  # type: ignore[no-untyped-def]
        return self.inner.info

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.passages += len(texts)
        return self.inner.embed_documents(texts)  # type: ignore[no-any-return]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)  # type: ignore[no-any-return]

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)  # type: ignore[no-any-return]


def _ingest(store: VectorStore, kb: KnowledgeBase, embedder, items: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    ingestor = Ingestor.from_settings(Settings(chunk_size=32, chunk_overlap=4), store=store, kb=kb, embedder=embedder)
    ingestor.ingest([SourceItem(name, text=text) for name, text in items.items()])


def _all_ids(store: VectorStore, kb: KnowledgeBase) -> list[str]:
    return [c.id for batch in store.iter_chunks(kb) for c in batch]


def _retriever(store: VectorStore, tmp_path: Path, reranker: EmbeddingReranker, keep: bool = True) -> Retriever:
    return Retriever(store, LexicalIndexes(store, tmp_path / "lexical"), reranker, keep_rerank_vectors=keep)


def test_warmer_fills_every_chunk_and_a_rerank_then_embeds_only_its_query(
    store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _ingest(store, kb, embedder, CORPUS)
    counting = CountingEmbedder(embedder)
    reranker = EmbeddingReranker(counting)
    warmer = RerankWarmer(store, reranker, batch_size=3, pass_limit=4)  # several passes, several batches
    ids = _all_ids(store, kb)
    assert len(ids) > 4
    assert warmer.warm(kb, wait_idle=False) == len(ids) == counting.passages
    assert warmer.warm(kb, wait_idle=False) == 0  # the revision has not moved: nothing to do
    stored = store.rerank_vectors(kb, reranker.space, ids)
    assert set(stored) == set(ids)
    texts = {c.id: c.text for batch in store.iter_chunks(kb) for c in batch}
    expected = embedder.embed_documents([texts[i] for i in ids])
    assert min(float(stored[i] @ expected[n]) for n, i in enumerate(ids)) > 0.999

    options = SearchOptions(top_k=3, rerank_candidates=5, rerank_fusion=False, trace=True)
    cold = _retriever(store, tmp_path, EmbeddingReranker(embedder), keep=False).search(kb, embedder, QUERY, options)
    fresh = CountingEmbedder(embedder)  # a new process: nothing in the reranker's memory
    warm = _retriever(store, tmp_path, EmbeddingReranker(fresh)).search(kb, embedder, QUERY, options)
    assert fresh.passages == 0
    assert [h.chunk.id for h in warm.trace.reranked] == [h.chunk.id for h in cold.trace.reranked]
    np.testing.assert_allclose(
        [h.stages["rerank"] for h in warm.trace.reranked], [h.stages["rerank"] for h in cold.trace.reranked], atol=2e-3
    )
    assert warm.hits[0].chunk.metadata["source"] == "bread.md"

    # A new document moves the revision: only its chunks are embedded. A deleted one takes its vectors along.
    _ingest(store, kb, embedder, {"pumps.md": "# Pumps\n\nCentrifugal pumps move water with a spinning impeller."})
    before = counting.passages
    added = warmer.warm(kb, wait_idle=False)
    assert added == counting.passages - before == len(_all_ids(store, kb)) - len(ids) > 0
    bread = next(d for d in store.list_documents(kb) if d.source == "bread.md")
    bread_ids = [c.id for batch in store.iter_chunks(kb) for c in batch if c.doc_id == bread.id]
    assert set(store.rerank_vectors(kb, reranker.space, bread_ids)) == set(bread_ids)
    store.delete_document(kb, bread.id)
    assert store.rerank_vectors(kb, reranker.space, bread_ids) == {}


def test_a_search_stores_the_vectors_it_computed(
    store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _ingest(store, kb, embedder, CORPUS)
    reranker = EmbeddingReranker(embedder)
    result = _retriever(store, tmp_path, reranker).search(
        kb, embedder, QUERY, SearchOptions(top_k=3, rerank_candidates=4, trace=True)
    )
    head = [h.chunk.id for h in result.trace.reranked]
    assert len(head) == 4
    deadline = time.monotonic() + 30
    while len(store.rerank_vectors(kb, reranker.space, head)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)  # written in the background, after the search returned
    assert set(store.rerank_vectors(kb, reranker.space, head)) == set(head)
    others = set(_all_ids(store, kb)) - set(head)
    assert store.rerank_vectors(kb, reranker.space, list(others)) == {}  # only what the search embedded
    counting = CountingEmbedder(embedder)
    warmer = RerankWarmer(store, EmbeddingReranker(counting))
    assert warmer.warm(kb, wait_idle=False) == len(others) == counting.passages


@pytest.mark.unit
def test_background_calls_leave_the_model_thread_idle() -> None:
    thread = ModelThread()
    thread.call(lambda: None)
    time.sleep(0.2)
    assert thread.idle_for() >= 0.2
    with thread.background():
        thread.call(lambda: time.sleep(0.05))
    assert thread.idle_for() >= 0.25  # background work is not activity
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(5)

    waiter = threading.Thread(target=lambda: thread.call(busy))
    waiter.start()
    started.wait(5)
    assert thread.idle_for() == 0.0  # a foreground call is running
    release.set()
    waiter.join(5)
    assert 0.0 < thread.idle_for() < 0.2


@pytest.mark.unit
def test_the_warmer_waits_for_idle_and_stops_while_waiting(embedder) -> None:  # type: ignore[no-untyped-def]
    thread = ModelThread()
    warmer = RerankWarmer(None, EmbeddingReranker(embedder), idle_s=0.3, model_thread=thread)  # type: ignore[arg-type]
    thread.call(lambda: None)
    start = time.monotonic()
    assert warmer._wait_idle()
    assert time.monotonic() - start >= 0.25
    thread.call(lambda: None)
    threading.Timer(0.1, warmer.close).start()
    assert not warmer._wait_idle()  # closed before the model thread went idle long enough
