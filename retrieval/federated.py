"""Search over several knowledge bases at once: a router ranks them, the best are searched, one merged ranking.

- **Router.** Each knowledge base's top few documents for the query (its own stage 1: summary vectors under its own
  embedding model, BM25 over whole documents) have their summaries scored against the query by *one* model for all
  of them (the reranker, else the service's default embedding model), so scores compare across knowledge bases with
  different embedding models. A knowledge base's router score is its best summary's. The best one is searched, and
  with it up to ``route_kbs`` - 1 more whose score is within ``route_margin`` of the best.
- **Search.** Each chosen knowledge base runs the full pipeline (gate, hybrid, rerank) with its own embedder, in
  parallel.
- **Merge.** Reciprocal rank fusion of the knowledge bases' rankings, plus (when the reranker scored them, one model
  for all) the reranker's ranking across all of them at the reranker's weight, as inside one search.

Every hit names its knowledge base; the trace has the router's scores (``routes``) besides each search's own."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kb_service.core.errors import InvalidInput
from kb_service.core.records import Document, KnowledgeBase, ScoredChunk
from kb_service.embeddings.base import Embedder
from kb_service.retrieval.fusion import rrf
from kb_service.retrieval.multihop import iterative_search
from kb_service.retrieval.options import Route, SearchOptions, SearchResult, SearchTrace, validate_query
from kb_service.retrieval.pipeline import Retriever, SearchFn
from kb_service.retrieval.refine import follow_up
from kb_service.retrieval.rerank import EmbeddingReranker

PROBE_DOCS = 3  # documents per knowledge base whose summaries the router scores
MERGE_TEMPERATURE = 0.05  # a knowledge base's merge weight falls off by e per this much router score below the best
SUMMARY_CHARS = 1_000  # of a summary the router reads (the scorer truncates to its own limit anyway)


@dataclass(frozen=True)
class Target:
    """One knowledge base to search, with its own embedder."""

    kb: KnowledgeBase
    embedder: Embedder


class Router:
    """Ranks knowledge bases for a query by their best-fitting document summaries, scored by one embedding model
    (``scorer``) for all: a knowledge base built with that model is scored by its stored summary vectors (its
    summary search's best cosine, no model call); another has its top few documents' summaries (found by its own
    stage 1) embedded by the scorer (cached by text)."""

    def __init__(self, retriever: Retriever, scorer: Callable[[], EmbeddingReranker], pool: ThreadPoolExecutor) -> None:
        """``scorer``: the model that scores (query, summary) pairs for every knowledge base, built on first use."""
        self.retriever = retriever
        self._scorer = scorer
        self._pool = pool

    def scorer_name(self) -> str:
        return self._scorer().name

    def rank(self, targets: Sequence[Target], query: str, options: SearchOptions) -> list[Route]:
        """Every target's route, best first, ``searched`` set on those a search should look in."""
        scorer = self._scorer()
        routes = list(self._pool.map(lambda t: self._route(t, scorer, query, options), targets))
        routes.sort(key=lambda r: -r.score if r.score is not None else float("inf"))
        top = routes[0].score
        for i, route in enumerate(routes):
            near = top is None or (route.score is not None and route.score >= top - options.route_margin)
            route.searched = i == 0 or (i < options.route_kbs and near)
        return routes

    def _route(self, target: Target, scorer: EmbeddingReranker, query: str, options: SearchOptions) -> Route:
        kb = target.kb
        if target.embedder.info.fingerprint == scorer.embedder.info.fingerprint:
            vector = self.retriever.stages.embed.run(target.embedder, query)
            ranked = self.retriever.store.search_documents(kb, vector, top_k=PROBE_DOCS)[0]
            return Route(kb.name, ranked[0][1] if ranked else None, False, [d for d, _ in ranked])
        docs = self.retriever.rank_documents(kb, target.embedder, query, options, top_k=PROBE_DOCS)
        if not docs:
            return Route(kb.name, None, False)
        scores = scorer.score([query], [[_summary_text(d) for d in docs]])[0].tolist()
        ranked_docs = sorted(zip(scores, docs, strict=True), key=lambda pair: -pair[0])
        return Route(kb.name, ranked_docs[0][0], False, [d.id for _, d in ranked_docs])


class Federation:
    """Searches several knowledge bases of one store as one (``search``); thread-safe."""

    def __init__(self, retriever: Retriever, scorer: Callable[[], EmbeddingReranker]) -> None:
        self.retriever = retriever
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="federated")
        self.router = Router(retriever, scorer, self._pool)

    def on(self, targets: Sequence[Target]) -> SearchFn:
        """This search bound to ``targets`` (what an answer retrieves with)."""
        return lambda query, options: self.search(targets, query, options)

    def search(self, targets: Sequence[Target], query: str, options: SearchOptions) -> SearchResult:
        start = time.perf_counter()
        query = validate_query(query)
        options = options.validate()
        targets = _distinct(targets)
        if options.hops > 1:  # each hop's lookups are routed again: a bridge may lead to another knowledge base
            follow = follow_up(self.retriever.writer) if options.hop_strategy == "llm" else None
            return iterative_search(lambda q, o: self.search(targets, q, o), query, options, follow=follow)
        timings: dict[str, float] = {}
        if options.route and len(targets) > 1:
            routes = self.router.rank(targets, query, options)
            timings["route"] = (time.perf_counter() - start) * 1000
        else:
            routes = [Route(t.kb.name, 0.0, True) for t in targets]
        by_name = {t.kb.name: t for t in targets}
        chosen = [by_name[r.knowledge_base] for r in routes if r.searched]
        began = time.perf_counter()
        results = list(
            self._pool.map(lambda t: self.retriever.search(t.kb, t.embedder, query, options), chosen)
            if len(chosen) > 1
            else [self.retriever.search(chosen[0].kb, chosen[0].embedder, query, options)]
        )
        timings["search"] = (time.perf_counter() - began) * 1000
        scores = {r.knowledge_base: r.score for r in routes}
        weights = [_weight(scores[t.kb.name], routes[0].score) for t in chosen]
        hits = merge([r.hits for r in results], weights, rrf_k=options.rrf_k, rerank_weight=options.rerank_weight)
        trace = SearchTrace(routes=routes, timings_ms=timings)
        for target, result in zip(chosen, results, strict=True):
            trace.gated += result.trace.gated
            trace.candidates += result.trace.candidates
            trace.reranked += result.trace.reranked
            for stage, ms in result.trace.timings_ms.items():
                trace.timings_ms[f"{target.kb.name}:{stage}"] = ms
        timings["total"] = (time.perf_counter() - start) * 1000
        return SearchResult(query=query, hits=hits[: options.top_k], trace=trace)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def merge(
    rankings: Sequence[list[ScoredChunk]], weights: Sequence[float], *, rrf_k: int, rerank_weight: float
) -> list[ScoredChunk]:
    """One ranking of the hits of several knowledge bases (each list best first, weighted by how well its knowledge
    base fits the query). A hit's score becomes its fused score; its other scores stay in ``stages``."""
    if len(rankings) == 1:
        return list(rankings[0])
    hits = {(h.kb, h.chunk.id): h for ranking in rankings for h in ranking}
    lists = [[(h.kb, h.chunk.id) for h in ranking] for ranking in rankings]
    weights = list(weights)
    reranked = [h for h in hits.values() if "rerank" in h.stages]
    if reranked:  # one reranker scored them all: its scores compare across knowledge bases
        lists.append([(h.kb, h.chunk.id) for h in sorted(reranked, key=lambda h: -h.stages["rerank"])])
        weights.append(rerank_weight)
    fused = rrf(lists, k=rrf_k, weights=weights)
    for key, hit in hits.items():
        hit.score = fused[key]
    return sorted(hits.values(), key=lambda h: -h.score)


def _weight(score: float | None, best: float | None) -> float:
    """A knowledge base's weight in the merge: 1 for the router's best, falling off by e for each
    ``MERGE_TEMPERATURE`` its score is below the best (1 for all when there was no routing)."""
    if score is None or best is None:
        return 1.0 if score == best else 0.0
    return math.exp((score - best) / MERGE_TEMPERATURE)


def _distinct(targets: Sequence[Target]) -> list[Target]:
    if not targets:
        raise InvalidInput("knowledge_bases must name at least one knowledge base")
    return list({t.kb.name: t for t in targets}.values())


def _summary_text(doc: Document) -> str:
    text = doc.summary or doc.title or doc.source
    if doc.title and doc.summary and not doc.summary.startswith(doc.title):
        text = f"{doc.title}\n{doc.summary}"
    return text[:SUMMARY_CHARS]
