"""Races on a live server over loopback, on both stores: a delete during an ingest, a drop during an ingest (with a
new knowledge base of the same name), hybrid searches during replaces. Each is a loop bounded in time that counts
the runs that went wrong; every count must be 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kb_service.core.config import Settings
from kb_service.ingest.sources import SourceItem
from tests.conftest import BACKENDS
from tests.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUNS = 3
MAX_RUNS = 8  # runs of the delete race, until RUNS of them raced


def long_text(tag: str, paragraphs: int = 800) -> str:
    return "\n\n".join(f"Paragraph {i} of {tag}: the pump in bay {i % 17} was inspected." for i in range(paragraphs))


@contextmanager
def server(tmp_path: Path, backend: str, pg_dsn: str) -> Iterator[httpx.Client]:
    extra = {"pg_dsn": pg_dsn} if backend == "pgvector" else {}
    settings = Settings(data_dir=tmp_path, backend=backend, chunk_size=32, chunk_overlap=0, llm_backend="none", **extra)
    with live_server(settings) as (url, _app), httpx.Client(base_url=url, timeout=120) as client:
        yield client


def wait_for(client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 300) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.005)
    return job  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_delete_during_an_ingest_wins(tmp_path: Path, backend: str, pg_dsn: str) -> None:
    """DELETE answers 204 while the job is storing: afterwards nothing of the document is left (row, chunks,
    lexical entries), the audit is clean, and uploading the same content again adds it."""
    with server(tmp_path, backend, pg_dsn) as client:
        lost = raced = run = 0
        while raced < RUNS and run < MAX_RUNS:
            run += 1
            kb = f"/v1/knowledge-bases/del{run}"
            client.post("/v1/knowledge-bases", json={"name": f"del{run}"}).raise_for_status()
            text = long_text(f"run {run}")
            doc_id = SourceItem("big.txt", text=text).parse().content_hash
            job = client.post(f"{kb}/documents", json={"name": "big.txt", "text": text}).json()["jobs"][0]
            wait_for(client, job["id"], {"storing", "ready", "failed"})
            while (deleted := client.delete(f"{kb}/documents/{doc_id}")).status_code == 404:
                if client.get(f"/v1/jobs/{job['id']}").json()["status"] in ("ready", "failed"):
                    break
            assert deleted.status_code in (204, 404), deleted.text
            finished = wait_for(client, job["id"], {"ready", "failed"})
            if deleted.status_code != 204:
                continue  # the ingest finished before any delete found the document: no race this time
            residue = client.get(f"{kb}/documents/{doc_id}/residue").json()
            audit = client.get(f"{kb}/audit").json()
            if not (residue["clean"] and audit["clean"] and audit["chunks"] == 0):
                lost += 1
                continue
            if finished["status"] == "failed":  # the delete landed during the ingest
                assert finished["reason"] == "deleted", finished
                raced += 1
            # else it landed just after the publish, before the job said so: an ordinary delete
            again = client.post(f"{kb}/documents", json={"name": "big.txt", "text": text}).json()["jobs"][0]
            assert wait_for(client, again["id"], {"ready", "failed"})["outcome"] == "added"
            hits = client.post(f"{kb}/search", json={"query": f"paragraph of run {run}", "top_k": 3}).json()["hits"]
            assert hits and hits[0]["doc_id"] == doc_id
        assert lost == 0, f"a delete during the ingest was lost in {lost} of {run} runs"
        assert raced >= 1, f"no delete landed during an ingest in {run} runs: the race was not exercised"


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropping_a_kb_stops_its_ingest(tmp_path: Path, backend: str, pg_dsn: str) -> None:
    """The running job and the one queued behind it both fail; the knowledge base created under the same name
    meanwhile receives nothing."""
    with server(tmp_path, backend, pg_dsn) as client:
        leaked = 0
        for run in range(RUNS):
            name = f"tenant{run}"
            kb = f"/v1/knowledge-bases/{name}"
            client.post("/v1/knowledge-bases", json={"name": name}).raise_for_status()
            running = client.post(f"{kb}/documents", json={"name": "a.txt", "text": long_text("a")}).json()
            queued = client.post(f"{kb}/documents", json={"name": "b.txt", "text": long_text("b", 50)}).json()
            jobs = [running["jobs"][0]["id"], queued["jobs"][0]["id"]]
            wait_for(client, jobs[0], {"embedding", "storing", "ready", "failed"})
            assert client.delete(kb).status_code == 204
            client.post("/v1/knowledge-bases", json={"name": name}).raise_for_status()
            finished = [wait_for(client, j, {"ready", "failed"}) for j in jobs]
            documents = client.get(f"{kb}/documents").json()["total"]
            if documents or any(j["status"] == "ready" for j in finished):
                leaked += 1
                continue
            assert {j["reason"] for j in finished} == {"knowledge_base_dropped"}, finished
            assert client.get(f"{kb}/audit").json()["clean"]
            assert client.post(f"{kb}/search", json={"query": "pump inspected"}).json()["hits"] == []
        assert leaked == 0, f"an ingest reached the successor in {leaked} of {RUNS} runs"


def versions(n: int) -> str:
    """Version ``n`` of one manual: the same words throughout, and its number in every paragraph."""
    return "\n\n".join(
        f"Revision {n}. Pump maintenance step {i}: check the seal and the bearing, then log revision {n}."
        for i in range(12)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hybrid_search_sees_one_version_during_replaces(tmp_path: Path, backend: str, pg_dsn: str) -> None:
    """A loop of replaces of one file while hybrid searches run: every search's hits come from one version."""
    with server(tmp_path, backend, pg_dsn) as client:
        kb = "/v1/knowledge-bases/manual"
        client.post("/v1/knowledge-bases", json={"name": "manual"}).raise_for_status()
        first = client.post(f"{kb}/documents", json={"name": "manual.txt", "text": versions(0)}).json()
        wait_for(client, first["jobs"][0]["id"], {"ready"})
        done = threading.Event()

        def replace_loop() -> None:
            try:
                for n in range(1, 13):
                    job = client.post(f"{kb}/documents", json={"name": "manual.txt", "text": versions(n)}).json()
                    wait_for(client, job["jobs"][0]["id"], {"ready"})
            finally:
                done.set()

        writer = threading.Thread(target=replace_loop)
        writer.start()
        searches, mixed = 0, 0
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            body = {"query": "pump maintenance seal bearing", "top_k": 10, "mode": "hybrid", "rerank": False}
            r = client.post(f"{kb}/search", json=body)
            assert r.status_code == 200, r.text
            searches += 1
            mixed += len({h["doc_id"] for h in r.json()["hits"]}) > 1
        writer.join()
        assert searches >= 10
        assert mixed == 0, f"{mixed} of {searches} hybrid searches mixed two versions"
