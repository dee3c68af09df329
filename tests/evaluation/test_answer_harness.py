"""``kb eval-answers``: the metrics, and whole runs on a BEIR folder with answers built from the project's own
example documents (and on RGB from ../shared when it is there), with the real models and Milvus Lite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb_service.cli.main import app
from kb_service.evaluation.answers import contains_answer, exact_match, load_qa, token_f1

ROOT = Path(__file__).resolve().parents[2]
SHARED_RGB = ROOT.parent / "shared" / "data" / "rgb-zh-refine"


@pytest.mark.unit
def test_answer_metrics_follow_squad_and_cmrc() -> None:
    assert exact_match("The Eiffel Tower [1].", ["eiffel tower"])  # articles, punctuation, markers ignored
    assert not exact_match("It is the Eiffel Tower.", ["Eiffel Tower"])
    assert token_f1("in Paris, France", ["Paris"]) == pytest.approx(0.5)  # precision 1/3, recall 1
    assert token_f1("保修期为两年[1]。", ["两年"]) == pytest.approx(2 * (2 / 6) * 1 / (2 / 6 + 1))  # characters
    assert contains_answer("保修期为两年[1]。", ["两年"]) and not contains_answer("三年", ["两年"])
    assert contains_answer("东盟、中国和日本", [], [["东盟", "ASEAN"], "日本"])  # RGB: every entry
    assert not contains_answer("东盟和中国", [], [["东盟"], "日本"])


def _beir_from_examples(folder: Path) -> Path:
    """A BEIR folder of the example documents' paragraphs, with questions we wrote and their answers."""
    corpus = []
    for path in sorted((ROOT / "examples" / "en").glob("*.md")):
        for i, para in enumerate(p for p in path.read_text(encoding="utf-8").split("\n\n") if not p.startswith("#")):
            corpus.append({"_id": f"{path.stem}-{i}", "title": path.stem, "text": para.replace("\n", " ")})
    by_text = {c["_id"]: c["text"] for c in corpus}
    qas = [
        ("q1", "How long is the warranty of the AquaFlow P200?", "5-year", "warranty"),
        ("q2", "How loud is the AquaFlow P200 pump?", "42 dB", "42 dB"),
        ("q3", "How often should the inlet filter be cleaned?", "every 3 months", "inlet filter"),
    ]
    folder.mkdir()
    (folder / "qrels").mkdir()
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(c) + "\n" for c in corpus)
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t, _, _ in qas))
    (folder / "answers.jsonl").write_text("".join(json.dumps({"_id": q, "answer": a}) + "\n" for q, _, a, _ in qas))
    rows = ["query-id\tcorpus-id\tscore"]
    for q, _, _, needle in qas:
        rows += [f"{q}\t{cid}\t1" for cid, text in by_text.items() if needle in text]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.integration
def test_eval_answers_reports_every_figure_per_mode(tmp_path: Path) -> None:
    folder = _beir_from_examples(tmp_path / "pumps")
    assert [i.answers for i in load_qa(folder).items] == [["5-year"], ["42 dB"], ["every 3 months"]]
    out = tmp_path / "report.json"
    args = ["--data-dir", str(tmp_path / "data"), "eval-answers", str(folder)]
    result = CliRunner().invoke(app, [*args, "--modes", "extractive", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    summary = report["summary"]["extractive"]
    assert summary["questions"] == 3 and summary["answer_in_text"] == 1.0
    assert summary["citation_precision"] == 1.0 and summary["citation_precision_gold"] == 1.0
    assert summary["citation_recall_gold"] == 1.0 and summary["degenerate_rate"] == 0.0
    assert summary["unsupported_claim_rate"] == 0.0 and summary["refusal_rate"] == 0.0
    assert summary["refusal_rate_negative_only"] is not None and summary["latency_p95_s"] > 0
    assert {"exact_match", "token_f1", "prompt_tokens_mean", "completion_tokens_mean"} <= set(summary)
    bad = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "eval-answers", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and "no such dataset" in bad.output


@pytest.mark.integration
@pytest.mark.skipif(not SHARED_RGB.exists(), reason="needs ../shared/data/rgb-zh-refine (CI has it)")
def test_eval_answers_on_rgb_asks_with_and_without_the_positive_passages(tmp_path: Path) -> None:
    out = tmp_path / "rgb.json"
    args = ["--data-dir", str(tmp_path / "data"), "eval-answers", str(SHARED_RGB), "--max-questions", "2"]
    result = CliRunner().invoke(app, [*args, "--modes", "extractive", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text(encoding="utf-8"))["per_question"]
    assert len(rows) == 2 and all(r["refused_negative"] is not None for r in rows)
    assert all(r["gold_known"] for r in rows) and any(r["contains"] for r in rows)
