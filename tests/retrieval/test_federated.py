"""The merge of several knowledge bases' rankings (retrieval/federated.py); the router and the routes are tested
through the API on real stores and models (tests/api/test_multi_kb.py)."""

from __future__ import annotations

import math

from kb_service.core.records import Chunk, ScoredChunk
from kb_service.retrieval.federated import MERGE_TEMPERATURE, _weight, merge


def hit(kb: str, cid: str, rerank: float | None = None) -> ScoredChunk:
    stages = {"rerank": rerank} if rerank is not None else {}
    return ScoredChunk(Chunk(id=cid, doc_id=cid, ord=0, text=cid, hash=cid), 0.0, stages=stages, kb=kb)


def test_the_best_knowledge_base_leads_and_a_chunk_id_in_two_knowledge_bases_stays_two_hits() -> None:
    a = [hit("a", "x"), hit("a", "y")]
    b = [hit("b", "x"), hit("b", "z")]  # the same content (the same id) in another knowledge base
    merged = merge([a, b], [1.0, _weight(0.5, 0.6)], rrf_k=20, rerank_weight=2.0)
    assert [(h.kb, h.chunk.id) for h in merged] == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "z")]
    assert [h.score for h in merged] == sorted((h.score for h in merged), reverse=True)
    even = merge([a, b], [1.0, 1.0], rrf_k=20, rerank_weight=2.0)  # no routing: interleaved
    assert [(h.kb, h.chunk.id) for h in even][:2] in ([("a", "x"), ("b", "x")], [("b", "x"), ("a", "x")])


def test_the_rerankers_scores_compare_across_knowledge_bases() -> None:
    a = [hit("a", "p", rerank=0.70), hit("a", "q", rerank=0.60)]
    b = [hit("b", "r", rerank=0.90), hit("b", "s", rerank=0.50)]
    merged = merge([a, b], [1.0, 1.0], rrf_k=20, rerank_weight=2.0)
    assert merged[0].chunk.id == "r"  # the reranker's best, though each list ranks its own first


def test_merge_weights_fall_off_with_the_router_score() -> None:
    assert _weight(0.8, 0.8) == 1.0 and _weight(0.0, 0.0) == 1.0
    assert math.isclose(_weight(0.8 - MERGE_TEMPERATURE, 0.8), 1 / math.e)
    assert _weight(None, 0.8) == 0.0 and _weight(None, None) == 1.0
