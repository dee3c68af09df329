"""The retriever: query embedding → document gate (stage 1) → chunks inside the gate, with a global fallback
(stage 2) → dense + lexical fusion → rerank. Every stage can be switched off and is timed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from kb_service.core.config import Settings
from kb_service.core.errors import InvalidInput
from kb_service.core.limits import MAX_CANDIDATES, MAX_TOP_K
from kb_service.core.records import Chunk, KnowledgeBase, ScoredChunk, ScoredDocument, text_hash
from kb_service.embeddings.base import Embedder
from kb_service.retrieval.fusion import rrf
from kb_service.retrieval.lexical import LexicalIndex, LexicalIndexes
from kb_service.retrieval.rerank import Reranker, VectorReranker
from kb_service.stores.base import ChunkIdSearch, RerankVectorStore, VectorStore
from kb_service.stores.filters import Filter, FilterInput

Mode = Literal["dense", "lexical", "hybrid"]
MAX_QUERY_CHARS = 4_000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """How one search runs. Defaults come from Settings (``SearchOptions.from_settings``)."""

    top_k: int = 10
    mode: Mode = "hybrid"
    gate: bool = True  # stage 1: pick documents by their summaries first
    gate_docs: int = 20  # N documents kept by the gate
    fallback: bool = True  # merge a global chunk search so a wrong gate cannot hide the answer
    candidates: int = 50  # chunks fetched per retriever (dense, lexical) before fusion
    rerank: bool = True
    rerank_candidates: int = 30  # M fused candidates re-scored by the reranker
    rerank_fusion: bool = True  # add the reranker's RRF term to the first-stage score instead of replacing it
    rerank_weight: float = 2.0  # weight of that term (one first-stage signal weighs 1)
    rrf_k: int = 20  # measured on SciFact dev, two-stage nDCG@10: k=60 0.714, k=20 0.724, k=10 0.726
    filters: Filter | FilterInput | None = None  # the JSON form is parsed by ``validate``
    trace: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> SearchOptions:
        """The configured defaults; ``overrides`` that are None keep the default."""
        base = cls(
            top_k=settings.search_top_k,
            mode=settings.search_mode,
            gate=settings.gate,
            gate_docs=settings.gate_docs,
            fallback=settings.gate_fallback,
            candidates=settings.search_candidates,
            rerank=settings.rerank_backend != "none",  # without a loaded reranker this is a no-op
            rerank_candidates=settings.rerank_candidates,
            rerank_fusion=settings.rerank_fusion,
            rerank_weight=settings.rerank_weight,
            rrf_k=settings.rrf_k,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    def validate(self) -> SearchOptions:
        for name in ("top_k", "gate_docs", "candidates", "rerank_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= MAX_CANDIDATES:
                raise InvalidInput(f"{name} must be an integer between 1 and {MAX_CANDIDATES}, got {value!r}")
        if not isinstance(self.rerank_weight, int | float) or not 0 < self.rerank_weight <= 100:
            raise InvalidInput(f"rerank_weight must be a number in (0, 100], got {self.rerank_weight!r}")
        if self.top_k > MAX_TOP_K:
            raise InvalidInput(f"top_k must be at most {MAX_TOP_K}, got {self.top_k}")
        if self.mode not in ("dense", "lexical", "hybrid"):
            raise InvalidInput(f"mode must be 'dense', 'lexical' or 'hybrid', got {self.mode!r}")
        return replace(self, filters=Filter.parse(self.filters))

    @property
    def where(self) -> Filter | None:
        """The validated filter (``validate`` parses the JSON form)."""
        return Filter.parse(self.filters)


@dataclass
class SearchTrace:
    gated: list[ScoredDocument] = field(default_factory=list)  # filled in a trace (SearchOptions.trace)
    candidates: list[ScoredChunk] = field(default_factory=list)  # fused, before rerank
    reranked: list[ScoredChunk] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchResult:
    query: str
    hits: list[ScoredChunk]
    trace: SearchTrace


class Retriever:
    """Searches one store; models (embedder per KB, reranker) are loaded by the caller and passed in."""

    def __init__(
        self,
        store: VectorStore,
        lexical: LexicalIndexes,
        reranker: Reranker | None = None,
        *,
        keep_rerank_vectors: bool = True,
    ) -> None:
        """``keep_rerank_vectors``: an embedding reranker's passage vectors computed during a search are stored
        beside their chunks (in the background), for every later search and process."""
        self.store = store
        # the store's optional capabilities (kb_service.stores.base); without them the search reads full rows and
        # an embedding reranker embeds its passages
        self._id_search = store if isinstance(store, ChunkIdSearch) else None
        self._rerank_vectors = store if isinstance(store, RerankVectorStore) else None
        self.lexical = lexical
        self.reranker = reranker
        self.keep_rerank_vectors = keep_rerank_vectors
        # The query embedding (waiting on the model thread) and the global dense search run here, beside the
        # lexical side and the gate on the caller's thread.
        self._background = ThreadPoolExecutor(max_workers=32, thread_name_prefix="search")

    def search(self, kb: KnowledgeBase, embedder: Embedder, query: str, options: SearchOptions) -> SearchResult:
        """Stage timings overlap: the query is embedded while BM25 scores chunks and documents, and the global dense
        search runs beside the gate, so ``total`` (wall time) is less than the sum of the stages."""
        start = time.perf_counter()
        query = validate_query(query)
        options = options.validate()
        where = options.where
        trace = SearchTrace()
        timer = _Timer(trace.timings_ms)
        use_dense = options.mode in ("dense", "hybrid")
        use_lexical = options.mode in ("lexical", "hybrid")
        depth = max(options.candidates, options.top_k, options.rerank_candidates)
        gate_depth = max(depth, options.gate_docs)  # both of the gate's document rankings

        embedding = self._background.submit(self._embed, embedder, query, timer) if use_dense else None
        # The reranker's work on the query alone (an embedding reranker: its query vector, on the model thread) runs
        # while the stores are searched, after the first-stage query vector, which the searches wait for.
        rerank_query = None
        if options.rerank and self.reranker is not None:
            rerank_query = self._background.submit(self._prepare_rerank_query, self.reranker, query, embedding)
        lexical_index = None
        lexical_global: list[ScoredChunk] = []
        lexical_docs: list[str] = []
        if use_lexical:
            with timer("lexical_index"):
                lexical_index = self.lexical.get(kb)
            with timer("lexical"):
                lexical_global = lexical_index.search(query, top_k=depth, filters=where)
            if options.gate:
                with timer("gate"):
                    lexical_docs = [d for d, _ in lexical_index.search_documents(query, top_k=gate_depth)]
        qv = embedding.result() if embedding is not None else None
        # The global dense search does not depend on the gate: it runs beside it (a second store connection).
        global_dense = None
        if qv is not None and (not options.gate or options.fallback):
            global_dense = self._background.submit(
                self._search_chunks, kb, qv, lexical_index, top_k=depth, filters=where
            )

        gate_scores: dict[str, float] = {}
        gated_ids: list[str] = []
        if options.gate:
            with timer("gate"):
                gated_ids, gate_scores, trace.gated = self._gate(
                    kb, qv, lexical_docs if use_lexical else None, gate_depth, options
                )

        dense: list[ScoredChunk] = []
        lexical: list[ScoredChunk] = []
        global_search = not options.gate or options.fallback or not gated_ids
        if use_dense and qv is not None:
            with timer("dense"):
                lists = []
                if gated_ids:
                    lists.append(
                        self._search_chunks(kb, qv, lexical_index, top_k=depth, doc_ids=gated_ids, filters=where)
                    )
                if global_dense is not None:
                    lists.append(global_dense.result())
                elif global_search:  # no fallback asked for, but the gate found nothing
                    lists.append(self._search_chunks(kb, qv, lexical_index, top_k=depth, filters=where))
                dense = _merge_by_score(lists)
        if use_lexical and lexical_index is not None:
            with timer("lexical"):
                lists = [lexical_global] if global_search else []
                if gated_ids:
                    lists.append(lexical_index.search(query, top_k=depth, doc_ids=gated_ids, filters=where))
                lexical = _merge_by_score(lists)

        with timer("fusion"):
            candidates = _fuse(dense, lexical, gate_scores, options)
        if options.trace:
            trace.candidates = candidates[: max(depth, options.rerank_candidates)]

        hits = candidates
        if options.rerank and self.reranker is not None and candidates:
            with timer("rerank"):
                hits = self._rerank(kb, query, candidates, options, rerank_query)
            if options.trace:
                trace.reranked = hits[: options.rerank_candidates]
        trace.timings_ms["total"] = (time.perf_counter() - start) * 1000
        return SearchResult(query=query, hits=hits[: options.top_k], trace=trace)

    def close(self) -> None:
        """Wait for background work (rerank vectors being stored) to finish."""
        self._background.shutdown(wait=True)

    def _search_chunks(
        self,
        kb: KnowledgeBase,
        qv: np.ndarray,
        index: LexicalIndex | None,
        *,
        top_k: int,
        doc_ids: list[str] | None = None,
        filters: Filter | None = None,
    ) -> list[ScoredChunk]:
        """One dense chunk search. With the lexical index at hand (it holds every READY chunk) the store sends ids
        and scores only, and the chunks come from the index; the store reads those the index lacks (published after
        it was taken). A hit whose chunk has gone meanwhile is left out."""
        if index is None or self._id_search is None:
            return self.store.search_chunks(kb, qv, top_k=top_k, doc_ids=doc_ids, filters=filters)[0]
        ranked = self._id_search.search_chunk_ids(kb, qv, top_k=top_k, doc_ids=doc_ids, filters=filters)[0]
        chunks = {cid: c for cid, _ in ranked if (c := index.by_id.get(cid)) is not None}
        if len(chunks) < len(ranked):
            chunks.update(self.store.get_chunks(kb, [cid for cid, _ in ranked if cid not in chunks]))
        return [
            ScoredChunk(c, score, source=c.metadata.get("source", ""))
            for cid, score in ranked
            if (c := chunks.get(cid)) is not None
        ]

    @staticmethod
    def _prepare_rerank_query(reranker: Reranker, query: str, after: Future[np.ndarray] | None) -> np.ndarray | None:
        if after is not None:
            wait([after])
        return reranker.prepare_query(query)

    @staticmethod
    def _embed(embedder: Embedder, query: str, timer: _Timer) -> np.ndarray:
        with timer("embed"):
            return embedder.embed_queries([query])

    def _gate(
        self,
        kb: KnowledgeBase,
        qv: np.ndarray | None,
        lexical_docs: list[str] | None,
        depth: int,
        options: SearchOptions,
    ) -> tuple[list[str], dict[str, float], list[ScoredDocument]]:
        """Stage 1: documents ranked by summary similarity (dense) and by BM25 over their whole text (given), fused.
        Returns the ids of the top N documents, the fused score of every document either ranking reached, and (in a
        trace only: the search itself needs the ids) the top N documents themselves."""
        rankings: list[list[str]] = []
        if qv is not None:
            rankings.append([d for d, _ in self.store.search_documents(kb, qv, top_k=depth)[0]])
        if lexical_docs is not None:
            rankings.append(lexical_docs)
        fused = rrf(rankings, k=options.rrf_k)
        order = sorted(fused, key=lambda d: -fused[d])[: options.gate_docs]
        if not options.trace:
            return order, fused, []
        docs = self.store.get_documents(kb, order)
        return order, fused, [ScoredDocument(docs[d], fused[d]) for d in order if d in docs]

    def _rerank(
        self,
        kb: KnowledgeBase,
        query: str,
        candidates: list[ScoredChunk],
        options: SearchOptions,
        query_vector: Future[np.ndarray | None] | None = None,
    ) -> list[ScoredChunk]:
        assert self.reranker is not None
        head, tail = candidates[: options.rerank_candidates], candidates[options.rerank_candidates :]
        known: dict[str, np.ndarray] = {}
        space = self.reranker.space if self._rerank_vectors is not None else None
        if space is not None and self._rerank_vectors is not None:  # stored passage vectors need no forward pass
            stored = self._rerank_vectors.rerank_vectors(kb, space, [c.chunk.id for c in head])
            known = {text_hash(c.chunk.text): stored[c.chunk.id] for c in head if c.chunk.id in stored}
        texts = [[c.chunk.text for c in head]]
        prepared = [query_vector.result()] if query_vector is not None else None
        scores = self.reranker.score([query], texts, known=known, prepared=prepared)[0]
        if space is not None and self.keep_rerank_vectors and len(known) < len(head):
            unstored = [c.chunk for c in head if text_hash(c.chunk.text) not in known]
            self._background.submit(self._keep_rerank_vectors, kb, space, unstored)
        for c, s in zip(head, scores, strict=True):
            c.stages["rerank"] = float(s)
        by_rerank = sorted(head, key=lambda c: -c.stages["rerank"])
        if options.rerank_fusion:
            # The reranker is one more RRF term on top of the first-stage fused score (dense, lexical and the
            # document terms). SciFact dev, multilingual-e5-small over MiniLM+BM25: weight 2 over the top 30 beat
            # fusing the two rankings with equal weight (0.741 vs 0.734 simulated); see docs/BENCHMARKS.md.
            extra = rrf([[c.chunk.id for c in by_rerank]], k=options.rrf_k, weights=[options.rerank_weight])
            for c in head:
                c.score += extra[c.chunk.id]
            ranked = sorted(head, key=lambda c: -c.score)
        else:
            ranked = by_rerank
            for c in ranked:
                c.score = c.stages["rerank"]
        # Candidates beyond the reranked head keep their order, below every reranked one.
        floor = min((c.score for c in ranked), default=0.0)
        for i, c in enumerate(tail, start=1):
            c.score = floor - i * 1e-6
        return ranked + tail

    def _keep_rerank_vectors(self, kb: KnowledgeBase, space: str, chunks: list[Chunk]) -> None:
        """Store the passage vectors this search computed (now in the reranker's cache)."""
        if not isinstance(self.reranker, VectorReranker) or self._rerank_vectors is None:
            return
        try:
            vectors = self.reranker.passage_vectors([c.text for c in chunks])
            self._rerank_vectors.put_rerank_vectors(kb, space, chunks, vectors)
        except Exception:  # a cache that could not be stored is only a slower next rerank
            log.warning("could not store rerank vectors for knowledge base %r", kb.name, exc_info=True)


def validate_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    return query.strip()


def _merge_by_score(lists: list[list[ScoredChunk]]) -> list[ScoredChunk]:
    """Union of result lists from the same scorer (scores comparable), best score per chunk, best first."""
    best: dict[str, ScoredChunk] = {}
    for hits in lists:
        for hit in hits:
            if hit.chunk.id not in best or hit.score > best[hit.chunk.id].score:
                best[hit.chunk.id] = hit
    return sorted(best.values(), key=lambda h: -h.score)


def _fuse(
    dense: list[ScoredChunk], lexical: list[ScoredChunk], gate_scores: dict[str, float], options: SearchOptions
) -> list[ScoredChunk]:
    """Reciprocal rank fusion of the dense and lexical chunk lists, plus the document-level RRF terms of each
    chunk's document (its summary rank and its whole-document BM25 rank) from the gate."""
    chunks: dict[str, ScoredChunk] = {}
    for name, hits in (("dense", dense), ("lexical", lexical)):
        for hit in hits:
            chunk = chunks.setdefault(hit.chunk.id, ScoredChunk(hit.chunk, 0.0, hit.source, hit.title))
            chunk.stages[name] = hit.score
    rankings = [[h.chunk.id for h in hits] for hits in (dense, lexical) if hits]
    fused = rrf(rankings, k=options.rrf_k)
    for cid, chunk in chunks.items():
        doc_score = gate_scores.get(chunk.chunk.doc_id)
        if doc_score is not None:
            chunk.stages["gate"] = doc_score
            fused[cid] += doc_score
        chunk.score = fused[cid]
    return sorted(chunks.values(), key=lambda c: -c.score)


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
