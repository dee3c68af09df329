"""What both clients return: the REST API's own schemas, so code written against one runs against the other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from kb_service.api.schemas import AnswerPublic, DocumentPublic, KnowledgeBasePublic, SearchResponse

Scalar = str | int | float | bool


class IngestOutcome(BaseModel):
    """One document's ingestion: added, unchanged, replaced or failed (with the reason)."""

    source: str
    outcome: str
    doc_id: str | None = None
    chunks: int = 0
    reason: str = ""
    error: str = ""


class ClientError(RuntimeError):
    """A refused request: the HTTP status (the in-process client uses the one the API would answer) and the
    service's error type and message."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status, self.type, self.message = status, type_, message


class KBClient(Protocol):
    def create_kb(self, name: str, *, embedding_model: str | None = None) -> KnowledgeBasePublic: ...

    def list_kbs(self) -> list[KnowledgeBasePublic]: ...

    def drop_kb(self, name: str) -> None: ...

    def add_texts(
        self, kb: str, texts: Mapping[str, str], *, metadata: Mapping[str, Scalar] | None = None
    ) -> list[IngestOutcome]:
        """Ingest ``{name: text}`` and wait until every document is ready or failed."""

    def add_files(self, kb: str, paths: Sequence[Path]) -> list[IngestOutcome]:
        """Ingest files (by their file name) and wait until every document is ready or failed."""

    def documents(self, kb: str) -> list[DocumentPublic]: ...

    def delete_document(self, kb: str, doc_id: str) -> None: ...

    def search(self, kb: str, query: str, **options: Any) -> SearchResponse:
        """Options as in ``POST /v1/knowledge-bases/{kb}/search``: top_k, mode, gate, rerank, filters, trace."""

    def ask(self, kb: str, question: str, **options: Any) -> AnswerPublic:
        """A cited, verified answer (the fields of POST /v1/knowledge-bases/{kb}/ask: sources, answer_mode …)."""
        ...

    def close(self) -> None: ...
