"""API keys: 401 without a valid key, 403 outside a key's scope, on every endpoint that touches a knowledge base
(search, ask, documents, jobs, chat completions, models, listing); keys never appear in logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

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
            c.post(
                f"/v1/knowledge-bases/{name}/documents",
                json={"name": "n.txt", "text": f"secret plans of team {name}"},
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
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
    models = [m["id"] for m in client.get("/v1/models", headers=as_(SCOPED)).json()["data"]]
    assert models == ["kb:A"]
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
