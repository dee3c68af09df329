"""A clean stop of ``kb serve`` by a service manager (SIGTERM) stops what the service started: the embedded
PostgreSQL goes with its last user, and the exit is quiet."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.live import kb_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def postgres_on(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_sigterm_stops_the_embedded_postgres(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "KB_DATA_DIR": str(data), "KB_BACKEND": "pgvector", "KB_LLM_BACKEND": "none"}
    log = tmp_path / "serve.log"
    with kb_serve(env, log, stop=signal.SIGTERM) as url:
        assert httpx.post(f"{url}/v1/knowledge-bases", json={"name": "t"}).status_code == 201
        assert postgres_on(data)
    deadline = time.monotonic() + 30
    while postgres_on(data) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not postgres_on(data), "the embedded PostgreSQL outlived its last user"
    assert "Traceback" not in log.read_text() and "Finished server process" in log.read_text()
