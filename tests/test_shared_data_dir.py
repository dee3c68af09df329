"""One data directory serves the running service, the CLI beside it and a LocalClient at the same time, on both
embedded backends: every process sees the others' writes, and successful commands print no traceback or warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kb_service.client import LocalClient
from tests.fixtures import write_corpus
from tests.live import kb_serve

pytestmark = pytest.mark.integration
KB = "shared dir"
QUESTION = "solar panels make electricity from sunlight"


def kb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kb_service.cli.main", *args], env=env, capture_output=True, text=True)


def quiet(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """A command that succeeded, and said nothing a user could not act on."""
    assert result.returncode == 0, result.stderr
    for noise in ("Traceback", "WARNING", "Warning:"):
        assert noise not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """``kb serve`` on a fresh data directory: the environment every process here shares, and the service's URL."""
    backend = request.param
    env = {**os.environ, "KB_BACKEND": backend, "KB_DATA_DIR": str(tmp_path / "data"), "KB_LLM_BACKEND": "none"}
    log = tmp_path / "serve.log"
    with kb_serve(env, log) as url:
        yield env, url
    served_log = log.read_text()
    assert "Traceback" not in served_log and "WARNING" not in served_log, served_log


@pytest.mark.parametrize("served", ["milvus", "pgvector"], indirect=True)
def test_the_service_the_cli_and_a_local_client_share_one_data_directory(
    served: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, url = served
    write_corpus(tmp_path / "corpus")
    report = json.loads(quiet(kb(env, "ingest", KB, str(tmp_path / "corpus"), "--json")).stdout)
    assert report["counts"]["added"] == 5

    # The service sees what the CLI wrote: the counts, and a search (its BM25 index follows the store's revision).
    assert httpx.get(f"{url}/v1/knowledge-bases/{KB}").json()["documents"] == 5
    hits = httpx.post(f"{url}/v1/knowledge-bases/{KB}/search", json={"query": QUESTION}).json()["hits"]
    assert hits[0]["source"] == "report.pdf"

    # Two commands at once, beside the service.
    commands = [["list", "--json"], ["search", KB, QUESTION, "--json"]]
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "kb_service.cli.main", *c],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    (listed, _), (found, _) = [p.communicate(timeout=300) for p in running]
    assert [p.returncode for p in running] == [0, 0]
    assert {k["name"]: k["documents"] for k in json.loads(listed)} == {KB: 5}
    assert json.loads(found)["hits"][0]["source"] == "report.pdf"
    # With the embedding reranker, whose passage vectors are stored in the background: stored before the command
    # ends, quietly.
    reranked = json.loads(quiet(kb({**env, "KB_RERANK_BACKEND": "embedding"}, "search", KB, QUESTION, "--json")).stdout)
    assert reranked["hits"][0]["source"] == "report.pdf" and "rerank" in reranked["hits"][0]["stages"]

    # A LocalClient in this process, on the same directory: it writes, the service and the CLI see it.
    with LocalClient(data_dir=env["KB_DATA_DIR"], backend=env["KB_BACKEND"]) as client:
        assert [k.name for k in client.list_kbs()] == [KB]
        [added] = client.add_texts(KB, {"pumps.md": "# Pumps\n\nCentrifugal pumps move water with an impeller."})
        assert added.outcome == "added"
        hits = httpx.post(f"{url}/v1/knowledge-bases/{KB}/search", json={"query": "centrifugal impeller"}).json()
        assert hits["hits"][0]["source"] == "pumps.md"
        docs = json.loads(quiet(kb(env, "docs", KB, "--json")).stdout)
        assert docs["total"] == 6

    deleted = httpx.delete(f"{url}/v1/knowledge-bases/{KB}/documents/{added.doc_id}")
    assert deleted.status_code == 204
    assert json.loads(quiet(kb(env, "check", KB, added.doc_id, "--json")).stdout)["clean"]
