"""The server itself is SIGKILLed in the middle of ingesting a batch of real documents, then started again: its
jobs survive (the journal), the interrupted ones are resumed from the kept uploads, start-up recovery removes the
half-written documents, and the end state is exactly what an uninterrupted run gives. Both stores."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SHARED_DATA, needs_shared

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_shared]
ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    "unstructured/norwich-city.txt",
    "unstructured/example-10k-1p.html",
    "docling/html/groundtruth_md/wiki_duck.html.md",
    "chatchat_zh/test.txt",
    "docling/pdf/groundtruth_md/redp5110_sampled.md",
    "chatchat_zh/大模型技术栈-算法与原理.md",
    "docling/pdf/groundtruth_md/normal_4pages.md",
    "unstructured/example-steelJIS-datasheet.html",
]


def start(env: dict[str, str], port: int) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from kb_service.cli.main import app; app()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if client.get("/ready").status_code == 200:
                return proc, client
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "the server exited"
        time.sleep(0.3)
    raise TimeoutError("the server did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("backend", ["milvus", "pgvector"])
def test_sigkill_mid_batch_then_restart_resumes_and_leaves_nothing_half_written(
    backend: str, tmp_path: Path, pg_dsn: str
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KB_BACKEND": backend, "KB_DATA_DIR": str(tmp_path)}
    env |= {"KB_PG_DSN": pg_dsn} if backend == "pgvector" else {}
    env |= {"KB_LLM_BACKEND": "none", "KB_INGEST_BATCH_CHUNKS": "64"}  # several store writes per batch
    kb = f"crash-{backend}-{tmp_path.name[-12:]}"
    port = free_port()
    proc, client = start(env, port)
    try:
        assert client.post("/v1/knowledge-bases", json={"name": kb}).status_code == 201
        url = f"/v1/knowledge-bases/{kb}"
        files = [("files", (Path(d).name, (SHARED_DATA / "documents" / d).read_bytes())) for d in DOCS]
        jobs = [j["id"] for j in client.post(f"{url}/documents", files=files).json()["jobs"]]
        deadline = time.monotonic() + 300
        while True:  # kill once some documents are ready and others are still being written
            states = [client.get(f"/v1/jobs/{j}").json()["status"] for j in jobs]
            if "ready" in states and any(s not in ("ready", "failed") for s in states):
                break
            assert time.monotonic() < deadline and not all(s == "ready" for s in states), states
            time.sleep(0.05)
        ready_before = {
            d["source"]: (d["id"], d["chunk_count"])
            for d in client.get(f"{url}/documents", params={"status": "ready"}).json()["documents"]
        }
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        client.close()
    assert 0 < len(ready_before) < len(DOCS)

    proc, client = start(env, free_port())
    try:
        deadline = time.monotonic() + 600
        while True:  # the same job ids answer after the restart, and the interrupted ones run again
            finished = [client.get(f"/v1/jobs/{j}").json() for j in jobs]
            if all(j["status"] in ("ready", "failed") for j in finished):
                break
            assert time.monotonic() < deadline, finished
            time.sleep(0.3)
        assert [j["status"] for j in finished] == ["ready"] * len(DOCS), finished
        docs = client.get(f"{url}/documents").json()["documents"]
        assert {d["status"] for d in docs} == {"ready"} and len(docs) == len(DOCS)
        after = {d["source"]: (d["id"], d["chunk_count"]) for d in docs}
        assert all(after[s] == v for s, v in ready_before.items())  # what was ready before is intact
        audit = client.get(f"{url}/audit").json()
        print(f"\n[{backend}] server SIGKILL: ready before {len(ready_before)}/{len(DOCS)}, after {audit}")
        assert audit["clean"] and audit["leftover_chunks"] == 0, audit
        assert audit["chunks"] == sum(c for _, c in after.values())
        hits = client.post(f"{url}/search", json={"query": "Norwich City football club", "top_k": 3}).json()["hits"]
        assert hits and hits[0]["source"] == "norwich-city.txt"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        client.close()
