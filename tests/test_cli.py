"""The ``kb`` CLI contract, on both backends, with --json output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb_service.cli.main import EXIT_SOME_FAILED, app
from tests.conftest import DOCUMENTS, needs_shared
from tests.fixtures import write_corpus

pytestmark = pytest.mark.integration
runner = CliRunner()


def kb(args: list[str], *cmd: str, code: int = 0) -> object:
    result = runner.invoke(app, [*args, *cmd, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_create_ingest_list_docs_delete_drop(base_args: list[str], tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus")
    name = "客户 手册 " + tmp_path.name[-6:]
    created = kb(base_args, "create", name)
    assert created["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2" and created["dimension"] == 384
    assert (created["documents"], created["chunks"]) == (0, 0)  # the API's KnowledgeBasePublic

    report = kb(base_args, "ingest", name, str(tmp_path / "corpus"))
    assert report["counts"] == {"added": 5, "unchanged": 0, "replaced": 0, "failed": 0}
    assert report["chunks_added"] > 0 and report["chunks_per_s"] > 0

    assert kb(base_args, "ingest", name, str(tmp_path / "corpus"))["counts"]["unchanged"] == 5

    listing = {row["name"]: row for row in kb(base_args, "list")}
    assert listing[name]["documents"] == 5 and listing[name]["chunks"] == report["chunks_added"]

    page = kb(base_args, "docs", name)  # the API's DocumentPage
    docs = page["documents"]
    assert page["total"] == 5 and (page["offset"], page["limit"]) == (0, 1000)
    assert {d["source"] for d in docs} == {"guide.docx", "manual.html", "notes.md", "report.pdf", "zh.txt"}
    assert all(d["status"] == "ready" for d in docs)

    found = kb(base_args, "search", name, "solar panels make electricity from sunlight", "--top-k", "3", "--trace")
    assert found["hits"][0]["source"] == "report.pdf" and len(found["hits"]) <= 3
    assert found["hits"][0]["page"] == 1 and {"dense", "lexical", "gate"} <= set(found["hits"][0]["stages"])
    assert found["trace"]["gated"] and found["trace"]["timings_ms"]["total"] > 0
    only = kb(base_args, "search", name, "Paris", "--filters", '{"source": "notes.md"}', "--no-rerank")
    assert {h["source"] for h in only["hits"]} == {"notes.md"}
    assert "not valid JSON" in kb(base_args, "search", name, "x", "--filters", "{", code=2)["error"]
    assert kb(base_args, "search", name, " ", code=2)["error"] == "query must not be empty"
    other = tmp_path / "other"
    other.mkdir()
    (other / "tides.md").write_text("# Tides\n\nThe Moon's gravity raises the ocean tides twice a day.\n")
    kb(base_args, "create", name + " 2")
    kb(base_args, "ingest", name + " 2", str(other))
    both = kb(base_args, "search", name, "what causes ocean tides", "--also", name + " 2", "--trace")
    assert (both["hits"][0]["knowledge_base"], both["hits"][0]["source"]) == (name + " 2", "tides.md")
    assert both["trace"]["routes"][0]["knowledge_base"] == name + " 2"

    question = "What do solar panels make electricity from?"
    answer = kb(base_args, "ask", name, question)  # the offline default: quoted sentences, each cited
    assert answer["mode"] == "extractive" and answer["citations"] and answer["sources"][0]["source"] == "report.pdf"
    assert answer["question"] == question and set(answer) >= {"answer", "unsupported_claims", "usage", "verified"}
    generated = kb(base_args, "ask", name, question, "--answer-mode", "generated", "--max-tokens", "32")
    assert generated["answer"] and generated["timings_ms"]["generate"] > 0
    for mode, whole in (("auto", answer), ("generated", generated)):  # streamed == whole, markers included
        streamed = runner.invoke(
            app, [*base_args, "ask", name, question, "--stream", "--answer-mode", mode, "--max-tokens", "32"]
        )
        assert streamed.exit_code == 0 and streamed.stdout.startswith(whole["answer"] + "\n"), streamed.output
    assert "history must be a JSON list" in kb(base_args, "ask", name, "x", "--history", "{}", code=2)["error"]

    target = next(d for d in docs if d["source"] == "report.pdf")
    wrote = kb(base_args, "download", name, target["id"], "-o", str(tmp_path / "copy.pdf"))
    assert (tmp_path / "copy.pdf").read_bytes() == (tmp_path / "corpus" / "report.pdf").read_bytes()
    assert wrote == {"doc_id": target["id"], "source": "report.pdf", "path": str(tmp_path / "copy.pdf"),
                     "bytes": (tmp_path / "copy.pdf").stat().st_size}  # fmt: skip
    shown = kb(base_args, "download", name, target["id"], "--page", "2", "-o", str(tmp_path / "p2.png"))
    assert (tmp_path / "p2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shown["bytes"] > 1000
    missing = kb(base_args, "download", name, target["id"], "--page", "9", code=2)["error"]
    assert missing == "report.pdf has 2 pages; there is no page 9"
    deleted = kb(base_args, "delete", name, target["id"])
    assert deleted["deleted"] == target  # the document as it was, then proof that nothing of it is left
    gone = {"doc_id": target["id"], "document": None, "chunks": 0, "lexical_entries": 0, "original_files": 0}
    assert deleted["residue"] == {**gone, "clean": True}
    assert kb(base_args, "delete", name, target["id"], code=2)["error"].startswith("document ")
    checked = kb(base_args, "check", name, target["id"], "--repair")
    assert checked["clean"] and checked["recovered"]["chunks_removed"] == 0
    assert checked["deleted"] == [{**gone, "clean": True}]
    assert checked["audit"]["documents"] == {"ready": 4} and checked["audit"]["leftover_chunks"] == 0
    still_there = next(d for d in docs if d["source"] == "notes.md")["id"]
    assert not kb(base_args, "check", name, still_there, code=1)["deleted"][0]["clean"]

    assert kb(base_args, "drop", name) == {"dropped": name}
    assert "does not exist" in kb(base_args, "docs", name, code=2)["error"]


def test_bad_input_gets_clear_errors(base_args: list[str], tmp_path: Path) -> None:
    assert "must not contain '/'" in kb(base_args, "create", "a/b", code=2)["error"]
    assert "only spaces" in kb(base_args, "create", "   ", code=2)["error"]
    assert "no such file or folder" in kb(base_args, "ingest", "x", str(tmp_path / "missing"), code=2)["error"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.txt").write_bytes(b"")
    (tmp_path / "bad" / "ok.md").write_text("# Fine\n\nText.")
    report = kb(base_args, "ingest", "auto created", str(tmp_path / "bad"), code=EXIT_SOME_FAILED)
    assert report["counts"]["added"] == 1
    assert report["failed"] == [{"source": "empty.txt", "reason": "empty", "error": "the file is empty"}]


def test_invalid_configuration_is_reported(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--backend", "sqlite", "--data-dir", str(tmp_path), "list", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"].startswith("invalid configuration: KB_BACKEND: ")


@pytest.mark.slow
@needs_shared
def test_ingest_all_shared_documents(base_args: list[str]) -> None:
    """The whole real-document folder: the right files ready, the rest failed with reasons; a re-run changes nothing."""
    report = kb(base_args, "ingest", "shared docs", str(DOCUMENTS), code=EXIT_SOME_FAILED)
    failed = {f["source"]: f["reason"] for f in report["failed"]}
    assert failed == {
        "unstructured/pdf/password.pdf": "encrypted",
        "unstructured/simple.doc": "unsupported_format",
    }  # the scanned single_table.pdf is read by OCR
    total = sum(1 for p in DOCUMENTS.rglob("*") if p.is_file())
    counts = report["counts"]
    assert counts["added"] + counts["unchanged"] + counts["failed"] == total
    docs = kb(base_args, "docs", "shared docs")["documents"]
    assert len(docs) == counts["added"] and all(d["status"] == "ready" for d in docs)
    listing = {row["name"]: row for row in kb(base_args, "list")}
    assert listing["shared docs"]["chunks"] == report["chunks_added"] == sum(d["chunk_count"] for d in docs)

    again = kb(base_args, "ingest", "shared docs", str(DOCUMENTS), code=EXIT_SOME_FAILED)
    assert again["counts"] == {"added": 0, "unchanged": total - 2, "replaced": 0, "failed": 2}
    assert again["chunks_added"] == 0


def test_an_unexpected_error_is_one_line_and_its_traceback_is_asked_for(tmp_path: Path) -> None:
    import subprocess
    import sys

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    command = [sys.executable, "-m", "kb_service.cli.main", "--data-dir", str(not_a_folder), "list"]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("error: FileExistsError:") and "--debug" in plain.stderr
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
