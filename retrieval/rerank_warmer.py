"""Rerank vectors ahead of need: an embedding reranker's passage vectors for every READY chunk, computed in the
background while the models are idle and stored beside the chunks (``RerankVectorStore.put_rerank_vectors``). A rerank
then embeds only its query: on a CPU a search with a rerank is several times faster (docs/BENCHMARKS.md).

A search that meets chunks without stored vectors embeds them and stores them too (``Retriever``); the warmer covers
the rest, one knowledge base at a time, and skips a knowledge base whose revision has not moved since it was
covered."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy as np

from kb_service.core.errors import KnowledgeBaseNotFound
from kb_service.core.records import Chunk, KnowledgeBase
from kb_service.embeddings.runner import MODEL_THREAD, ModelThread
from kb_service.retrieval.rerank import EmbeddingReranker
from kb_service.stores.base import RerankVectorStore, Revisioned, VectorStore

log = logging.getLogger(__name__)


class WarmableStore(VectorStore, RerankVectorStore, Revisioned, Protocol):
    """A store that keeps rerank vectors and knows when its chunks changed."""


class RerankWarmer:
    def __init__(
        self,
        store: WarmableStore,
        reranker: EmbeddingReranker,
        *,
        batch_size: int = 4,
        write_size: int = 32,
        idle_s: float = 1.0,
        interval_s: float = 5.0,
        pass_limit: int = 2_048,
        model_thread: ModelThread = MODEL_THREAD,
    ) -> None:
        """``batch_size``: passages per forward pass (a search arriving meanwhile waits for at most one);
        ``write_size``: vectors per store write;
        ``idle_s``: each batch waits until no other model call has come for this long; ``interval_s``: pause between
        sweeps over the knowledge bases; ``pass_limit``: chunks without a vector collected per pass over a KB."""
        self.store = store
        self.reranker = reranker
        self.batch_size = batch_size
        self.write_size = write_size
        self.idle_s = idle_s
        self.interval_s = interval_s
        self.pass_limit = pass_limit
        self.model_thread = model_thread
        self._covered: dict[str, str] = {}  # knowledge base name -> the revision whose chunks all have vectors
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rerank-warmer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the batch in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a store that is down now may be back at the next sweep
                log.warning("rerank warmer: sweep failed", exc_info=True)
            self._stop.wait(self.interval_s)

    def run_once(self, *, wait_idle: bool = True) -> int:
        """One sweep over every knowledge base; returns how many vectors were stored."""
        stored = 0
        for kb in self.store.list_kbs():
            if self._stop.is_set():
                break
            try:
                stored += self.warm(kb, wait_idle=wait_idle)
            except KnowledgeBaseNotFound:  # dropped during the sweep
                continue
        return stored

    def warm(self, kb: KnowledgeBase, *, wait_idle: bool = True) -> int:
        """Embed and store the vectors that ``kb``'s READY chunks lack; returns how many were stored."""
        revision = self.store.kb_revision(kb)
        if self._covered.get(kb.name) == revision:
            return 0
        stored = 0
        while not self._stop.is_set():
            missing = self._missing(kb)
            if not missing:
                self._covered[kb.name] = revision
                break
            missing.sort(key=lambda c: len(c.text))  # batches of similar lengths: little padding
            # Embedded a batch at a time, stored a few batches at a time (fewer store round trips).
            for start in range(0, len(missing), self.write_size):
                part = missing[start : start + self.write_size]
                vectors = self._embed(part, wait_idle)
                self.store.put_rerank_vectors(kb, self.reranker.space, part[: len(vectors)], vectors)
                stored += len(vectors)
                if len(vectors) < len(part):  # stopping
                    return stored
        if stored:
            log.info("rerank warmer: stored %d vectors for knowledge base %r", stored, kb.name)
        return stored

    def _embed(self, chunks: list[Chunk], wait_idle: bool) -> np.ndarray:
        """Vectors of the first chunks, one batch at a time, each after the models have been idle; fewer rows than
        chunks once the warmer is stopping."""
        vectors = [np.zeros((0, self.reranker.embedder.info.dimension), dtype=np.float32)]
        for i in range(0, len(chunks), self.batch_size):
            if wait_idle and not self._wait_idle():
                break
            with self.model_thread.background():
                texts = [c.text for c in chunks[i : i + self.batch_size]]
                vectors.append(self.reranker.embedder.embed_documents(texts))
        return np.concatenate(vectors)

    def _missing(self, kb: KnowledgeBase) -> list[Chunk]:
        """Up to ``pass_limit`` READY chunks without a vector, read in one pass that ends before any embedding."""
        missing: list[Chunk] = []
        batches = self.store.iter_chunks(kb)
        try:
            for batch in batches:
                have = self.store.rerank_vector_ids(kb, self.reranker.space, [c.id for c in batch])
                missing += [c for c in batch if c.id not in have]
                if len(missing) >= self.pass_limit:
                    break
        finally:
            batches.close()  # type: ignore[attr-defined]  # a generator: releases its cursor
        return missing

    def _wait_idle(self) -> bool:
        """Until the model thread has had no foreground call for ``idle_s``; False once the warmer is stopping."""
        while not self._stop.is_set():
            idle = self.model_thread.idle_for()
            if idle >= self.idle_s:
                return True
            self._stop.wait(self.idle_s - idle)
        return False
