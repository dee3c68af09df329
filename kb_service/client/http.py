"""The HTTP client: the same calls as the in-process client, against a running service (``kb serve``)."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from kb_service.api.schemas import (
    AnswerPublic,
    DocumentPage,
    DocumentPublic,
    JobList,
    JobPublic,
    KnowledgeBasePublic,
    SearchResponse,
)
from kb_service.client.base import ClientError, IngestOutcome, Scalar

PAGE = 1000
FINISHED = ("ready", "failed")


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

    def create_kb(self, name: str, *, embedding_model: str | None = None) -> KnowledgeBasePublic:
        body = {"name": name, "embedding_model": embedding_model}
        return KnowledgeBasePublic.model_validate(self._call("POST", "/v1/knowledge-bases", json=body))

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

    def add_files(self, kb: str, paths: Sequence[Path]) -> list[IngestOutcome]:
        files = [
            ("files", (Path(p).name, Path(p).read_bytes(), mimetypes.guess_type(p)[0] or "application/octet-stream"))
            for p in paths
        ]
        return self._wait(JobList.model_validate(self._call("POST", f"{_kb(kb)}/documents", files=files)).jobs)

    def _wait(self, jobs: list[JobPublic]) -> list[IngestOutcome]:
        """Poll each job until it is ready or failed."""
        deadline = time.monotonic() + self.job_timeout
        done: dict[str, JobPublic] = {}
        while len(done) < len(jobs):
            for job in jobs:
                if job.id in done:
                    continue
                current = JobPublic.model_validate(self._call("GET", f"/v1/jobs/{job.id}"))
                if current.status in FINISHED:
                    done[job.id] = current
            if len(done) < len(jobs):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(jobs) - len(done)} ingestion job(s) unfinished after {self.job_timeout}s")
                time.sleep(self.poll_interval)
        return [
            IngestOutcome(
                source=j.source, outcome=j.outcome, doc_id=j.doc_id, chunks=j.chunks, reason=j.reason, error=j.error
            )
            for j in (done[job.id] for job in jobs)
        ]

    def documents(self, kb: str) -> list[DocumentPublic]:
        docs: list[DocumentPublic] = []
        while True:
            page = DocumentPage.model_validate(
                self._call("GET", f"{_kb(kb)}/documents", params={"offset": len(docs), "limit": PAGE})
            )
            docs += page.documents
            if not page.documents or len(docs) >= page.total:
                return docs

    def delete_document(self, kb: str, doc_id: str) -> None:
        self._call("DELETE", f"{_kb(kb)}/documents/{quote(doc_id, safe='')}")

    def search(self, kb: str, query: str, **options: Any) -> SearchResponse:
        body = {"query": query, **{k: v for k, v in options.items() if v is not None}}
        return SearchResponse.model_validate(self._call("POST", f"{_kb(kb)}/search", json=body))

    def ask(self, kb: str, question: str, **options: Any) -> AnswerPublic:
        body = {"question": question, **{k: v for k, v in options.items() if v is not None}, "stream": False}
        return AnswerPublic.model_validate(self._call("POST", f"{_kb(kb)}/ask", json=body))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.is_success:
            return response.json() if response.content else None
        try:
            error = response.json()["error"]
            raise ClientError(response.status_code, error["type"], error["message"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ClientError(response.status_code, "HTTPError", response.text[:500]) from None


def _kb(name: str) -> str:
    return f"/v1/knowledge-bases/{quote(name, safe='')}"
