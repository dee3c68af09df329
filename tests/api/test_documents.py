"""Documents over HTTP: multipart and JSON uploads answered 202 with jobs that run in the background, job
status, identical content as a no-op, listing, replacement, deletion, and clear 4xx for bad uploads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.core.config import Settings
from kb_service.ingest.pipeline import Ingestor
from tests.conftest import DOCUMENTS, needs_shared
from tests.fixtures import make_docx, make_pdf

pytestmark = pytest.mark.integration

KB = "文档 docs"
DOCS = "/v1/knowledge-bases/%E6%96%87%E6%A1%A3%20docs/documents"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("docs"),
        chunk_size=64,
        chunk_overlap=8,
        llm_backend="none",
        max_file_bytes=200_000,
    )
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/knowledge-bases", json={"name": KB}).status_code == 201
        yield c


def wait(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("ready", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_multipart_upload_runs_jobs_to_ready_and_identical_content_is_a_no_op(client: TestClient) -> None:
    files = [
        ("files", ("report.pdf", make_pdf(["Quarterly report", "Revenue grew by 12 percent."]), "application/pdf")),
        (
            "files",
            (
                "notes.docx",
                make_docx([("h1", "Notes"), ("p", "Pumps need oil every month.")]),
                "application/octet-stream",
            ),
        ),
    ]
    r = client.post(DOCS, files=files, data={"metadata": '{"team": "ops"}'})
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["source"] for j in jobs] == ["report.pdf", "notes.docx"] and jobs[0]["status"] == "queued"
    done = [wait(client, j["id"]) for j in jobs]
    assert [(j["status"], j["outcome"]) for j in done] == [("ready", "added"), ("ready", "added")]
    doc = client.get(f"{DOCS}/{done[0]['doc_id']}").json()
    assert doc["status"] == "ready" and doc["chunk_count"] == done[0]["chunks"] >= 1
    assert doc["metadata"]["team"] == "ops" and doc["summary"] and len(doc["id"]) == 64

    again = client.post(DOCS, files=files[:1]).json()["jobs"][0]
    assert wait(client, again["id"])["outcome"] == "unchanged"
    page = client.get(DOCS, params={"status": "ready", "limit": 1}).json()
    assert page["total"] == 2 and len(page["documents"]) == 1


def test_json_upload_replace_and_delete(client: TestClient) -> None:
    job = client.post(DOCS, json={"name": "faq.txt", "text": "The warranty lasts two years.", "metadata": {"v": 1}})
    assert job.status_code == 202
    first = wait(client, job.json()["jobs"][0]["id"])
    assert first["status"] == "ready"
    hit = client.post(DOCS.replace("/documents", "/search"), json={"query": "warranty", "mode": "lexical"}).json()
    assert hit["hits"][0]["doc_id"] == first["doc_id"]

    new = client.put(
        f"{DOCS}/{first['doc_id']}", json={"name": "ignored.txt", "text": "The warranty lasts five years."}
    )
    replaced = wait(client, new.json()["jobs"][0]["id"])
    assert replaced["outcome"] == "replaced" and replaced["replaced"] == first["doc_id"]
    assert client.get(f"{DOCS}/{first['doc_id']}").status_code == 404
    replacement = client.get(f"{DOCS}/{replaced['doc_id']}").json()
    assert replacement["source"] == "faq.txt" and replacement["metadata"]["v"] == 1  # the metadata carries over

    newer = client.put(
        f"{DOCS}/{replaced['doc_id']}",
        json={"name": "faq.txt", "text": "The warranty lasts six years.", "metadata": {"v": 2, "team": "ops"}},
    )
    newest = wait(client, newer.json()["jobs"][0]["id"])  # given metadata is laid over the old
    assert client.get(f"{DOCS}/{newest['doc_id']}").json()["metadata"] == {"v": 2, "team": "ops"}
    replaced = newest

    present = client.get(f"{DOCS}/{replaced['doc_id']}/residue").json()
    assert present["document"] == "ready" and present["chunks"] >= 1 and present["lexical_entries"] >= 1
    assert present["original_files"] == 1
    assert not present["clean"]
    assert client.delete(f"{DOCS}/{replaced['doc_id']}").status_code == 204
    assert client.get(f"{DOCS}/{replaced['doc_id']}").status_code == 404
    gone = client.get(f"{DOCS}/{replaced['doc_id']}/residue").json()  # proof of deletion
    assert gone == {
        "doc_id": replaced["doc_id"], "document": None, "chunks": 0, "lexical_entries": 0, "original_files": 0,
        "clean": True,
    }  # fmt: skip
    audit = client.get(DOCS.replace("/documents", "/audit")).json()
    assert audit["clean"] and audit["leftover_chunks"] == 0
    after = client.post(DOCS.replace("/documents", "/search"), json={"query": "warranty", "mode": "lexical"}).json()
    assert all(h["doc_id"] != replaced["doc_id"] for h in after["hits"])
    assert client.delete(f"{DOCS}/{replaced['doc_id']}").status_code == 404


def test_path_components_are_stripped_from_file_names(client: TestClient) -> None:
    r = client.post(DOCS, files=[("files", ("../../etc/passwd.txt", b"root:x:0:0", "text/plain"))])
    job = wait(client, r.json()["jobs"][0]["id"])
    assert job["source"] == "passwd.txt" and job["status"] == "ready"
    assert client.delete(f"{DOCS}/{job['doc_id']}").status_code == 204


def test_queries_are_answered_while_a_large_document_is_being_ingested(client: TestClient) -> None:
    text = "\n\n".join(
        f"Section {i}. Turbine blade {i} needs inspection every {i % 12 + 1} months." for i in range(1200)
    )
    r = client.post(DOCS, json={"name": "large.txt", "text": text})
    assert r.status_code == 202, r.text
    job_id = r.json()["jobs"][0]["id"]
    search = client.post(DOCS.replace("/documents", "/search"), json={"query": "pumps need oil", "mode": "lexical"})
    assert search.status_code == 200
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] not in ("ready", "failed")  # still working meanwhile
    seen = set()
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("ready", "failed"):
        seen.add((job["status"], job["chunks"]))
        time.sleep(0.05)
    assert any(status in ("embedding", "storing") and chunks > 100 for status, chunks in seen), seen
    assert wait(client, job_id, timeout=600)["status"] == "ready"


def test_a_broken_file_fails_its_job_with_the_reason(client: TestClient) -> None:
    r = client.post(DOCS, files=[("files", ("broken.pdf", b"%PDF-1.4 not really a pdf", "application/pdf"))])
    job = wait(client, r.json()["jobs"][0]["id"])
    assert job["status"] == "failed" and job["reason"] == "corrupt" and job["error"]


@needs_shared
def test_an_encrypted_pdf_from_the_shared_documents_fails_cleanly(client: TestClient) -> None:
    encrypted = next(DOCUMENTS.rglob("password.pdf"), None)
    if encrypted is None:
        pytest.skip("no encrypted PDF among the shared documents")
    r = client.post(DOCS, files=[("files", (encrypted.name, encrypted.read_bytes(), "application/pdf"))])
    job = wait(client, r.json()["jobs"][0]["id"])
    assert job["status"] == "failed" and job["reason"] == "encrypted"


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": [("files", ("a.mp3", b"ID3\x04....", "audio/mpeg"))]}, 415, ".mp3 files are not supported"),
        ({"files": [("files", ("big.txt", b"x" * 200_001, "text/plain"))]}, 413, "larger than the limit"),
        ({"json": {"name": "a\u202eb.txt", "text": "x"}}, 422, "control characters"),
        ({"files": {"metadata": (None, "{}")}}, 422, "no files"),
        ({"data": {"metadata": "{}"}}, 415, "content type 'application/x-www-form-urlencoded'"),
        ({"files": {"files": ("a.txt", b"x"), "metadata": (None, "[1]")}}, 422, "metadata must be a JSON object"),
        ({"json": {"name": "a.txt"}}, 422, "text: Field required"),
        ({"json": {"name": "a.txt", "text": ""}}, 422, "text: String should have at least 1 character"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "send multipart/form-data"),
        ({"content": b"{bad json", "headers": {"content-type": "application/json"}}, 422, "Invalid JSON"),
        (
            {"files": [("files", ("a.txt", b"x", "text/plain")), ("files", ("a.txt", b"y", "text/plain"))]},
            422,
            "two uploads share a name",
        ),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_write_nothing(
    client: TestClient, kwargs: dict[str, Any], status: int, message: str
) -> None:
    before = client.get(DOCS).json()["total"]
    r = client.post(DOCS, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert client.get(DOCS).json()["total"] == before


def test_unknown_things_are_404(client: TestClient) -> None:
    assert client.get("/v1/jobs/nope").status_code == 404
    assert "not found" in client.get("/v1/jobs/nope").json()["error"]["message"]
    assert client.post("/v1/knowledge-bases/none/documents", json={"name": "a", "text": "b"}).status_code == 404
    assert client.get(f"{DOCS}/{'0' * 64}").status_code == 404
    assert client.get(DOCS, params={"status": "bogus"}).status_code == 422


def test_the_lexical_index_is_rebuilt_once_the_queued_uploads_are_done(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first search after an upload does not rebuild the knowledge base's lexical index: the job manager has it
    rebuilt once no more uploads into that knowledge base are queued (once for two uploads made together)."""
    state = client.app.state  # type: ignore[attr-defined]
    kb = state.catalog.get(KB)
    gate = threading.Event()
    real_ingest = Ingestor.ingest

    def gated_ingest(self: Ingestor, *args: Any, **kwargs: Any) -> Any:
        assert gate.wait(30)
        return real_ingest(self, *args, **kwargs)

    calls: list[str] = []
    real_after = state.jobs.after_ingest
    monkeypatch.setattr(Ingestor, "ingest", gated_ingest)
    monkeypatch.setattr(state.jobs, "after_ingest", lambda kb: calls.append(kb.name) or real_after(kb))
    first = client.post(DOCS, json={"name": "pumps.txt", "text": "Centrifugal pumps move water with an impeller."})
    second = client.post(DOCS, json={"name": "valves.txt", "text": "A gate valve stops the flow of a pipeline."})
    gate.set()
    assert [wait(client, r.json()["jobs"][0]["id"])["status"] for r in (first, second)] == ["ready", "ready"]
    deadline = time.monotonic() + 60
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    state.jobs._after_pool.submit(lambda: None).result(60)  # the rebuild has ended
    assert calls == [KB]
    index = state.retriever.lexical.cached(kb)
    assert index is not None and index.revision == state.store.kb_revision(kb)
    assert {c.metadata["source"] for c in index.chunks} >= {"pumps.txt", "valves.txt"}


def test_dropping_a_kb_forgets_its_lexical_index(client: TestClient) -> None:
    assert client.post("/v1/knowledge-bases", json={"name": "forgotten"}).status_code == 201
    job = client.post("/v1/knowledge-bases/forgotten/documents", json={"name": "a.txt", "text": "pumps and valves"})
    assert wait(client, job.json()["jobs"][0]["id"])["status"] == "ready"
    assert client.post("/v1/knowledge-bases/forgotten/search", json={"query": "pumps"}).json()["hits"]
    app = client.app
    kb = app.state.catalog.get("forgotten")  # type: ignore[attr-defined]
    lexical = app.state.retriever.lexical  # type: ignore[attr-defined]
    assert lexical.cached(kb) is not None and (lexical.root / kb.key).is_dir()
    assert client.delete("/v1/knowledge-bases/forgotten").status_code == 204
    assert lexical.cached(kb) is None and not (lexical.root / kb.key).exists()
