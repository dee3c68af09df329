"""The retriever's stages on their own, and the planner's choice of stages (no models, no databases)."""

from __future__ import annotations

import pytest

from kb_service.core.records import Chunk, EmbeddingModelInfo, KnowledgeBase, ScoredChunk
from kb_service.retrieval.pipeline import Plan, SearchOptions
from kb_service.retrieval.stages import DocumentGate, Fusion, merge_by_score
from kb_service.stores.memory import MemoryStore

pytestmark = pytest.mark.unit


def hit(cid: str, score: float, doc: str = "d1") -> ScoredChunk:
    return ScoredChunk(Chunk(id=cid, doc_id=doc, ord=0, text=cid, hash=cid), score)


def test_the_plan_follows_the_options_and_what_the_retriever_can_do() -> None:
    plan = Plan.of(SearchOptions(), can_rerank=True)
    assert (plan.dense, plan.lexical, plan.gate, plan.global_chunks, plan.rerank) == (True, True, True, True, True)
    assert plan.depth == 50 and plan.gate_depth == 50  # the deepest of candidates, top_k and the rerank pool

    assert not Plan.of(SearchOptions(), can_rerank=False).rerank  # asked for, but no reranker is loaded
    lexical = Plan.of(SearchOptions(mode="lexical", gate=False, rerank=False), can_rerank=True)
    assert (lexical.dense, lexical.lexical, lexical.gate, lexical.global_chunks, lexical.rerank) == (
        False,
        True,
        False,
        True,  # without a gate every chunk search is global
        False,
    )
    strict = Plan.of(SearchOptions(mode="dense", fallback=False), can_rerank=True)
    assert strict.gate and not strict.global_chunks and not strict.lexical
    deep = Plan.of(SearchOptions(top_k=120, candidates=10, gate_docs=300), can_rerank=True)
    assert (deep.depth, deep.gate_depth) == (120, 300)


def test_fusion_adds_each_chunks_document_score_to_its_rank_terms() -> None:
    dense = [hit("a", 0.9), hit("b", 0.8, doc="d2")]
    lexical = [hit("b", 7.0, doc="d2"), hit("c", 3.0)]
    fused = Fusion().run(dense, lexical, {"d2": 0.5}, rrf_k=20)
    assert [c.chunk.id for c in fused] == ["b", "a", "c"]
    b = fused[0]
    assert b.stages == {"dense": 0.8, "lexical": 7.0, "gate": 0.5}
    assert b.score == pytest.approx(1 / 22 + 1 / 21 + 0.5)
    assert fused[1].score == pytest.approx(1 / 21) and "gate" not in fused[1].stages


def test_merge_keeps_each_chunks_best_score() -> None:
    merged = merge_by_score([[hit("a", 0.5), hit("b", 0.4)], [hit("b", 0.7), hit("c", 0.1)]])
    assert [(h.chunk.id, h.score) for h in merged] == [("b", 0.7), ("a", 0.5), ("c", 0.1)]


def test_the_gate_keeps_the_top_documents_of_both_rankings() -> None:
    gate = DocumentGate(MemoryStore())
    kb = KnowledgeBase("kb", EmbeddingModelInfo(name="m", dimension=3, fingerprint="f" * 16, max_tokens=64))
    gated = gate.run(kb, [["d1", "d2", "d3"], ["d3", "d4"]], keep=2, rrf_k=20, trace=False)
    assert gated.ids == ["d3", "d1"]  # d3 is in both rankings
    assert set(gated.scores) == {"d1", "d2", "d3", "d4"}  # every ranked document lends its chunks a term
    assert gated.documents == []  # documents are read in a trace only
    assert gate.run(kb, [], keep=5, rrf_k=20, trace=False).ids == []
