"""API keys: 401 without a valid key, 403 outside a key's scope, on every endpoint that touches a knowledge base
(search, ask, documents, jobs, chat completions, models, listing); keys never appear in logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.core.config import ApiKey, Settings

pytestmark = pytest.mark.integration

ADMIN = "admin-key-0123456789abcdef"
SCOPED = "scoped-key-0123456789abcdef"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("auth"),
        llm_backend="none",
        api_keys=[ApiKey(key=ADMIN, name="admin"), ApiKey(key=SCOPED, name="team-a", kbs=["A"])],
    )
    with TestClient(create_app(settings)) as c:
        for name in ("A", "B"):
            r = c.post("/v1/knowledge-bases", json={"name": name}, headers={"X-API-Key": ADMIN})
            assert r.status_code == 201, r.text
            job = c.post(
                f"/v1/knowledge-bases/{name}/documents",
                json={"name": "n.txt", "text": f"secret plans of team {name}"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            ).json()["jobs"][0]["id"]
            while c.get(f"/v1/jobs/{job}", headers=as_(ADMIN)).json()["status"] not in ("ready", "failed"):
                time.sleep(0.05)
        yield c


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_or_a_wrong_key_is_401_and_health_stays_open(client: TestClient) -> None:
    r = client.get("/v1/knowledge-bases")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "an API key is required" in r.json()["error"]["message"]
    bad = client.get("/v1/knowledge-bases", headers=as_("wrong-key-0123456789"))
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "the API key is not valid"
    assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/knowledge-bases/B", None),
        ("delete", "/v1/knowledge-bases/B", None),
        ("post", "/v1/knowledge-bases/B/search", {"query": "plans"}),
        ("post", "/v1/knowledge-bases/B/ask", {"question": "what plans?"}),
        ("get", "/v1/knowledge-bases/B/documents", None),
        ("post", "/v1/knowledge-bases/B/documents", {"name": "x.txt", "text": "y"}),
        ("get", f"/v1/knowledge-bases/B/documents/{'0' * 64}", None),
        ("put", f"/v1/knowledge-bases/B/documents/{'0' * 64}", {"name": "x.txt", "text": "y"}),
        ("delete", f"/v1/knowledge-bases/B/documents/{'0' * 64}", None),
        ("get", f"/v1/knowledge-bases/B/documents/{'0' * 64}/residue", None),
        ("get", "/v1/knowledge-bases/B/audit", None),
        ("post", "/v1/knowledge-bases/B/sync", {"dry_run": True}),
        ("get", f"/v1/knowledge-bases/B/documents/{'0' * 64}/file", None),
        ("get", f"/v1/knowledge-bases/B/documents/{'0' * 64}/pages/1.png", None),
        ("post", "/v1/chat/completions", {"model": "kb:B", "messages": [{"role": "user", "content": "plans?"}]}),
        ("post", "/v1/knowledge-bases", {"name": "C"}),
    ],
)
def test_a_scoped_key_is_refused_outside_its_scope(client: TestClient, method: str, path: str, body: object) -> None:
    r = client.request(method, path, json=body, headers=as_(SCOPED))
    assert r.status_code == 403, r.text
    assert "API key 'team-a' may not use knowledge base" in r.json()["error"]["message"]


def test_a_scoped_key_sees_and_uses_only_its_knowledge_bases(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert [kb["name"] for kb in client.get("/v1/knowledge-bases", headers=as_(SCOPED)).json()] == ["A"]
    models = client.get("/v1/models", headers=as_(SCOPED)).json()["data"]
    assert [m["id"] for m in models if m["kind"] == "knowledge_base"] == ["kb:A"]
    assert {m["kind"] for m in models} == {"knowledge_base", "embedding"}  # no LLM configured here
    hits = client.post("/v1/knowledge-bases/A/search", json={"query": "plans"}, headers=as_(SCOPED)).json()["hits"]
    assert hits and all("team A" in h["text"] for h in hits)
    answer = client.post("/v1/knowledge-bases/A/ask", json={"question": "plans?"}, headers=as_(SCOPED)).json()
    assert answer["mode"] == "extractive" and "team A" in answer["answer"]

    job = client.post("/v1/knowledge-bases/B/documents", json={"name": "z.txt", "text": "b"}, headers=as_(ADMIN))
    job_id = job.json()["jobs"][0]["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=as_(SCOPED)).status_code == 403
    assert client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": ADMIN}).status_code == 200
    assert ADMIN not in caplog.text and SCOPED not in caplog.text


def test_keys_are_validated_at_start_up() -> None:
    with pytest.raises(ValueError, match="API keys must be at least 16 characters long"):
        Settings(api_keys=[{"key": "short"}])  # type: ignore[list-item]


def test_a_request_without_a_key_is_refused_before_its_body_is_read(client: TestClient) -> None:
    sent = 0

    def body() -> Iterator[bytes]:  # 300 MB if it were all read
        nonlocal sent
        for _ in range(300):
            sent += 1
            yield b"x" * 1_000_000

    r = client.post("/v1/knowledge-bases/A/search", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["message"].startswith("an API key is required")
    assert sent < 300  # refused before the body was read
    r = client.post("/v1/knowledge-bases/A/search", content=b"{}", headers={"X-API-Key": "wrong" * 4})
    assert r.status_code == 401 and r.json()["error"]["message"] == "the API key is not valid"


def test_the_schema_and_docs_need_a_key_unless_made_public(tmp_path: Path) -> None:
    keys = [ApiKey(key=ADMIN, name="admin")]
    with TestClient(create_app(Settings(data_dir=tmp_path / "closed", llm_backend="none", api_keys=keys))) as c:
        for path in ("/openapi.json", "/docs"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=as_(ADMIN)).status_code == 200
        assert c.get("/health").status_code == 200
    public = Settings(data_dir=tmp_path / "open", llm_backend="none", api_keys=keys, api_public_docs=True)
    with TestClient(create_app(public)) as c:
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
        assert c.get("/v1/knowledge-bases").status_code == 401


def test_a_scope_matches_any_unicode_spelling_of_its_name(tmp_path: Path) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"  # one name, two spellings
    keys = [ApiKey(key=ADMIN, name="admin"), ApiKey(key=SCOPED, name="cafe", kbs=[nfd])]
    with TestClient(create_app(Settings(data_dir=tmp_path, llm_backend="none", api_keys=keys))) as c:
        assert c.post("/v1/knowledge-bases", json={"name": nfd}, headers=as_(ADMIN)).json()["name"] == nfc
        for spelling in (nfc, nfd):
            assert c.get(f"/v1/knowledge-bases/{spelling}", headers=as_(SCOPED)).status_code == 200
