"""A dependency going away: PostgreSQL stopped under a running service → 503 with a message from /ready and the
endpoints that need it; started again → the service recovers by itself. (LLM server down or slow → 502/504 and
the extractive fallback: tests/generation/test_answers.py.) Search keeps working with the LLM down."""

from __future__ import annotations

import time
from pathlib import Path

import pgserver
import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.core.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KB = "/v1/knowledge-bases/deps"


def test_postgres_down_then_back(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    server = pgserver.get_server(pgdata)
    uri = server.get_uri()
    settings = Settings(
        backend="pgvector",
        pg_dsn=uri,
        data_dir=tmp_path / "data",
        chunk_size=64,
        chunk_overlap=8,
        llm_backend="openai",
        llm_api_base="http://127.0.0.1:9/v1",  # nothing listens: the LLM is down for the whole test
        llm_timeout_s=2,
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/knowledge-bases", json={"name": "deps"}).status_code == 201
        r = client.post(f"{KB}/documents", json={"name": "a.md", "text": "The check valve allows one-way flow."})
        job = r.json()["jobs"][0]["id"]
        for _ in range(300):
            if client.get(f"/v1/jobs/{job}").json()["status"] == "ready":
                break
            time.sleep(0.1)
        search = {"query": "one-way flow valve"}
        assert client.post(f"{KB}/search", json=search).json()["hits"][0]["source"] == "a.md"
        # The LLM is down: ask falls back to an extractive answer (or 502 without the fallback); search works.
        answer = client.post(f"{KB}/ask", json={"question": "What allows one-way flow?"}).json()
        assert answer["mode"] == "extractive" and answer["llm_error"]

        server.cleanup()  # PostgreSQL stops under the running service
        ready = client.get("/ready")
        assert ready.status_code == 503 and "PostgreSQL" in ready.json()["store"]
        for method, path, body in [
            ("POST", f"{KB}/search", search),
            ("GET", f"{KB}/documents", None),
            ("POST", f"{KB}/documents", {"name": "b.md", "text": "x"}),
            ("GET", "/v1/knowledge-bases", None),
        ]:
            r = client.request(method, path, json=body)
            assert r.status_code == 503 and "unreachable" in r.json()["error"]["message"], (path, r.text)
        assert client.get("/health").status_code == 200  # the process itself is alive

        restarted = pgserver.get_server(pgdata)  # back on the same socket
        try:
            assert restarted.get_uri() == uri
            deadline = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the service did not recover"
                time.sleep(0.5)
            assert client.post(f"{KB}/search", json=search).json()["hits"][0]["source"] == "a.md"
            assert client.get(f"{KB}/audit").json()["clean"]
        finally:
            restarted.cleanup()
