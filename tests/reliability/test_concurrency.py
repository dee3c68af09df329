"""Load on one server over loopback HTTP: 8 concurrent uploads while 32 concurrent searches and asks run, plus
the same file uploaded twice at the same moment. Zero errors, consistent final counts, no duplicate documents."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kb_service.core.config import Settings
from tests.live import live_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOPICS = ["pumps", "valves", "hoses", "filters", "boilers", "turbines", "gaskets", "bearings"]


def text(topic: str) -> str:
    return f"# {topic.title()}\n\n" + " ".join(
        f"Maintenance note {i} about {topic}: inspect the {topic} every {i + 2} weeks and log the result."
        for i in range(40)
    )


def test_concurrent_uploads_searches_and_asks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, chunk_size=64, chunk_overlap=8, llm_backend="none")
    with live_server(settings) as (url, _app), httpx.Client(base_url=url, timeout=120) as client:
        kb = "/v1/knowledge-bases/load"
        assert client.post("/v1/knowledge-bases", json={"name": "load"}).status_code == 201
        client.post(f"{kb}/documents", json={"name": "seed.md", "text": text("seed")})

        def upload(topic: str) -> list[str]:
            r = client.post(f"{kb}/documents", files=[("files", (f"{topic}.md", text(topic).encode()))])
            assert r.status_code == 202, r.text
            return [j["id"] for j in r.json()["jobs"]]

        def query(i: int) -> int:
            if i % 2:
                r = client.post(f"{kb}/search", json={"query": f"inspect the {TOPICS[i % 8]}", "top_k": 5})
            else:
                r = client.post(f"{kb}/ask", json={"question": f"How often are {TOPICS[i % 8]} inspected?"})
            return r.status_code

        twin = [("files", ("twin.md", text("twins").encode()))]
        with ThreadPoolExecutor(48) as pool:
            uploads = [pool.submit(upload, t) for t in TOPICS]
            twins = [pool.submit(client.post, f"{kb}/documents", files=twin) for _ in range(2)]
            queries = [pool.submit(query, i) for i in range(32)]
            statuses = [q.result() for q in queries]
            job_ids = [j for u in uploads for j in u.result()] + [t.result().json()["jobs"][0]["id"] for t in twins]
        assert statuses == [200] * 32

        deadline = time.monotonic() + 300
        while True:
            jobs = [client.get(f"/v1/jobs/{j}").json() for j in job_ids]
            if all(j["status"] in ("ready", "failed") for j in jobs):
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [j["status"] for j in jobs] == ["ready"] * 10
        assert sorted(j["outcome"] for j in jobs[-2:]) == ["added", "unchanged"]  # the twin is stored once
        docs = client.get(f"{kb}/documents").json()
        assert docs["total"] == 1 + 8 + 1 and len({d["id"] for d in docs["documents"]}) == docs["total"]
        audit = client.get(f"{kb}/audit").json()
        assert audit["clean"] and audit["chunks"] == sum(d["chunk_count"] for d in docs["documents"])
        hit = client.post(f"{kb}/search", json={"query": "inspect the turbines", "top_k": 1}).json()["hits"][0]
        assert hit["source"] == "turbines.md"
