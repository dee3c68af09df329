"""Views for exploring retrieval quality in a notebook: gate recall as N varies, one query's trace as DataFrames,
and the queries that went worst (with the stage that lost them). They work on an :class:`EvalReport` and on
:class:`~api.schemas.SearchResponse` objects, which both clients (in-process and HTTP) return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from kb_service.api.schemas import ChunkHit, SearchResponse
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.base import Embedder
from kb_service.evaluation.harness import LOST_AT, EvalDataset, EvalReport
from kb_service.retrieval.pipeline import Retriever, SearchOptions

DEFAULT_GATE_SIZES = (1, 2, 3, 5, 10, 20, 30, 50)


def gate_recall_curve(
    retriever: Retriever,
    kb: KnowledgeBase,
    embedder: Embedder,
    dataset: EvalDataset,
    options: SearchOptions,
    sizes: Sequence[int] = DEFAULT_GATE_SIZES,
) -> pd.DataFrame:
    """Gate recall (share of queries with a relevant document among the N gated documents) for each N in
    ``sizes``. The gate ranks documents the same way whatever N is (N only cuts the list, as long as
    N <= the candidate depth), so one search per query with the largest N gives every point exactly."""
    largest = max(sizes)
    if largest > options.candidates:
        raise ValueError(f"gate sizes above the candidate depth ({options.candidates}) rank differently")
    probe = replace(options, gate=True, gate_docs=largest, top_k=1, rerank=False, trace=True)
    hits = dict.fromkeys(sizes, 0)
    for qid, query in dataset.queries.items():
        relevant = {d for d, rel in dataset.qrels.get(qid, {}).items() if rel > 0}
        gated = [d.document.source for d in retriever.search(kb, embedder, query, probe).trace.gated]
        first = next((i for i, source in enumerate(gated, start=1) if source in relevant), None)
        for n in sizes:
            hits[n] += first is not None and first <= n
    total = len(dataset.queries) or 1
    return pd.DataFrame({"N": list(sizes), "gate recall": [hits[n] / total for n in sizes]})


def trace_frames(response: SearchResponse, relevant: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """One search's trace as DataFrames: ``gated`` documents with their stage-1 scores, chunk ``candidates``
    before reranking and ``reranked`` after, and the final ``hits``; a ``relevant`` column marks the rows whose
    document (by id or by source name) is in ``relevant``."""
    wanted = set(relevant)
    frames = {"hits": _chunk_frame(response.hits, wanted)}
    if response.trace is not None:
        gated = pd.DataFrame(
            [{"rank": i, **d.model_dump()} for i, d in enumerate(response.trace.gated, start=1)],
            columns=["rank", "doc_id", "source", "title", "score"],
        )
        gated["relevant"] = gated["doc_id"].isin(wanted) | gated["source"].isin(wanted)
        frames["gated"] = gated
        frames["candidates"] = _chunk_frame(response.trace.candidates, wanted)
        frames["reranked"] = _chunk_frame(response.trace.reranked, wanted)
        frames["timings"] = pd.Series(response.trace.timings_ms, name="ms").to_frame()
    return frames


def _chunk_frame(hits: Sequence[ChunkHit], wanted: set[str]) -> pd.DataFrame:
    rows = [
        {
            "rank": i,
            "score": h.score,
            **{f"{stage} score": value for stage, value in h.stages.items()},
            "source": h.source,
            "doc_id": h.doc_id,
            "chunk_id": h.chunk_id,
            "relevant": h.doc_id in wanted or h.source in wanted,
            "text": h.text[:200],
        }
        for i, h in enumerate(hits, start=1)
    ]
    return pd.DataFrame(rows, columns=None if rows else ["rank", "score", "source", "doc_id", "relevant", "text"])


def worst_queries(report: EvalReport, dataset: EvalDataset, config: str, *, n: int = 10) -> pd.DataFrame:
    """The ``n`` queries of ``config`` with the lowest first measure (nDCG@10 for BEIR), with the query text,
    the rank of the first relevant document, whether the gate passed one and the stage that lost it."""
    rows = report.per_query[report.per_query["config"] == config]
    if rows.empty:
        raise ValueError(f"no configuration {config!r} in the report; it has {list(report.summary.index)}")
    measure = report.summary.columns[0]
    worst = rows.sort_values([measure, "first relevant rank"], ascending=[True, False], na_position="first").head(n)
    worst = worst.assign(text=worst["query"].map(dataset.queries))
    return worst[["query", "text", measure, "first relevant rank", "in gate", "lost at"]].reset_index(drop=True)


def lost_at_counts(report: EvalReport) -> pd.DataFrame:
    """Queries per configuration by the stage at which their relevant documents were lost (or ``found``)."""
    table = report.per_query.groupby(["config", "lost at"], sort=False).size().unstack(fill_value=0)
    return table.reindex(columns=[c for c in LOST_AT if c in table.columns])
