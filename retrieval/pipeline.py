"""The retriever: a small planner over the stages of ``kb_service.retrieval.stages``. Query embedding → document
gate (stage 1) → chunks inside the gate, with a global fallback (stage 2) → dense + lexical fusion → rerank. Every
stage can be switched off (``SearchOptions``) and is timed; the planner alone owns the concurrency."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from kb_service.core.records import Document, KnowledgeBase, ScoredChunk
from kb_service.embeddings.base import Embedder
from kb_service.retrieval.lexical import LexicalIndex, LexicalIndexes
from kb_service.retrieval.multihop import iterative_search
from kb_service.retrieval.options import (
    MAX_QUERY_CHARS,
    Mode,
    SearchOptions,
    SearchResult,
    SearchTrace,
    validate_query,
)
from kb_service.retrieval.refine import WriterSource, follow_up, refined_search
from kb_service.retrieval.rerank import Reranker
from kb_service.retrieval.stages import (
    DenseSearch,
    DocumentGate,
    Expand,
    Fusion,
    Gated,
    LexicalSearch,
    QueryEmbedding,
    Rerank,
    RerankPolicy,
    Scope,
    merge_by_score,
)
from kb_service.stores.base import VectorStore

log = logging.getLogger(__name__)

__all__ = [
    "MAX_QUERY_CHARS",
    "Mode",
    "Plan",
    "Retriever",
    "SearchFn",
    "SearchOptions",
    "SearchResult",
    "SearchTrace",
    "validate_query",
]
T = TypeVar("T")
SearchFn = Callable[[str, SearchOptions], SearchResult]  # a search bound to what it searches (one or several KBs)


@dataclass(frozen=True)
class Plan:
    """Which stages one search runs and how deep each looks: the options, less what the retriever cannot do."""

    dense: bool
    lexical: bool
    gate: bool
    global_chunks: bool  # chunks searched outside the gate too (fallback, or no gate); also when the gate is empty
    rerank: bool
    depth: int  # chunks per chunk search
    gate_depth: int  # documents per document ranking

    @classmethod
    def of(cls, options: SearchOptions, *, can_rerank: bool) -> Plan:
        depth = max(options.candidates, options.top_k, options.rerank_candidates)
        return cls(
            dense=options.mode in ("dense", "hybrid"),
            lexical=options.mode in ("lexical", "hybrid"),
            gate=options.gate,
            global_chunks=not options.gate or options.fallback,
            rerank=options.rerank and can_rerank,
            depth=depth,
            gate_depth=max(depth, options.gate_docs),
        )


class Retriever:
    """Searches one store; models (embedder per KB, reranker) are loaded by the caller and passed in."""

    def __init__(
        self,
        store: VectorStore,
        lexical: LexicalIndexes,
        reranker: Reranker | None = None,
        *,
        keep_rerank_vectors: bool = True,
        writer: WriterSource | None = None,
    ) -> None:
        """``keep_rerank_vectors``: an embedding reranker's passage vectors computed during a search are stored
        beside their chunks (in the background), for every later search and process. ``writer``: the LLM that
        writes refined queries (loaded on first use), if any."""
        self.store = store
        self.writer = writer
        self.lexical = lexical
        self.reranker = reranker
        self.keep_rerank_vectors = keep_rerank_vectors
        self.stages = _Stages(
            embed=QueryEmbedding(),
            lexical=LexicalSearch(lexical),
            dense=DenseSearch(store),
            gate=DocumentGate(store),
            fusion=Fusion(),
            rerank=Rerank(reranker, store) if reranker is not None else None,
            expand=Expand(store),
        )
        # The query embedding (waiting on the model thread), the reranker's query work, the global dense search and
        # the storing of rerank vectors run here, beside the lexical side and the gate on the caller's thread.
        self._background = ThreadPoolExecutor(max_workers=32, thread_name_prefix="search")

    def search(self, kb: KnowledgeBase, embedder: Embedder, query: str, options: SearchOptions) -> SearchResult:
        """Stage timings overlap: the query is embedded while BM25 scores chunks and documents, and the global dense
        search runs beside the gate, so ``total`` (wall time) is less than the sum of the stages.

        One search sees one revision of every document: the lexical index is a snapshot and the dense side reads
        the store a moment later, so a replace or delete committed in between could pair the old version (lexical)
        with the new one (dense). The hits' documents are checked to be ready once the search is done; if one is
        not, the store moved under the search, which runs once more, and hits still stale after that are dropped."""
        start = time.perf_counter()
        query = validate_query(query)
        options = options.validate()
        if options.hops > 1:
            follow = follow_up(self.writer) if options.hop_strategy == "llm" else None
            return iterative_search(lambda q, o: self.search(kb, embedder, q, o), query, options, follow=follow)
        if options.refine:
            idf = self.stages.lexical.index(kb).idf
            search = self.on(kb, embedder)
            return refined_search(search, query, options, idf=idf, writer=self.writer)
        plan = Plan.of(options, can_rerank=self.stages.rerank is not None)
        result = self._search(kb, embedder, query, options, plan)
        if plan.lexical and plan.dense:
            verify = time.perf_counter()
            stale = self._stale(kb, result.hits)
            if stale:
                log.info("%s changed during a search (%d stale documents): searching again", kb.name, len(stale))
                result = self._search(kb, embedder, query, options, plan)
                if stale := self._stale(kb, result.hits):
                    result.hits = [h for h in result.hits if h.chunk.doc_id not in stale]
            result.trace.timings_ms["verify"] = (time.perf_counter() - verify) * 1000
        if options.expand and result.hits:
            began = time.perf_counter()
            self.stages.expand.run(kb, result.hits, width=options.expand)
            result.trace.timings_ms["expand"] = (time.perf_counter() - began) * 1000
        result.trace.timings_ms["total"] = (time.perf_counter() - start) * 1000
        for hit in (*result.hits, *result.trace.candidates, *result.trace.reranked):
            hit.kb = kb.name
        return result

    def on(self, kb: KnowledgeBase, embedder: Embedder) -> SearchFn:
        """This retriever's search bound to one knowledge base (what an answer retrieves with)."""
        return lambda query, options: self.search(kb, embedder, query, options)

    def rank_documents(
        self, kb: KnowledgeBase, embedder: Embedder, query: str, options: SearchOptions, *, top_k: int
    ) -> list[Document]:
        """Stage 1 alone: the ``top_k`` documents of ``kb`` whose summaries (dense) and whole text (lexical, in
        hybrid and lexical modes) fit the query best, best first."""
        stages = self.stages
        rankings = []
        if options.mode in ("dense", "hybrid"):
            rankings.append(stages.dense.documents(kb, stages.embed.run(embedder, query), top_k=top_k))
        if options.mode in ("lexical", "hybrid"):
            rankings.append(stages.lexical.documents(stages.lexical.index(kb), query, top_k=top_k))
        gated = stages.gate.run(kb, rankings, keep=top_k, rrf_k=options.rrf_k, trace=True)
        return [d.document for d in gated.documents]

    def _stale(self, kb: KnowledgeBase, hits: list[ScoredChunk]) -> set[str]:
        """Documents of ``hits`` that are not ready (any more)."""
        ids = list(dict.fromkeys(h.chunk.doc_id for h in hits))
        return set(ids) - self.store.ready_doc_ids(kb, ids) if ids else set()

    def _search(
        self, kb: KnowledgeBase, embedder: Embedder, query: str, options: SearchOptions, plan: Plan
    ) -> SearchResult:
        stages = self.stages
        scope = Scope(kb, where=options.where)
        trace = SearchTrace()
        timer = _Timer(trace.timings_ms)

        embedding = None
        if plan.dense:
            embedding = self._background.submit(timer.timed("embed", stages.embed.run), embedder, query)
        # The reranker's work on the query alone (an embedding reranker: its query vector, on the model thread) runs
        # while the stores are searched, after the first-stage query vector, which the searches wait for.
        rerank_query = None
        if plan.rerank and stages.rerank is not None:
            rerank_query = self._background.submit(_after, embedding, stages.rerank.prepare, query)
        index: LexicalIndex | None = None
        lexical_global: list[ScoredChunk] = []
        lexical_docs: list[str] = []
        if plan.lexical:
            with timer("lexical_index"):
                index = stages.lexical.index(kb)
            with timer("lexical"):
                lexical_global = stages.lexical.chunks(index, query, scope, top_k=plan.depth)
            if plan.gate:
                with timer("gate"):
                    lexical_docs = stages.lexical.documents(index, query, top_k=plan.gate_depth)
        qv = embedding.result() if embedding is not None else None
        # The global dense search does not depend on the gate: it runs beside it (a second store connection).
        global_dense = None
        if qv is not None and plan.global_chunks:
            global_dense = self._background.submit(stages.dense.chunks, qv, scope, top_k=plan.depth, index=index)

        gated = Gated()
        if plan.gate:
            with timer("gate"):
                rankings = []
                if qv is not None:
                    rankings.append(stages.dense.documents(kb, qv, top_k=plan.gate_depth))
                if plan.lexical:
                    rankings.append(lexical_docs)
                gated = stages.gate.run(kb, rankings, keep=options.gate_docs, rrf_k=options.rrf_k, trace=options.trace)
            trace.gated = gated.documents
        inside = scope.inside(gated.ids) if gated.ids else None
        global_chunks = plan.global_chunks or inside is None

        dense: list[ScoredChunk] = []
        if qv is not None:
            with timer("dense"):
                lists = []
                if inside is not None:
                    lists.append(stages.dense.chunks(qv, inside, top_k=plan.depth, index=index))
                if global_dense is not None:
                    lists.append(global_dense.result())
                elif global_chunks:  # no fallback asked for, but the gate found nothing
                    lists.append(stages.dense.chunks(qv, scope, top_k=plan.depth, index=index))
                dense = merge_by_score(lists)
        lexical: list[ScoredChunk] = []
        if index is not None:
            with timer("lexical"):
                lists = [lexical_global] if global_chunks else []
                if inside is not None:
                    lists.append(stages.lexical.chunks(index, query, inside, top_k=plan.depth))
                lexical = merge_by_score(lists)

        with timer("fusion"):
            candidates = stages.fusion.run(dense, lexical, gated.scores, rrf_k=options.rrf_k)
        if options.trace:
            trace.candidates = candidates[: max(plan.depth, options.rerank_candidates)]

        hits = candidates
        if plan.rerank and stages.rerank is not None and candidates:
            policy = RerankPolicy(
                options.rerank_candidates, options.rerank_fusion, options.rerank_weight, options.rrf_k
            )
            with timer("rerank"):
                prepared = rerank_query.result() if rerank_query is not None else None
                reranked = stages.rerank.run(kb, query, candidates, policy, prepared)
            hits = reranked.hits
            if self.keep_rerank_vectors and reranked.unstored:
                self._background.submit(stages.rerank.keep, kb, reranked.unstored)
            if options.trace:
                trace.reranked = hits[: options.rerank_candidates]
        return SearchResult(query=query, hits=hits[: options.top_k], trace=trace)

    def close(self) -> None:
        """Wait for background work (rerank vectors being stored) to finish."""
        self._background.shutdown(wait=True)


@dataclass(frozen=True)
class _Stages:
    embed: QueryEmbedding
    lexical: LexicalSearch
    dense: DenseSearch
    gate: DocumentGate
    fusion: Fusion
    rerank: Rerank | None
    expand: Expand


def _after(first: Future[np.ndarray] | None, fn: Callable[[str], T], query: str) -> T:
    if first is not None:
        wait([first])
    return fn(query)


class _Timer:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000

    def timed(self, stage: str, fn: Callable[[Embedder, str], T]) -> Callable[[Embedder, str], T]:
        def run(embedder: Embedder, query: str) -> T:
            with self(stage):
                return fn(embedder, query)

        return run
