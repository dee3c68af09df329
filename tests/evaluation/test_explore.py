"""Notebook views over a real evaluation: the in-process client runs the harness on a small BEIR folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.client import LocalClient
from kb_service.evaluation import load_beir
from kb_service.evaluation.explore import gate_recall_curve, lost_at_counts, trace_frames, worst_queries
from kb_service.retrieval.pipeline import SearchOptions
from tests.evaluation.test_harness import write_beir

pytestmark = pytest.mark.integration


def test_explore_views_over_a_real_report(tmp_path: Path) -> None:
    dataset = load_beir(write_beir(tmp_path / "mini"), "test")
    with LocalClient(data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8, rerank_backend="none") as client:
        report = client.evaluate(dataset, configs=["dense", "two-stage"])
        assert list(report.summary.index) == ["dense", "two-stage"]
        timings = report.timings
        assert set(timings["config"]) == {"dense", "two-stage"} and (timings["ms"] >= 0).all()
        assert len(timings[(timings.stage == "total") & (timings.config == "dense")]) == 3  # one sample per query
        assert {"first relevant rank", "in gate", "lost at"} <= set(report.per_query.columns)

        counts = lost_at_counts(report)
        assert counts.sum(axis=1).to_dict() == {"dense": 3, "two-stage": 3}
        worst = worst_queries(report, dataset, "two-stage", n=2)
        assert len(worst) == 2 and set(worst["text"]) <= set(dataset.queries.values())
        with pytest.raises(ValueError, match="no configuration 'nope'"):
            worst_queries(report, dataset, "nope")

        kb, embedder = client.services.catalog.open(report.info["knowledge_base"])
        options = SearchOptions.from_settings(client.settings)
        curve = gate_recall_curve(client.services.retriever, kb, embedder, dataset, options, sizes=(1, 2, 4))
        assert list(curve["N"]) == [1, 2, 4]
        assert curve["gate recall"].is_monotonic_increasing and curve["gate recall"].iloc[-1] == 1.0  # 4 documents
        with pytest.raises(ValueError, match="candidate depth"):
            gate_recall_curve(client.services.retriever, kb, embedder, dataset, options, sizes=(1000,))

        response = client.search(kb.name, dataset.queries["q1"], trace=True, top_k=3)
        frames = trace_frames(response, relevant=["d1"])
        assert set(frames) == {"hits", "gated", "candidates", "reranked", "timings"}
        assert frames["gated"]["relevant"].iloc[0] and frames["hits"]["relevant"].iloc[0]
        assert frames["hits"]["source"].iloc[0] == "d1" and "dense score" in frames["candidates"].columns
        assert trace_frames(client.search(kb.name, "volcano"))["hits"]["relevant"].sum() == 0
