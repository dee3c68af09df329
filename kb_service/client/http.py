"""The HTTP client: the same calls as the in-process client, against a running service (``kb serve``)."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from kb_service.api.schemas import (
    AnswerPublic,
    AuditPublic,
    DocumentPage,
    DocumentPublic,
    JobList,
    JobPublic,
    KnowledgeBasePublic,
    ReindexStatusPublic,
    ResiduePublic,
    SearchResponse,
    SyncReportPublic,
)
from kb_service.client.base import ClientError, Files, IngestOutcome, KBs, OnOutcome, OnStage, Scalar, named_files

PAGE = 1000
FINISHED = ("ready", "failed")
STAGES = ("parsing", "chunking", "embedding", "storing")


class HTTPClient:
    """``base_url`` is the service root (``http://host:8000``); ``api_key`` is sent as a Bearer token."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        poll_interval: float = 0.2,
        job_timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.poll_interval, self.job_timeout = poll_interval, job_timeout

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def create_kb(self, name: str, *, embedding_model: str | None = None, description: str = "") -> KnowledgeBasePublic:
        body = {"name": name, "embedding_model": embedding_model, "description": description}
        return KnowledgeBasePublic.model_validate(self._call("POST", "/v1/knowledge-bases", json=body))

    def get_kb(self, name: str) -> KnowledgeBasePublic:
        return KnowledgeBasePublic.model_validate(self._call("GET", _kb(name)))

    def list_kbs(self) -> list[KnowledgeBasePublic]:
        return [KnowledgeBasePublic.model_validate(k) for k in self._call("GET", "/v1/knowledge-bases")]

    def drop_kb(self, name: str) -> None:
        self._call("DELETE", _kb(name))

    def add_texts(
        self, kb: str, texts: Mapping[str, str], *, metadata: Mapping[str, Scalar] | None = None
    ) -> list[IngestOutcome]:
        jobs = []
        for name, text in texts.items():
            body = {"name": name, "text": text, "metadata": dict(metadata or {})}
            jobs += JobList.model_validate(self._call("POST", f"{_kb(kb)}/documents", json=body)).jobs
        return self._wait(jobs)

    def add_files(
        self, kb: str, files: Files, *, on_outcome: OnOutcome | None = None, on_stage: OnStage | None = None
    ) -> list[IngestOutcome]:
        """The service names each document by the file-name part of its name."""
        parts = [
            ("files", (name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"))
            for name, path in named_files(files)
        ]
        jobs = JobList.model_validate(self._call("POST", f"{_kb(kb)}/documents", files=parts)).jobs
        return self._wait(jobs, on_outcome, on_stage)

    def _wait(
        self, jobs: list[JobPublic], on_outcome: OnOutcome | None = None, on_stage: OnStage | None = None
    ) -> list[IngestOutcome]:
        """Poll each job until it is ready or failed."""
        deadline = time.monotonic() + self.job_timeout
        done: dict[str, JobPublic] = {}
        seen: dict[str, str] = {}  # the last status of each job
        while len(done) < len(jobs):
            for job in jobs:
                if job.id in done:
                    continue
                current = JobPublic.model_validate(self._call("GET", f"/v1/jobs/{job.id}"))
                if on_stage is not None and current.status in STAGES and seen.get(job.id) != current.status:
                    on_stage(current.source, current.status, current.chunks)
                seen[job.id] = current.status
                if current.status in FINISHED:
                    done[job.id] = current
                    if on_outcome is not None:
                        on_outcome(_outcome(current))
            if len(done) < len(jobs):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(jobs) - len(done)} ingestion job(s) unfinished after {self.job_timeout}s")
                time.sleep(self.poll_interval)
        return [_outcome(done[job.id]) for job in jobs]

    def documents(self, kb: str) -> list[DocumentPublic]:
        docs: list[DocumentPublic] = []
        while True:
            page = DocumentPage.model_validate(
                self._call("GET", f"{_kb(kb)}/documents", params={"offset": len(docs), "limit": PAGE})
            )
            docs += page.documents
            if not page.documents or len(docs) >= page.total:
                return docs

    def document_page(self, kb: str, *, status: str | None = None, offset: int = 0, limit: int = 100) -> DocumentPage:
        params: dict[str, Any] = {"offset": offset, "limit": limit, **({"status": status} if status else {})}
        return DocumentPage.model_validate(self._call("GET", f"{_kb(kb)}/documents", params=params))

    def get_document(self, kb: str, doc_id: str) -> DocumentPublic:
        return DocumentPublic.model_validate(self._call("GET", _doc(kb, doc_id)))

    def delete_document(self, kb: str, doc_id: str) -> None:
        self._call("DELETE", _doc(kb, doc_id))

    def download(self, kb: str, doc_id: str) -> bytes:
        return self._bytes(f"{_doc(kb, doc_id)}/file")

    def page_image(self, kb: str, doc_id: str, page: int, *, width: int = 1000) -> bytes:
        return self._bytes(f"{_doc(kb, doc_id)}/pages/{int(page)}.png", params={"width": width})

    def residue(self, kb: str, doc_id: str) -> ResiduePublic:
        return ResiduePublic.model_validate(self._call("GET", f"{_doc(kb, doc_id)}/residue"))

    def audit(self, kb: str) -> AuditPublic:
        return AuditPublic.model_validate(self._call("GET", f"{_kb(kb)}/audit"))

    def sync(self, kb: str, *, dry_run: bool = False) -> SyncReportPublic:
        return SyncReportPublic.model_validate(self._call("POST", f"{_kb(kb)}/sync", json={"dry_run": dry_run}))

    def reindex(
        self,
        kb: str,
        embedding_model: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        switch: bool = True,
        on_progress: Callable[[ReindexStatusPublic], None] | None = None,
        poll_s: float = 1.0,
    ) -> ReindexStatusPublic:
        """Start a re-index on the service and wait for it to finish (``on_progress`` hears each polled status)."""
        body = {
            "embedding_model": embedding_model,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "switch": switch,
        }
        status = ReindexStatusPublic.model_validate(self._call("POST", f"{_kb(kb)}/reindex", json=body))
        while status.state in ("building", "switching"):
            if on_progress is not None:
                on_progress(status)
            time.sleep(poll_s)
            status = self.reindex_status(kb)
        return status

    def reindex_status(self, kb: str) -> ReindexStatusPublic:
        return ReindexStatusPublic.model_validate(self._call("GET", f"{_kb(kb)}/reindex"))

    def cancel_reindex(self, kb: str) -> ReindexStatusPublic:
        return ReindexStatusPublic.model_validate(self._call("DELETE", f"{_kb(kb)}/reindex"))

    def search(self, kb: KBs, query: str, **options: Any) -> SearchResponse:
        body = {"query": query, **{k: v for k, v in options.items() if v is not None}}
        path, body = _target(kb, "search", body)
        return SearchResponse.model_validate(self._call("POST", path, json=body))

    def ask(self, kb: KBs, question: str, **options: Any) -> AnswerPublic:
        body = {"question": question, **{k: v for k, v in options.items() if v is not None}, "stream": False}
        path, body = _target(kb, "ask", body)
        return AnswerPublic.model_validate(self._call("POST", path, json=body))

    def ask_stream(self, kb: KBs, question: str, **options: Any) -> Iterator[str | AnswerPublic]:
        """The server-sent events of ``/ask`` with ``stream: true``: text deltas, then the answer."""
        body = {"question": question, **{k: v for k, v in options.items() if v is not None}, "stream": True}
        path, body = _target(kb, "ask", body)
        with self.http.stream("POST", path, json=body) as response:
            if not response.is_success:
                response.read()
                _raise(response)
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if event == "delta" and data.get("content"):
                        yield data["content"]
                    elif event == "answer":
                        yield AnswerPublic.model_validate(data)
                    elif event == "error":  # the model failed mid-answer; the status was sent already
                        error = data["error"]
                        raise ClientError(502, error["type"], error["message"])

    def _bytes(self, path: str, **kwargs: Any) -> bytes:
        response = self.http.request("GET", path, **kwargs)
        if response.is_success:
            return response.content
        _raise(response)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.is_success:
            return response.json() if response.content else None
        _raise(response)


def _raise(response: httpx.Response) -> NoReturn:
    try:
        error = response.json()["error"]
        raise ClientError(response.status_code, error["type"], error["message"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ClientError(response.status_code, "HTTPError", response.text[:500]) from None


def _outcome(job: JobPublic) -> IngestOutcome:
    return IngestOutcome.model_validate(job.model_dump(include=set(IngestOutcome.model_fields)))


def _kb(name: str) -> str:
    return f"/v1/knowledge-bases/{quote(name, safe='')}"


def _doc(kb: str, doc_id: str) -> str:
    return f"{_kb(kb)}/documents/{quote(doc_id, safe='')}"


def _target(kb: KBs, action: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The route of a search or question over one knowledge base, or over several (``/v1/search``, ``/v1/ask``)."""
    if isinstance(kb, str):
        return f"{_kb(kb)}/{action}", body
    return f"/v1/{action}", {**body, "knowledge_bases": list(kb)}
