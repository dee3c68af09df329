"""Originals over HTTP: every document's file is kept, downloadable as uploaded and removed on every delete path
(delete, replacement, knowledge-base drop, recovery after a crash), counted by the residue check and the audit;
PDF and image pages render as PNG; bad requests get clear 4xx answers."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kb_service.api.app import create_app
from kb_service.core.config import Settings
from kb_service.stores.originals import Originals
from tests.fixtures import make_docx, make_pdf, text_image

pytestmark = pytest.mark.integration

KB = "原件 originals"
DOCS = "/v1/knowledge-bases/%E5%8E%9F%E4%BB%B6%20originals/documents"
PDF = make_pdf(["Pump maintenance manual\nOil the bearings every month.", "Page two\nReplace the seals yearly."])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("originals")


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=data_dir, chunk_size=64, chunk_overlap=8, llm_backend="none")
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/knowledge-bases", json={"name": KB}).status_code == 201
        yield c


def upload(client: TestClient, name: str, data: bytes, kind: str = "application/octet-stream") -> dict[str, Any]:
    response = client.post(DOCS, files=[("files", (name, data, kind))])
    assert response.status_code == 202, response.text
    job = response.json()["jobs"][0]
    deadline = time.monotonic() + 180
    while (job := client.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("ready", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "ready", job
    return job  # type: ignore[no-any-return]


def files_of(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "originals").rglob("*") if p.is_file()]


def test_a_pdf_is_downloadable_as_uploaded_and_its_pages_render(client: TestClient) -> None:
    doc_id = upload(client, "pump manual.pdf", PDF, "application/pdf")["doc_id"]
    got = client.get(f"{DOCS}/{doc_id}/file")
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == 'attachment; filename="pump manual.pdf"'
    assert got.headers["x-content-type-options"] == "nosniff"
    etag = got.headers["etag"]
    assert client.get(f"{DOCS}/{doc_id}/file", headers={"If-None-Match": etag}).status_code == 304

    page = client.get(f"{DOCS}/{doc_id}/pages/2.png", params={"width": 600})
    assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(page.content))
    assert image.width == 600 and 800 < image.height < 900  # A4: 595 x 842 points
    assert min(image.convert("L").getdata()) < 100  # the page's text is drawn, not a blank sheet
    again = client.get(f"{DOCS}/{doc_id}/pages/2.png?width=600", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    # the chunk cites page 2 with the box of its text on that page
    hits = client.post(f"/v1/knowledge-bases/{KB}/search", json={"query": "replace the seals", "top_k": 1}).json()
    top = hits["hits"][0]
    assert top["page"] == 2 and top["bbox"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("pages/3.png", 404, "has 2 pages; there is no page 3"),
        ("pages/0.png", 422, "greater than or equal to 1"),
        ("pages/two.png", 422, "valid integer"),
        ("pages/1.png?width=5", 422, "width"),
        ("pages/1.png?width=100000", 422, "width"),
    ],
)
def test_bad_page_requests_are_clear_4xx(client: TestClient, path: str, status: int, says: str) -> None:
    doc_id = upload(client, "pump manual.pdf", PDF, "application/pdf")["doc_id"]  # unchanged: the same document
    response = client.get(f"{DOCS}/{doc_id}/{path}")
    assert response.status_code == status and says in response.json()["error"]["message"], response.text


def test_a_scanned_image_is_kept_and_shown_and_a_docx_has_no_pages(client: TestClient) -> None:
    png = text_image(["Quarterly revenue grew twelve percent", "The warehouse in Rotterdam opened in May"])
    scan = upload(client, "scan.png", png)["doc_id"]
    assert client.get(f"{DOCS}/{scan}/file").content == png
    shown = Image.open(io.BytesIO(client.get(f"{DOCS}/{scan}/pages/1.png", params={"width": 700}).content))
    assert shown.size == (700, 130)  # 1400 x 260, scaled
    docx = make_docx([("h1", "Valves"), ("p", "Close the valve before service.")])
    notes = upload(client, "valves.docx", docx)["doc_id"]
    assert client.get(f"{DOCS}/{notes}/file").content == docx
    response = client.get(f"{DOCS}/{notes}/pages/1.png")
    assert response.status_code == 404
    assert "valves.docx is a docx document: only PDF and image documents have pages" in response.text


def test_a_text_sent_as_json_comes_back_as_utf8_text(client: TestClient) -> None:
    job = client.post(DOCS, json={"name": "说明", "text": "泵每月加油一次。Oil the pump monthly."}).json()["jobs"][0]
    while (job := client.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("ready", "failed"):
        time.sleep(0.1)
    got = client.get(f"{DOCS}/{job['doc_id']}/file")
    assert got.text == "泵每月加油一次。Oil the pump monthly."
    assert got.headers["content-type"].startswith("text/plain")
    assert got.headers["content-disposition"] == "attachment; filename=\"__\"; filename*=UTF-8''%E8%AF%B4%E6%98%8E"


def test_delete_and_replace_remove_the_original_and_the_residue_check_counts_it(
    client: TestClient, data_dir: Path
) -> None:
    old = upload(client, "seals.pdf", make_pdf(["Seals\nReplace the seals every year."]))["doc_id"]
    new_job = upload(client, "seals.pdf", make_pdf(["Seals\nReplace the seals every two years."]))
    assert new_job["replaced"] == old
    assert client.get(f"{DOCS}/{old}/residue").json() == {
        "doc_id": old, "document": None, "chunks": 0, "lexical_entries": 0, "original_files": 0, "clean": True
    }  # fmt: skip
    new = new_job["doc_id"]
    assert client.get(f"{DOCS}/{new}/residue").json()["original_files"] == 1
    assert client.delete(f"{DOCS}/{new}").status_code == 204
    assert client.get(f"{DOCS}/{new}/residue").json()["clean"]
    gone = client.get(f"{DOCS}/{new}/file")
    assert gone.status_code == 404 and "not found" in gone.json()["error"]["message"]
    assert not any(new in str(p) or old in str(p) for p in files_of(data_dir))
    audit = client.get(f"/v1/knowledge-bases/{KB}/audit").json()
    ready = client.get(DOCS).json()["total"]
    assert audit["originals"] == ready and audit["orphan_originals"] == 0 and audit["clean"]


def test_a_document_kept_without_its_original_says_how_to_get_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_backend="none", keep_originals=False)
    with TestClient(create_app(settings)) as c:
        c.post("/v1/knowledge-bases", json={"name": "plain"})
        response = c.post("/v1/knowledge-bases/plain/documents", json={"name": "a.txt", "text": "Pumps need oil."})
        job = response.json()["jobs"][0]
        while (job := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("ready", "failed"):
            time.sleep(0.1)
        missing = c.get(f"/v1/knowledge-bases/plain/documents/{job['doc_id']}/file")
        assert missing.status_code == 404
        assert "KB_KEEP_ORIGINALS=false): upload the file again" in missing.json()["error"]["message"]
        assert not (tmp_path / "originals").exists()


def test_dropping_the_knowledge_base_and_recovery_remove_originals(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_backend="none")
    with TestClient(create_app(settings)) as c:
        c.post("/v1/knowledge-bases", json={"name": "keep"})
        c.post("/v1/knowledge-bases", json={"name": "drop"})
        for name in ("keep", "drop"):
            job = c.post(f"/v1/knowledge-bases/{name}/documents", json={"name": "a.txt", "text": f"{name} me"})
            job = job.json()["jobs"][0]
            while (job := c.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("ready", "failed"):
                time.sleep(0.1)
        assert len(files_of(tmp_path)) == 2
        assert c.delete("/v1/knowledge-bases/drop").status_code == 204
        assert len(files_of(tmp_path)) == 1
    # a crash left an original whose document row was never written, and the folder of a dropped knowledge base
    (keep_folder,) = (tmp_path / "originals").iterdir()
    orphan = keep_folder / "ab" / ("ab" + "0" * 62) / ("f" * 64)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half an upload")
    (tmp_path / "originals" / "kb_dropped_meanwhile" / "cd").mkdir(parents=True)
    with TestClient(create_app(settings)) as c:  # start-up recovery
        assert c.get("/v1/knowledge-bases/keep/audit").json()["orphan_originals"] == 0
        assert len(files_of(tmp_path)) == 1 and not orphan.exists()
        assert [p.name for p in (tmp_path / "originals").iterdir()] == [keep_folder.name]


def test_the_audit_counts_an_orphan_original(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_backend="none")
    with TestClient(create_app(settings)) as c:
        c.post("/v1/knowledge-bases", json={"name": "kb"})
        (folder,) = (tmp_path / "originals").iterdir() if (tmp_path / "originals").exists() else (None,)
        assert folder is None  # nothing kept before the first upload
        kb = c.app.state.catalog.get("kb")  # type: ignore[attr-defined]
        Originals(tmp_path / "originals").put(kb, "ef" * 32, b"no row for me")
        audit = c.get("/v1/knowledge-bases/kb/audit").json()
        assert audit["originals"] == 1 and audit["orphan_originals"] == 1 and not audit["clean"]


@pytest.mark.unit
def test_only_document_ids_name_files(tmp_path: Path) -> None:
    from kb_service.core.records import EmbeddingModelInfo, KnowledgeBase

    info = EmbeddingModelInfo(name="m", dimension=4, fingerprint="f" * 16, max_tokens=16)
    originals, kb = Originals(tmp_path), KnowledgeBase(name="kb", embedding=info)
    kept = originals.put(kb, "ab" * 32, b"bytes")
    assert kept is not None and kept.sha256 == "277089d91c0bdf4f2e6862ba7e4a07605119431f5d13f726dd352b06f1b206a9"
    assert originals.get(kb, "ab" * 32) == kept and originals.doc_ids(kb) == {"ab" * 32}
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31, "/" + "a" * 63):
        assert originals.get(kb, bad) is None and not originals.delete(kb, bad)
    again = originals.put(kb, "ab" * 32, b"other bytes")  # one original per document: the earlier one goes
    assert again is not None and [p.name for p in again.path.parent.iterdir()] == [again.sha256]
    assert originals.delete(kb, "ab" * 32) and originals.get(kb, "ab" * 32) is None
