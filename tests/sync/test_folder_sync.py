"""Keeping a knowledge base in step with a folder, on both stores, through ``kb sync`` (the CLI over the in-process
client) and ``POST …/sync`` (the HTTP client against a live service): exactly the files added, edited and deleted
at the source change in the knowledge base, unchanged files are not read again, the state survives a restart, and
the audit and every deleted document's residue check are clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb_service.cli.main import app
from kb_service.client import ClientError, HTTPClient, LocalClient
from kb_service.core.config import Settings
from kb_service.sync import syncer
from tests.live import live_server

pytestmark = pytest.mark.integration
runner = CliRunner()

FILES = {
    "pumps.md": "# Pumps\n\nCentrifugal pumps move water with a spinning impeller.",
    "valves.md": "# Valves\n\nA check valve lets fluid flow in one direction only.",
    "sub/hoses.txt": "Rubber hoses crack in frost; store them indoors over winter.",
    "filters.html": "<html><body><h1>Filters</h1><p>Clean the inlet filter every three months.</p></body></html>",
}


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the sync reads to hash it."""
    seen: list[str] = []
    real = syncer._sha256

    def counting(path: Path) -> str:
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(syncer, "_sha256", counting)
    return seen


def kb(args: list[str], *cmd: str, code: int = 0) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, *cmd, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def changes(report: dict) -> tuple[list[str], list[str], list[str]]:  # type: ignore[type-arg]
    return report["added"], report["changed"], report["deleted"]


def test_a_folder_sync_reports_exactly_the_three_changes(
    base_args: list[str], tmp_path: Path, hashed: list[str]
) -> None:
    folder = tmp_path / "manuals"
    write(folder, FILES)
    (folder / ".hidden.md").write_text("editor swap files and dot-folders are not documents")
    name = "维修 manuals"

    first = kb(base_args, "sync", name, str(folder))
    assert changes(first) == (sorted(FILES), [], []) and first["failed"] == [] and first["unchanged"] == 0
    assert first["source"] == str(folder.resolve())
    docs = {d["source"]: d for d in kb(base_args, "docs", name)["documents"]}
    assert set(docs) == set(FILES) and all(d["status"] == "ready" for d in docs.values())

    hashed.clear()
    again = kb(base_args, "sync", name, str(folder))
    assert changes(again) == ([], [], []) and again["unchanged"] == 4
    assert hashed == []  # same size and time as recorded: not even read

    # Edit one file, delete one, add one.
    (folder / "pumps.md").write_text("# Pumps\n\nSubmersible pumps sit under water and push it up the pipe.")
    (folder / "valves.md").unlink()
    write(folder, {"sub/gaskets.md": "# Gaskets\n\nReplace a cracked gasket before it leaks."})
    dry = kb(base_args, "sync", name, str(folder), "--dry-run")
    assert changes(dry) == (["sub/gaskets.md"], ["pumps.md"], ["valves.md"]) and dry["dry_run"]
    assert {d["source"] for d in kb(base_args, "docs", name)["documents"]} == set(FILES)  # nothing changed yet

    hashed.clear()
    done = kb(base_args, "sync", name, str(folder))
    assert changes(done) == (["sub/gaskets.md"], ["pumps.md"], ["valves.md"])
    assert done["unchanged"] == 2 and done["clean"] and done["failed"] == []
    assert sorted(hashed) == ["gaskets.md", "pumps.md"]  # only the new and the edited file were read
    after = {d["source"]: d for d in kb(base_args, "docs", name)["documents"]}
    assert set(after) == {"pumps.md", "sub/hoses.txt", "filters.html", "sub/gaskets.md"}
    assert after["pumps.md"]["id"] != docs["pumps.md"]["id"]  # replaced: the new content's id
    assert after["sub/hoses.txt"]["id"] == docs["sub/hoses.txt"]["id"]  # untouched
    for gone in (docs["valves.md"]["id"], docs["pumps.md"]["id"]):
        assert kb(base_args, "check", name, gone)["deleted"][0]["clean"]
    assert kb(base_args, "check", name)["audit"]["clean"]
    hits = kb(base_args, "search", name, "submersible pump under water", "--top-k", "1")["hits"]
    assert hits[0]["source"] == "pumps.md" and "Submersible" in hits[0]["text"]

    # Touched but not changed: read once, not ingested; then not read again.
    hoses = folder / "sub" / "hoses.txt"
    os.utime(hoses, ns=(hoses.stat().st_atime_ns, hoses.stat().st_mtime_ns + 5_000_000_000))
    hashed.clear()
    touched = kb(base_args, "sync", name, str(folder))
    assert changes(touched) == ([], [], []) and hashed == ["hoses.txt"]
    hashed.clear()
    assert changes(kb(base_args, "sync", name, str(folder))) == ([], [], []) and hashed == []

    # A document deleted by hand comes back: the knowledge base mirrors the folder.
    kb(base_args, "delete", name, after["filters.html"]["id"])
    assert changes(kb(base_args, "sync", name, str(folder))) == (["filters.html"], [], [])
    assert kb(base_args, "check", name)["audit"]["clean"]


def test_the_sync_state_survives_a_restart_and_a_failed_file_is_tried_again(
    base_args: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    write(folder, {"a.md": "# A\n\nAlpha pumps.", "b.md": "# B\n\nBeta valves."})
    write(folder, {"copy-of-a.md": "# A\n\nAlpha pumps."})  # a.md's content: one document holds both
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf")
    name = "restart"
    first = kb(base_args, "sync", name, str(folder), code=3)  # some file failed
    assert changes(first) == (["a.md", "b.md", "broken.pdf", "copy-of-a.md"], [], [])
    assert [f["path"] for f in first["failed"]] == ["broken.pdf"] and first["failed"][0]["reason"]

    # Each `kb` invocation is a new process's worth of state: the SQLite state is all that carries over.
    second = kb(base_args, "sync", name, str(folder), code=3)
    assert changes(second) == (["broken.pdf"], [], []) and second["unchanged"] == 3
    (folder / "broken.pdf").unlink()
    third = kb(base_args, "sync", name, str(folder))
    assert changes(third) == ([], [], []) and third["unchanged"] == 3  # it never made it in: nothing to delete
    # The original of the shared content goes: its document goes, and at the next sync the copy comes back under
    # its own name (a sync plans before it deletes).
    (folder / "a.md").unlink()
    fourth = kb(base_args, "sync", name, str(folder))
    assert changes(fourth) == ([], [], ["a.md"]) and fourth["clean"]
    assert changes(kb(base_args, "sync", name, str(folder))) == (["copy-of-a.md"], [], [])
    assert {d["source"] for d in kb(base_args, "docs", name)["documents"]} == {"b.md", "copy-of-a.md"}


def test_bad_sources_are_clear_errors(base_args: list[str], tmp_path: Path) -> None:
    missing = kb(base_args, "sync", "x", str(tmp_path / "nowhere"), code=2)
    assert "is not a folder" in missing["error"]
    unset = kb(base_args, "sync", "x", code=2)
    assert "KB_SYNC_SOURCES" in unset["error"]
    assert "x" not in [k["name"] for k in kb(base_args, "list")]  # no knowledge base made for a bad source


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[HTTPClient, Path]]:
    folder = tmp_path / "shared-folder"
    write(folder, {"a.md": "# Alpha\n\nAlpha pumps lift water.", "b.md": "# Beta\n\nBeta valves stop it."})
    settings = Settings(data_dir=tmp_path / "data", sync_sources={"团队 docs": str(folder)})
    with live_server(settings) as (url, _app), HTTPClient(url) as client:
        client.create_kb("团队 docs")
        client.create_kb("other")
        yield client, folder


def test_the_service_syncs_its_configured_folder(service: tuple[HTTPClient, Path]) -> None:
    client, folder = service
    first = client.sync("团队 docs")
    assert (first.added, first.changed, first.deleted) == (["a.md", "b.md"], [], [])
    (folder / "b.md").unlink()
    write(folder, {"c.md": "# Gamma\n\nGamma gaskets seal joints."})
    assert client.sync("团队 docs", dry_run=True).deleted == ["b.md"]
    report = client.sync("团队 docs")
    assert (report.added, report.changed, report.deleted, report.clean) == (["c.md"], [], ["b.md"], True)
    assert {d.source for d in client.documents("团队 docs")} == {"a.md", "c.md"}
    assert client.audit("团队 docs").clean

    with pytest.raises(ClientError) as unset:
        client.sync("other")
    assert unset.value.status == 404 and "KB_SYNC_SOURCES" in str(unset.value)
    with pytest.raises(ClientError) as absent:
        client.sync("nope")
    assert absent.value.status == 404


def test_watch_keeps_syncing_until_stopped(tmp_path: Path) -> None:
    """``kb sync --watch`` in a process of its own: a file added while it runs is picked up, Ctrl-C ends it."""
    folder = tmp_path / "watched"
    write(folder, {"a.md": "# Alpha\n\nAlpha pumps."})
    env = {**os.environ, "KB_DATA_DIR": str(tmp_path / "data"), "KB_BACKEND": "milvus"}
    command = [sys.executable, "-m", "kb_service.cli.main", "sync", "w", str(folder), "--watch", "--interval", "0.2"]
    watcher = subprocess.Popen([*command, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _next_report(watcher)["added"] == ["a.md"]
        write(folder, {"b.md": "# Beta\n\nBeta valves."})
        assert _next_report(watcher)["added"] == ["b.md"]  # unchanged syncs in between print nothing
        (folder / "a.md").unlink()
        assert _next_report(watcher)["deleted"] == ["a.md"]
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert "Traceback" not in err


def _next_report(process: subprocess.Popen[str]) -> dict:  # type: ignore[type-arg]
    """The next JSON object the watcher prints (indented, so read up to its closing brace)."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "}\n":
        line = process.stdout.readline()
        assert line, f"the watcher ended: {process.stderr.read() if process.stderr else ''}"
        lines.append(line)
    return json.loads("".join(lines))  # type: ignore[no-any-return]


def test_one_sync_of_a_knowledge_base_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    write(folder, {"a.md": "# Alpha\n\nAlpha pumps."})
    with LocalClient(Settings(data_dir=tmp_path / "data")) as client:
        client.create_kb("one")
        kb = client.services.catalog.get("one")
        with client.services.sync._exclusive(kb, str(folder.resolve())):  # a sync of this folder is running
            with pytest.raises(ClientError) as busy:
                client.sync("one", folder)
            assert busy.value.status == 409 and "already running" in str(busy.value)
        assert client.sync("one", folder).added == ["a.md"]  # once it ended
