"""The evaluation harness: dataset loaders, chunk→document runs, metrics by ir-measures, the `kb eval` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb_service.cli.main import app
from kb_service.core.errors import InvalidInput
from kb_service.core.records import Chunk, Document, ScoredChunk, ScoredDocument
from kb_service.evaluation.harness import (
    all_gold_recall,
    diagnose,
    doc_run,
    gate_recall,
    load_beir,
    load_dataset,
    load_squad,
    score,
)
from kb_service.retrieval.pipeline import SearchResult, SearchTrace
from tests.conftest import SHARED_DATA, needs_shared

DOCS = {
    "d1": ("Volcanoes", "Lava and ash escape from a magma chamber during an eruption."),
    "d2": ("Bread", "Knead the dough, let it rise and bake it until the crust is brown."),
    "d3": ("Tea", "Green tea leaves are not oxidised; black tea leaves are."),
    "d4": ("Python", "A list is an ordered mutable sequence; sort orders it in place."),
}
QUERIES = {"q1": "what comes out of a volcano", "q2": "how to bake bread", "q3": "oxidised tea leaves"}


def write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in DOCS.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in [*QUERIES.items(), ("q9", "unjudged")])
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t2\n")
    return folder


def _result(sources: list[str], gated: list[str] | None = None) -> SearchResult:
    hits = [
        ScoredChunk(Chunk(id=f"{s}#{i}", doc_id=f"h-{s}", ord=0, text="", hash="", metadata={"source": s}), 1.0)
        for i, s in enumerate(sources)
    ]
    trace = SearchTrace(
        gated=[ScoredDocument(Document(id=f"h-{g}", source=g, title="", format="txt"), 1.0) for g in gated or []]
    )
    return SearchResult("q", hits, trace)


@pytest.mark.unit
def test_beir_loader_keeps_judged_queries_and_titles(tmp_path: Path) -> None:
    ds = load_beir(write_beir(tmp_path / "mini"), "test")
    assert set(ds.queries) == {"q1", "q2", "q3"} and ds.qrels["q3"] == {"d3": 2}
    assert ds.corpus["d1"].text.startswith("Volcanoes\n\nLava") and ds.corpus["d1"].title == "Volcanoes"
    assert ds.limit(2).queries.keys() == {"q1", "q2"} and ds.unique_documents == 4
    with pytest.raises(InvalidInput, match=r"qrels/dev.tsv not found.*\(splits here: test\)"):
        load_beir(tmp_path / "mini", "dev")
    with pytest.raises(InvalidInput, match="neither a BEIR folder"):
        load_dataset(tmp_path, "test")


@pytest.mark.unit
def test_runs_map_chunks_to_documents_and_metrics_come_from_trec_eval(tmp_path: Path) -> None:
    ds = load_beir(write_beir(tmp_path / "mini"), "test")
    results = {
        "q1": _result(["d1", "d1", "d2"], gated=["d1"]),  # two chunks of d1: the document counts once, at rank 1
        "q2": _result(["d3", "d2"], gated=["d3"]),  # relevant at rank 2
        "q3": _result([]),  # no hits still counts, as zero
    }
    run = doc_run(results)
    assert list(run["q1"]) == ["d1", "d2"] and run["q1"]["d1"] > run["q1"]["d2"]
    means, table = score(ds, run)
    assert means["RR@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert means["nDCG@10"] == pytest.approx((1 + 1 / __import__("math").log2(3) + 0) / 3)
    assert means["R@10"] == pytest.approx(2 / 3)
    assert table.loc["q3", "nDCG@10"] == 0.0
    assert gate_recall(results, ds.qrels) == pytest.approx(1 / 3)


@pytest.mark.unit
@needs_shared
def test_squad_loader_on_cmrc() -> None:
    ds = load_squad(SHARED_DATA / "cmrc2018-trial" / "cmrc2018_trial.squad-style.json")
    assert (len(ds.corpus), len(ds.queries)) == (256, 1000)  # two of the 1,002 questions are empty
    qid, rel = next(iter(ds.qrels.items()))
    assert list(rel.values()) == [1] and next(iter(rel)) in ds.corpus
    assert "R@5" in ds.measures


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["milvus", "pgvector"])
def test_kb_eval_command_reports_every_configuration(tmp_path: Path, backend: str, pg_dsn: str) -> None:
    folder = write_beir(tmp_path / "mini")
    out = tmp_path / "report.json"
    args = ["--backend", backend, "--data-dir", str(tmp_path / "data")]
    if backend == "pgvector":
        args += ["--dsn", pg_dsn]
    env = {"KB_RERANK_BACKEND": "none", "KB_CHUNK_SIZE": "64", "KB_CHUNK_OVERLAP": "8"}
    result = CliRunner().invoke(app, [*args, "eval", str(folder), "--split", "test", "--json", str(out)], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["queries"] == 3 and report["documents"] == 4 and report["backend"] == backend
    assert set(report["summary"]) == {
        "dense",
        "lexical",
        "hybrid",
        "two-stage strict",
        "two-stage",
        "default pipeline",
        "default + multi-hop",
    }
    for row in report["summary"].values():
        assert set(row) >= {"nDCG@10", "R@10", "R@100", "RR@10", "gate recall"}
        assert row["R@10"] == 1.0  # four documents: every relevant one is in the top 10
    assert report["summary"]["hybrid"]["RR@10"] == 1.0
    assert report["summary"]["two-stage"]["gate recall"] == 1.0
    assert report["latency_ms"]["two-stage"]["total"]["p50"] > 0
    # The second run reuses the cached knowledge base.
    named = "lexical,default + keywords"  # a refinement runs only when named
    again = CliRunner().invoke(app, [*args, "eval", str(folder), "--split", "test", "--configs", named], env=env)
    assert again.exit_code == 0 and "used the cached knowledge base" in again.output
    assert "lexical" in again.output and "default + keywords" in again.output
    bad = CliRunner().invoke(app, [*args, "eval", str(folder), "--configs", "nope"], env=env)
    assert bad.exit_code == 2 and "unknown configuration" in bad.output


@pytest.mark.unit
def test_all_gold_recall_needs_every_relevant_document_in_the_top_k() -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1, "d": 1, "e": 0}}
    ranked = ["a", "x1", "x2", "x3", "x4", "x5", "b"]  # b at rank 7: in the top 10, not in the top 5
    run = {"q1": {d: float(10 - i) for i, d in enumerate(ranked)}, "q2": {"d": 2.0, "c": 1.0}}
    assert all_gold_recall(qrels, run) == {"R_all@5": 0.5, "R_all@10": 1.0}
    assert all_gold_recall({"q": {"a": 1}}, {"q": {"a": 1.0}}) == {}  # one relevant document each: R@k says it


@pytest.mark.unit
def test_diagnose_names_the_stage_that_lost_each_query() -> None:
    def traced(final: list[str], candidates: list[str], gated: list[str], *, reranked: bool = False) -> SearchResult:
        result = _result(final, gated=gated)
        result.trace.candidates = _result(candidates).hits
        result.trace.reranked = result.trace.candidates if reranked else []
        return result

    qrels = {q: {"rel": 1} for q in ("found", "ranking", "rerank", "retrieval")}
    filler = [f"x{i}" for i in range(12)]
    results = {
        "found": traced(["x0", "rel"], ["rel"], gated=["rel"]),
        "ranking": traced([*filler, "rel"], [*filler, "rel"], gated=["x0"]),
        "rerank": traced([*filler, "rel"], ["rel", *filler], gated=["rel"], reranked=True),
        "retrieval": traced(filler, filler, gated=[]),
    }
    table = diagnose(results, qrels)
    assert table["lost at"].to_dict() == {q: q for q in qrels}
    assert table.loc["found", "first relevant rank"] == 2 and table.loc["ranking", "first relevant rank"] == 13
    assert table.loc["found", "in gate"] and not table.loc["ranking", "in gate"]
    assert table.loc["retrieval", "in gate"] is None  # no gate ran
