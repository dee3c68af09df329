"""Hostile and broken input through the real app: each gets a clear 4xx (or, for content only a parser can judge,
a failed job naming the reason) and writes nothing; text in legacy encodings parses. Real files from
../shared/data/documents where they fit."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.core.config import Settings
from tests.conftest import SHARED_DATA, needs_shared
from tests.fixtures import make_docx

pytestmark = pytest.mark.integration
KB = "/v1/knowledge-bases/hostile"
DOCS = f"{KB}/documents"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("hostile"), chunk_size=64, chunk_overlap=8)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/knowledge-bases", json={"name": "hostile"}).status_code == 201
        yield c


def wait(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("ready", "failed"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


def state(client: TestClient) -> tuple[int, int]:
    audit = client.get(f"{KB}/audit").json()
    return sum(audit["documents"].values()) - audit["documents"].get("failed", 0), audit["chunks"]


def zip_bomb() -> bytes:
    """A DOCX-shaped archive whose document.xml declares 2 GiB of zeros (streamed, ~2 MB compressed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        with zf.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(2048):
                member.write(block)
    return buf.getvalue()


def test_a_zip_bomb_is_refused_at_upload_without_expanding_it(client: TestClient) -> None:
    before = state(client)
    bomb = zip_bomb()
    assert len(bomb) < 5 << 20
    r = client.post(DOCS, files=[("files", ("report.docx", bomb, "application/octet-stream"))])
    assert r.status_code == 422 and "zip bomb" in r.json()["error"]["message"], r.text
    assert state(client) == before


def test_an_upload_of_200_mb_beyond_the_limit_is_413(client: TestClient) -> None:
    before = state(client)
    r = client.post(DOCS, files=[("files", ("huge.txt", b"a" * (200 << 20), "text/plain"))])
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]["message"]
    assert state(client) == before


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("binary.txt", bytes(range(256)) * 64, "binary"),
        ("broken.docx", b"PK\x03\x04" + b"\0" * 100, "corrupt"),
        ("truncated.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >>", "corrupt"),
    ],
)
def test_broken_files_are_refused_with_the_reason_and_write_nothing(
    client: TestClient, name: str, data: bytes, reason: str
) -> None:
    before = state(client)
    r = client.post(DOCS, files=[("files", (name, data, "application/octet-stream"))])
    if r.status_code == 202:  # judged by the parser: the job fails with the reason
        job = wait(client, r.json()["jobs"][0]["id"])
        assert job["status"] == "failed" and reason in (job["reason"] + job["error"]).lower(), job
    else:
        assert r.status_code == 422 and reason in r.text.lower(), r.text
    assert state(client) == before


def test_corrupted_real_docx_fails_cleanly(client: TestClient) -> None:
    good = make_docx([("h1", "Pumps"), ("p", "The pump moves water uphill.")])
    broken = good[: len(good) // 2]  # truncated: the central directory is gone
    before = state(client)
    r = client.post(DOCS, files=[("files", ("half.docx", broken, "application/octet-stream"))])
    assert r.status_code == 422 and "corrupt" in r.text, r.text
    assert state(client) == before


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("utf-16", "Grüße aus Köln: the pump restarts in 5 s."), ("cp1252", "Café crème – price 5 € “quoted”.")],
)
def test_legacy_encodings_parse(client: TestClient, encoding: str, text: str) -> None:
    data = text.encode(encoding)
    r = client.post(DOCS, files=[("files", (f"{encoding}.txt", data, "text/plain"))])
    job = wait(client, r.json()["jobs"][0]["id"])
    assert job["status"] == "ready", job
    hit = client.post(f"{KB}/search", json={"query": text, "top_k": 1}).json()["hits"][0]
    assert hit["source"] == f"{encoding}.txt" and text.split()[0] in hit["text"]


@pytest.mark.parametrize(
    ("filename", "stored"),
    [("../../etc/passwd.txt", "passwd.txt"), ("C:\\Users\\x\\..\\notes.txt", "notes.txt"), ("/abs/ok.md", "ok.md")],
)
def test_path_traversal_names_keep_only_the_file_name(client: TestClient, filename: str, stored: str) -> None:
    r = client.post(DOCS, files=[("files", (filename, f"content of {stored}".encode(), "text/plain"))])
    assert r.status_code == 202 and r.json()["jobs"][0]["source"] == stored
    assert wait(client, r.json()["jobs"][0]["id"])["status"] == "ready"


@pytest.mark.parametrize("filename", ["a\x00b.txt", "bell\x07.txt", "..", "   ", "new\nline.txt"])
def test_control_characters_and_empty_names_are_refused(client: TestClient, filename: str) -> None:
    before = state(client)
    r = client.post(DOCS, json={"name": filename, "text": "x"})
    assert r.status_code == 422 and "name" in r.json()["error"]["message"], r.text
    assert state(client) == before


@pytest.mark.parametrize(
    "name", ["a/b", "..", "a\x00b", "   ", "", "x" * 300, "semi;colon'", "\u2800", "\u3164\u3164", "\u0301", "\u0301a"]
)
def test_bad_knowledge_base_names_are_refused(client: TestClient, name: str) -> None:
    before = [k["name"] for k in client.get("/v1/knowledge-bases").json()]
    r = client.post("/v1/knowledge-bases", json={"name": name})
    if name == "semi;colon'":  # unusual but harmless: stored and used verbatim (parameters, never SQL text)
        assert r.status_code == 201 and client.delete("/v1/knowledge-bases/semi%3Bcolon'").status_code == 204
        return
    assert r.status_code == 422 and r.json()["error"]["message"], r.text
    assert [k["name"] for k in client.get("/v1/knowledge-bases").json()] == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query must not be empty"),
        ({"query": "pump " * 1000}, "query"),
        ({"query": 42}, "query"),
        ([1, 2], "body"),
    ],
)
def test_empty_long_and_malformed_queries(client: TestClient, body: Any, message: str) -> None:
    r = client.post(f"{KB}/search", json=body)
    assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
    r = client.post(f"{KB}/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post(f"{KB}/search", content=b"query=x", headers={"content-type": "text/plain"})
    assert r.status_code == 422


@needs_shared
def test_real_broken_files_from_the_shared_documents(client: TestClient) -> None:
    """Every real file the shared folder marks as hostile or broken is refused with a reason, nothing written."""
    candidates = [p for p in (SHARED_DATA / "documents").rglob("*") if p.is_file() and _broken(p)]
    if not candidates:
        pytest.skip("no broken files among the shared documents")
    before = state(client)
    for path in candidates:
        r = client.post(DOCS, files=[("files", (path.name, path.read_bytes(), "application/octet-stream"))])
        if r.status_code == 202:
            job = wait(client, r.json()["jobs"][0]["id"])
            assert job["status"] == "failed" and job["reason"], (path, job)
        else:
            assert 400 <= r.status_code < 500, (path, r.text)
    assert state(client) == before


def _broken(path: Path) -> bool:
    name = path.name.lower()
    return any(k in name for k in ("password", "encrypted", "corrupt", "broken", "malformed", "invalid"))


def payloads(client: TestClient) -> list[str]:
    folder = client.app.state.settings.data_dir / "jobs" / "payloads"  # type: ignore[attr-defined]
    return sorted(p.name for p in folder.iterdir())


DEEP = '{"a": ' * 500 + "1" + "}" * 500


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (DEEP, "metadata 'a' must be a string, a number or a boolean, not dict"),
        ("[" * 100_000, "metadata is nested too deeply"),
        ("{" * 5_000, "metadata is not valid JSON"),
        ('{"a": NaN}', "metadata may not contain NaN"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        (
            '{"blob": "'
            + "x" * 2_000
            + '", "more": "'
            + "y" * 2_000
            + '", "m": "'
            + "z" * 2_000
            + '", "n": "'
            + "w" * 2_000
            + '", "o": "'
            + "v" * 2_000
            + '"}',
            "the limit is 8192",
        ),
    ],
)
def test_bad_upload_metadata_is_refused_and_leaves_nothing(client: TestClient, metadata: str, message: str) -> None:
    before, kept = state(client), payloads(client)
    r = client.post(DOCS, files=[("files", ("m.txt", b"metadata test"))], data={"metadata": metadata})
    assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
    lone = '{"name": "m.txt", "text": "metadata test", "metadata": {"a": "\\ud800"}}'  # a JSON escape
    r = client.post(DOCS, content=lone, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert state(client) == before and payloads(client) == kept
    assert client.get(DOCS).status_code == 200 and client.post(f"{KB}/search", json={"query": "x"}).status_code == 200


@pytest.mark.parametrize(
    "where", [{"page": "abc"}, {"page": True}, {"team": "a\u0001b"}, {"n": 2**63}, {"page": -1}, {"doc_id": 1}]
)
def test_filters_of_the_wrong_type_are_422(client: TestClient, where: dict[str, Any]) -> None:
    r = client.post(f"{KB}/search", json={"query": "pumps", "filters": where})
    assert r.status_code == 422 and "filter" in r.json()["error"]["message"], r.text


def test_nan_and_infinity_in_json_bodies_are_refused(client: TestClient) -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = '{"query": "pumps", "filters": {"n": ' + constant + "}}"
        r = client.post(f"{KB}/search", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (constant, r.status_code, r.text)


@pytest.mark.parametrize("doc_id", ["it's", "back\\slash", "\\'", 'q"uote', "nul%00", "ctl%14%C3%83", "x" * 300])
def test_ids_with_quotes_in_urls_are_404(client: TestClient, doc_id: str) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, f"{DOCS}/{doc_id}")
        assert r.status_code == 404, (method, r.text)
    assert client.get(f"{DOCS}/{doc_id}/residue").json()["clean"]


def test_a_json_body_beyond_the_limit_is_413_before_it_is_parsed(client: TestClient) -> None:
    limit = client.app.state.settings.api.max_json_bytes  # type: ignore[attr-defined]
    big = b'{"query": "' + b"x" * limit + b'"}'
    r = client.post(f"{KB}/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"query": "'
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536
        yield b'"}'

    r = client.post(f"{KB}/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
