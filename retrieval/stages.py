"""The retriever's stages. Each is a component with typed inputs and outputs and no threads of its own: the planner
(``kb_service.retrieval.pipeline``) decides which stages a search runs and what runs beside what.

- ``QueryEmbedding``: the query vector (the knowledge base's embedder).
- ``LexicalSearch``: BM25 over chunks and over whole documents.
- ``DenseSearch``: vector search over chunks and over document summaries.
- ``DocumentGate``: stage 1, the documents worth searching inside, from the dense and lexical document rankings.
- ``Fusion``: one ranking of chunks from the dense and lexical lists and their documents' gate scores.
- ``Rerank``: re-scores the fused head with a stronger model.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kb_service.core.records import Chunk, KnowledgeBase, ScoredChunk, ScoredDocument, text_hash
from kb_service.embeddings.base import Embedder
from kb_service.retrieval.fusion import rrf
from kb_service.retrieval.lexical import LexicalIndex, LexicalIndexes
from kb_service.retrieval.rerank import Reranker, VectorReranker
from kb_service.stores.base import ChunkIdSearch, RerankVectorStore, VectorStore
from kb_service.stores.filters import Filter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """Where a chunk search looks: one knowledge base, optionally inside some documents, under a filter."""

    kb: KnowledgeBase
    doc_ids: Sequence[str] | None = None
    where: Filter | None = None

    def inside(self, doc_ids: Sequence[str]) -> Scope:
        return Scope(self.kb, list(doc_ids), self.where)


class QueryEmbedding:
    """Stage ``embed``: the query vector under the knowledge base's own embedder. The last ``cache_size`` vectors
    are kept: a search over several knowledge bases embeds its query to route and again to search, a multi-hop
    search looks the same names up again."""

    def __init__(self, cache_size: int = 1024) -> None:
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, embedder: Embedder, query: str) -> np.ndarray:
        key = (embedder.info.fingerprint, query)
        with self._lock:
            if (vector := self._cache.get(key)) is not None:
                self._cache.move_to_end(key)
                return vector
        vector = embedder.embed_queries([query])
        vector.flags.writeable = False  # shared by the searches that find it here
        with self._lock:
            self._cache[key] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vector


class LexicalSearch:
    """Stage ``lexical``: BM25 over one knowledge base's chunks, and over its documents' whole text (for the gate)."""

    def __init__(self, indexes: LexicalIndexes) -> None:
        self.indexes = indexes

    def index(self, kb: KnowledgeBase) -> LexicalIndex:
        """The knowledge base's index, rebuilt first when the store has moved on."""
        return self.indexes.get(kb)

    def chunks(self, index: LexicalIndex, query: str, scope: Scope, *, top_k: int) -> list[ScoredChunk]:
        return index.search(query, top_k=top_k, doc_ids=scope.doc_ids, filters=scope.where)

    def documents(self, index: LexicalIndex, query: str, *, top_k: int) -> list[str]:
        return [doc_id for doc_id, _ in index.search_documents(query, top_k=top_k)]


class DenseSearch:
    """Stage ``dense``: vector search over chunks, and over document summaries (for the gate)."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        # without the capability the search reads full rows
        self._id_search = store if isinstance(store, ChunkIdSearch) else None

    def chunks(
        self, vector: np.ndarray, scope: Scope, *, top_k: int, index: LexicalIndex | None = None
    ) -> list[ScoredChunk]:
        """With the lexical index at hand (it holds every READY chunk) the store sends ids and scores only, and the
        chunks come from the index; the store reads those the index lacks (published after it was taken). A hit
        whose chunk has gone meanwhile is left out."""
        kb, doc_ids, where = scope.kb, scope.doc_ids, scope.where
        if index is None or self._id_search is None:
            return self.store.search_chunks(kb, vector, top_k=top_k, doc_ids=doc_ids, filters=where)[0]
        ranked = self._id_search.search_chunk_ids(kb, vector, top_k=top_k, doc_ids=doc_ids, filters=where)[0]
        chunks = {cid: c for cid, _ in ranked if (c := index.chunk(cid)) is not None}
        if len(chunks) < len(ranked):
            chunks.update(self.store.get_chunks(kb, [cid for cid, _ in ranked if cid not in chunks]))
        return [
            ScoredChunk(c, score, source=c.metadata.get("source", ""))
            for cid, score in ranked
            if (c := chunks.get(cid)) is not None
        ]

    def documents(self, kb: KnowledgeBase, vector: np.ndarray, *, top_k: int) -> list[str]:
        """Documents ranked by the similarity of their summary vectors."""
        return [doc_id for doc_id, _ in self.store.search_documents(kb, vector, top_k=top_k)[0]]


@dataclass
class Gated:
    """The gate's output: the kept documents' ids, the fused score of every document either ranking reached (a
    term of its chunks' fused score), and, in a trace, the kept documents themselves."""

    ids: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    documents: list[ScoredDocument] = field(default_factory=list)


class DocumentGate:
    """Stage ``gate`` (stage 1): documents ranked by summary similarity (dense) and by BM25 over their whole text,
    fused by reciprocal rank; the top ``keep`` are searched inside."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def run(self, kb: KnowledgeBase, rankings: Sequence[list[str]], *, keep: int, rrf_k: int, trace: bool) -> Gated:
        fused = rrf(list(rankings), k=rrf_k)
        order = sorted(fused, key=lambda d: -fused[d])[:keep]
        if not trace:  # the search itself needs the ids only
            return Gated(order, fused)
        docs = self.store.get_documents(kb, order)
        return Gated(order, fused, [ScoredDocument(docs[d], fused[d]) for d in order if d in docs])


class Fusion:
    """Stage ``fusion``: reciprocal rank fusion of the dense and lexical chunk lists, plus the document-level terms
    of each chunk's document (its summary rank and its whole-document BM25 rank) from the gate."""

    def run(
        self, dense: list[ScoredChunk], lexical: list[ScoredChunk], gate_scores: dict[str, float], *, rrf_k: int
    ) -> list[ScoredChunk]:
        chunks: dict[str, ScoredChunk] = {}
        for name, hits in (("dense", dense), ("lexical", lexical)):
            for hit in hits:
                chunk = chunks.setdefault(hit.chunk.id, ScoredChunk(hit.chunk, 0.0, hit.source, hit.title))
                chunk.stages[name] = hit.score
        rankings = [[h.chunk.id for h in hits] for hits in (dense, lexical) if hits]
        fused = rrf(rankings, k=rrf_k)
        for cid, chunk in chunks.items():
            doc_score = gate_scores.get(chunk.chunk.doc_id)
            if doc_score is not None:
                chunk.stages["gate"] = doc_score
                fused[cid] += doc_score
            chunk.score = fused[cid]
        return sorted(chunks.values(), key=lambda c: -c.score)


@dataclass(frozen=True)
class RerankPolicy:
    candidates: int  # M fused candidates re-scored
    fusion: bool  # the reranker's RRF term added to the first-stage score (else it replaces it)
    weight: float  # that term's weight
    rrf_k: int


@dataclass
class Reranked:
    hits: list[ScoredChunk]
    unstored: list[Chunk]  # reranked chunks whose passage vectors could be stored (``Rerank.keep``)


class Rerank:
    """Stage ``rerank``: the fused head re-scored by the reranker. Passage vectors the store keeps for the reranker's
    ``space`` need no forward pass; those computed here can be kept (``keep``) for every later search."""

    def __init__(self, reranker: Reranker, store: VectorStore) -> None:
        self.reranker = reranker
        self._vectors = store if isinstance(store, RerankVectorStore) else None
        self.space = reranker.space if self._vectors is not None else None  # None: nothing stored or to store

    def prepare(self, query: str) -> np.ndarray | None:
        """The reranker's work on the query alone, which can run before the candidates are known."""
        return self.reranker.prepare_query(query)

    def run(
        self,
        kb: KnowledgeBase,
        query: str,
        candidates: list[ScoredChunk],
        policy: RerankPolicy,
        prepared: np.ndarray | None = None,
    ) -> Reranked:
        head, tail = candidates[: policy.candidates], candidates[policy.candidates :]
        known: dict[str, np.ndarray] = {}
        if self.space is not None and self._vectors is not None:
            stored = self._vectors.rerank_vectors(kb, self.space, [c.chunk.id for c in head])
            known = {text_hash(c.chunk.text): stored[c.chunk.id] for c in head if c.chunk.id in stored}
        texts = [[c.chunk.text for c in head]]
        scores = self.reranker.score([query], texts, known=known, prepared=[prepared] if prepared is not None else None)
        for c, s in zip(head, scores[0], strict=True):
            c.stages["rerank"] = float(s)
        by_rerank = sorted(head, key=lambda c: -c.stages["rerank"])
        if policy.fusion:
            # The reranker is one more RRF term on top of the first-stage fused score (dense, lexical and the
            # document terms); the weight's measurement is in docs/BENCHMARKS.md.
            extra = rrf([[c.chunk.id for c in by_rerank]], k=policy.rrf_k, weights=[policy.weight])
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
        unstored = [] if self.space is None else [c.chunk for c in head if text_hash(c.chunk.text) not in known]
        return Reranked(ranked + tail, unstored)

    def keep(self, kb: KnowledgeBase, chunks: list[Chunk]) -> None:
        """Store the passage vectors a rerank computed (now in the reranker's cache)."""
        if not isinstance(self.reranker, VectorReranker) or self._vectors is None or self.space is None:
            return
        try:
            vectors = self.reranker.passage_vectors([c.text for c in chunks])
            self._vectors.put_rerank_vectors(kb, self.space, chunks, vectors)
        except Exception:  # a cache that could not be stored is only a slower next rerank
            log.warning("could not store rerank vectors for knowledge base %r", kb.name, exc_info=True)


class Expand:
    """Stage ``expand``: each hit widened to up to ``width`` neighbouring chunks on either side in its document
    (``ScoredChunk.window``), not past its section (a heading, a table) or a missing chunk; one store read."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def run(self, kb: KnowledgeBase, hits: Sequence[ScoredChunk], *, width: int) -> None:
        ids = [
            f"{h.chunk.doc_id}:{o}"
            for h in hits
            for o in range(max(0, h.chunk.ord - width), h.chunk.ord + width + 1)
            if o != h.chunk.ord
        ]
        found = self.store.get_chunks(kb, list(dict.fromkeys(ids))) if ids else {}
        for h in hits:
            c = h.chunk
            before: list[Chunk] = []
            for o in range(c.ord - 1, max(-1, c.ord - width - 1), -1):
                n = found.get(f"{c.doc_id}:{o}")
                if n is None or n.section != c.section:
                    break
                before.insert(0, n)
            after: list[Chunk] = []
            for o in range(c.ord + 1, c.ord + width + 1):
                n = found.get(f"{c.doc_id}:{o}")
                if n is None or n.section != c.section:
                    break
                after.append(n)
            h.window = (*before, c, *after) if before or after else ()


def merge_by_score(lists: list[list[ScoredChunk]]) -> list[ScoredChunk]:
    """Union of result lists from the same scorer (scores comparable), best score per chunk, best first."""
    best: dict[str, ScoredChunk] = {}
    for hits in lists:
        for hit in hits:
            if hit.chunk.id not in best or hit.score > best[hit.chunk.id].score:
                best[hit.chunk.id] = hit
    return sorted(best.values(), key=lambda h: -h.score)
