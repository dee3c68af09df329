"""Smoke runs of the benchmarks at their --quick size: they run on a fresh clone and print the JSON they promise
(the numbers themselves are recorded in docs/BENCHMARKS.md, not asserted: speed is measured, not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import needs_rabbitmq
from tests.conftest import needs_shared

pytestmark = [pytest.mark.slow, pytest.mark.integration, needs_shared]
ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_ingest_benchmark_against_raw_model_and_llamaindex() -> None:
    report = bench("ingest.py", "--backends", "pgvector", "--llamaindex", "--summary-vector", "chunk-mean")
    [run] = report["runs"]
    assert run["docs"] == 300 and run["chunks"] > 300 and run["ratio_to_raw"] > 0
    # chunk-mean summaries: the model sees exactly the distinct chunk texts
    assert run["model_texts"] <= run["chunks"] and run["model_time_share"] > 0
    if report["raw_encode"][0]["dtype"] != "torch.float32":  # bf16 CPUs: also measured against plain fp32
        assert run["ratio_to_raw_fp32"] > 0
    for theirs in report["llamaindex"]:  # LlamaIndex's default batch size, then ours
        assert theirs["backend"] == "pgvector" and theirs["docs"] == 300 and theirs["chunks"] > 300
        assert theirs["our_speedup"] > 0


def test_ingest_benchmark_times_the_rerank_vector_warmer() -> None:
    report = bench("ingest.py", "--limit", "20", "--backends", "milvus", "--rerank-vectors")
    [run] = report["runs"]
    warmed = run["rerank_vectors"]
    assert run["docs"] == 20 and warmed["chunks"] == run["chunks"]  # every chunk got its reranker vector
    assert warmed["chunks_per_s"] > 0 and warmed["ratio_to_raw"] > 0 and "e5" in warmed["model"]


def test_query_benchmark_per_stage_http_and_llamaindex() -> None:
    report = bench("query.py", "--http-seconds", "2", "--clients", "4", "--queries", "20", "--no-index-types")
    [size] = report["sizes"]
    assert size["chunks"] == 2_000
    for backend in ("milvus", "pgvector"):
        row = size["stores"][backend]
        assert {"embed", "gate", "dense", "lexical", "fusion", "total"} <= set(row["no_rerank"]["stages_ms"])
        assert {"embed", "dense", "total"} <= set(row["dense_only"]["stages_ms"])
        assert (
            row["rerank_20"]["stages_ms"]["rerank"]["p50"] > 0
            and row["rerank_20_warm"]["stages_ms"]["rerank"]["p50"] > 0
            and row["rerank_20_stored"]["stages_ms"]["rerank"]["p50"] > 0
            and row["rerank_20_stored"]["check"]["embedded_at_query_time"] == 0
        )
        assert row["http"]["errors"] == 0 and row["http"]["qps"] > 0
        if not report["machine"]["cuda"]:  # on the CPU, queries go through ONNX Runtime, and PyTorch in the same run
            assert row["onnx_over_torch_queries_p50"]["embed_stage"] > 0
            assert set(row["no_rerank_torch_queries"]["stages_ms"]) == set(row["no_rerank"]["stages_ms"])
    assert size["llamaindex"]["end_to_end_ms"]["p50"] > 0


def test_verify_cost_benchmark_reports_the_check_per_store() -> None:
    report = bench("verify_cost.py")
    assert set(report) == {"pgvector", "milvus"}
    for row in report.values():
        assert row["searches"] == 20 and 0 < row["p50_verify_ms"] < row["p50_total_ms"]


def test_filings_table_check_compares_both_parsers() -> None:
    report = bench("filings_tables.py")
    for parser in ("page-text", "layout"):
        run = report[parser]
        assert run["questions"] == 7 and run["chunks"] > 0
        assert 0 <= run["answer_in_its_table_cell@5"] <= run["row_column_number_together@5"] <= 1
    assert report["page-text"]["answer_in_its_table_cell@5"] == 0  # plain page text has no cells
    assert report["layout"]["answer_in_its_table_cell@5"] > 0


def test_ocr_benchmark_reports_character_error_rates() -> None:
    report = bench("scan_ocr.py")["ocr"]
    assert len(report["pages"]) == 3 and report["ocr_pages_per_s"] > 0
    assert all(0 <= page["cer"] < 0.2 for page in report["pages"])


def test_sync_benchmark_against_reingesting() -> None:
    report = bench("sync.py")
    assert report["files"] == report["first_sync"]["added"] > 0 and report["unchanged_files"] == report["files"]
    assert report["reingest_outcomes"] == ["unchanged"] and report["touched_changes"] == 0
    assert len(report["one_edit_changed"]) == 1 and report["audit_clean"]


def test_reindex_benchmark_against_a_fresh_ingest() -> None:
    report = bench("reindex.py")
    assert report["reindex_state"] == "ready" and report["switched_to"] == "intfloat/multilingual-e5-small"
    searches = report["searches"]
    assert searches["during_reindex"] > 0 and searches["failed"] == searches["empty"] == 0
    assert report["reindex_s"] > 0 and report["ingest_e5_s"] > 0 and report["audit_clean"]


def test_lexical_benchmark_catch_up_against_rebuild() -> None:
    report = bench("lexical.py")
    [size] = report["sizes"]
    assert size["chunks"] == 5_000 and size["rebuild_before_s"] > 0 and size["build_s"] > 0
    assert set(size["refresh_ms"]) == {"upload", "replace", "delete"} and size["query_ms"]["ours"]["p50"] > 0


def test_structured_output_benchmark_compares_constrained_and_free_decoding() -> None:
    report = bench("structured.py")
    for task in ("json_schema", "function_call_required"):
        free, constrained = report[task]["free"], report[task]["constrained"]
        assert free["tasks"] == constrained["tasks"] == 2
        assert constrained["valid_first_try"] == 1.0  # held to the schema, the 135M model cannot write it wrong
        assert 0 <= free["valid_first_try"] <= free["valid_within_3_attempts"] <= 1
    assert 0 <= report["function_call_required"]["constrained"]["right_function_and_argument"] <= 1


@needs_rabbitmq
def test_scale_out_benchmark_compares_workers_with_the_embedded_mode() -> None:
    report = bench("scale_out.py")
    assert set(report["runs"]) == {"embedded", "queue, 1 worker", "queue, 2 workers"}
    for run in report["runs"].values():  # every mode ingested everything, cleanly
        assert run["ready"] == report["docs"] == 40 and run["audit_clean"] and run["docs_per_s"] > 0
    assert len({run["chunks"] for run in report["runs"].values()}) == 1
    assert report["speedup_2_vs_1"] > 0 and "queue_overhead_ms_per_doc" in report


def test_multi_kb_benchmark_routes_and_merges_four_knowledge_bases() -> None:
    report = bench("multi_kb.py")
    assert set(report["sets"]) == {"scifact", "msmarco", "2wiki", "cmrc"}
    for row in report["sets"].values():
        assert set(row) >= {"own", "all", "routed", "routed_1", "all_weighted"}
        assert 0 <= row["routed"]["router_top1"] <= row["routed"]["router_searched"] <= 1
        assert all(0 <= row[c]["nDCG@10"] <= 1 for c in ("own", "all", "routed"))
    assert report["knowledge_bases"]["cmrc"]["embedding_model"] == "intfloat/multilingual-e5-small"
    assert report["latency_ms"]["routed"]["p50"] > 0
