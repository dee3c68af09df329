"""What both clients return: the REST API's own schemas, so code written against one runs against the other."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from kb_service.api.schemas import (
    AnswerPublic,
    AuditPublic,
    DocumentPage,
    DocumentPublic,
    KnowledgeBasePublic,
    ReindexStatusPublic,
    ResiduePublic,
    SearchResponse,
    SyncReportPublic,
)

Scalar = str | int | float | bool
KBs = str | Sequence[str]  # one knowledge base, or several searched as one (a list or tuple of names)
Files = Sequence[Path] | Mapping[str, Path]  # paths named by their file name, or {document name: path}


class IngestOutcome(BaseModel):
    """One document's ingestion: added, unchanged, replaced or failed (with the reason)."""

    source: str
    outcome: str
    doc_id: str | None = None
    chunks: int = 0
    replaced: str | None = None  # the id of the older version this one replaced
    reason: str = ""
    error: str = ""


class ClientError(RuntimeError):
    """A refused request: the HTTP status (the in-process client uses the one the API would answer) and the
    service's error type and message."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status, self.type, self.message = status, type_, message


OnOutcome = Callable[[IngestOutcome], None]
# (source, stage, chunks): a document entered a stage (parsing, chunking, embedding, storing); chunks once known
OnStage = Callable[[str, str, int], None]


def named_files(files: Files) -> list[tuple[str, Path]]:
    """(document name, path) pairs: a mapping as given, plain paths under their file names."""
    if isinstance(files, Mapping):
        return [(name, Path(path)) for name, path in files.items()]
    return [(Path(p).name, Path(p)) for p in files]


class KBClient(Protocol):
    def create_kb(
        self, name: str, *, embedding_model: str | None = None, description: str = ""
    ) -> KnowledgeBasePublic: ...

    def get_kb(self, name: str) -> KnowledgeBasePublic: ...

    def list_kbs(self) -> list[KnowledgeBasePublic]: ...

    def drop_kb(self, name: str) -> None: ...

    def add_texts(
        self, kb: str, texts: Mapping[str, str], *, metadata: Mapping[str, Scalar] | None = None
    ) -> list[IngestOutcome]:
        """Ingest ``{name: text}`` and wait until every document is ready or failed."""

    def add_files(
        self, kb: str, files: Files, *, on_outcome: OnOutcome | None = None, on_stage: OnStage | None = None
    ) -> list[IngestOutcome]:
        """Ingest files and wait until every document is ready or failed; ``on_outcome`` hears each one as it
        finishes, ``on_stage`` each stage a document enters (over HTTP: as the job's polled status shows it). Plain
        paths are named by their file name; a mapping names each (the HTTP API keeps only the file-name part)."""

    def documents(self, kb: str) -> list[DocumentPublic]: ...

    def document_page(
        self, kb: str, *, status: str | None = None, offset: int = 0, limit: int = 100
    ) -> DocumentPage: ...

    def get_document(self, kb: str, doc_id: str) -> DocumentPublic: ...

    def delete_document(self, kb: str, doc_id: str) -> None: ...

    def download(self, kb: str, doc_id: str) -> bytes:
        """The document's original file as it was uploaded."""

    def page_image(self, kb: str, doc_id: str, page: int, *, width: int = 1000) -> bytes:
        """Page ``page`` (from 1) of a PDF or image document as PNG bytes, ``width`` pixels wide."""

    def residue(self, kb: str, doc_id: str) -> ResiduePublic:
        """Proof of deletion: what remains of a document (``clean`` once nothing does)."""

    def audit(self, kb: str) -> AuditPublic:
        """Documents by status and chunk counts, with chunks that belong to no ready document."""

    def sync(self, kb: str, *, dry_run: bool = False) -> SyncReportPublic:
        """Mirror the folder configured for ``kb`` (``KB_SYNC_SOURCES``); ``dry_run`` only reports what would change."""

    def reindex(
        self,
        kb: str,
        embedding_model: str,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        switch: bool = True,
        on_progress: Callable[[ReindexStatusPublic], None] | None = None,
    ) -> ReindexStatusPublic:
        """Re-index ``kb`` with another embedding model (a chunking re-chunks it from the original files) while it
        serves, and wait until the new index serves (``ready``), or is built without ``switch``."""

    def reindex_status(self, kb: str) -> ReindexStatusPublic: ...

    def cancel_reindex(self, kb: str) -> ReindexStatusPublic:
        """Discard the running or recorded re-index: the knowledge base stays as it was."""

    def search(self, kb: KBs, query: str, **options: Any) -> SearchResponse:
        """Options as in ``POST /v1/knowledge-bases/{kb}/search``: top_k, mode, gate, rerank, filters, trace. A list
        of knowledge bases searches them all (``POST /v1/search``: routed, one merged ranking; route, route_kbs)."""

    def ask(self, kb: KBs, question: str, **options: Any) -> AnswerPublic:
        """A cited, verified answer (the fields of POST /v1/knowledge-bases/{kb}/ask: sources, answer_mode …); from
        several knowledge bases when ``kb`` is a list."""
        ...

    def ask_stream(self, kb: KBs, question: str, **options: Any) -> Iterator[str | AnswerPublic]:
        """The answer's text as it is written, then the whole answer (the same as ``ask`` returns)."""
        ...

    def close(self) -> None: ...
