"""Documents of a knowledge base: upload (multipart files or JSON text) as background jobs (202), job status,
listing, one document, atomic replacement and deletion."""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from kb_service.api import queries
from kb_service.api.auth import PrincipalDep
from kb_service.api.deps import CatalogDep, JobsDep, RetrieverDep, SettingsDep
from kb_service.api.schemas import (
    MAX_DOCUMENT_OFFSET,
    MAX_DOCUMENT_PAGE,
    AuditPublic,
    DocumentCreate,
    DocumentPage,
    DocumentPublic,
    JobList,
    JobPublic,
    ResiduePublic,
)
from kb_service.core.config import Settings
from kb_service.core.errors import FileTooLarge, InvalidInput, UnsupportedFormat
from kb_service.core.metadata import Scalar, check_metadata, parse_metadata
from kb_service.core.records import DERIVED_METADATA, DocStatus
from kb_service.ingest.parsers import detect_format
from kb_service.ingest.sources import SourceItem

router = APIRouter(tags=["documents"])
KB_DOCS = "/v1/knowledge-bases/{kb}/documents"
MAX_FILES = 100
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "metadata": {"type": "string", "description": "JSON object applied to every file."},
                    },
                    "required": ["files"],
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/DocumentCreate"}},
        },
    }
}


@router.post(KB_DOCS, status_code=status.HTTP_202_ACCEPTED, openapi_extra=UPLOAD_BODY)
async def upload(kb: str, request: Request, jobs: JobsDep, settings: SettingsDep) -> JobList:
    """One job per document; identical content already in the knowledge base finishes as ``unchanged``."""
    items = await _items(request, settings)
    return JobList(jobs=[JobPublic.of(j) for j in await run_in_threadpool(jobs.submit, kb, items)])


@router.put(KB_DOCS + "/{doc_id}", status_code=status.HTTP_202_ACCEPTED, openapi_extra=UPLOAD_BODY)
async def replace_document(
    kb: str, doc_id: str, request: Request, jobs: JobsDep, catalog: CatalogDep, settings: SettingsDep
) -> JobList:
    """New content for a document: ingested under its name, it replaces the old version atomically. The old
    version's metadata carries over, with any given in the request laid over it."""
    _, old = await run_in_threadpool(catalog.document, kb, doc_id)
    items = await _items(request, settings)
    if len(items) != 1:
        raise InvalidInput(f"a replacement takes exactly one document, got {len(items)}")
    item = items[0]
    item.name = old.source
    kept = {k: v for k, v in old.metadata.items() if k not in DERIVED_METADATA}
    item.metadata = check_metadata({**kept, **item.metadata})
    return JobList(jobs=[JobPublic.of(j) for j in await run_in_threadpool(jobs.submit, kb, [item])])


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> JobPublic:
    job = jobs.get(job_id)
    principal.check(job.kb)
    return JobPublic.of(job)


@router.get(KB_DOCS)
async def list_documents(
    kb: str,
    catalog: CatalogDep,
    status_: Annotated[DocStatus | None, Query(alias="status")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_DOCUMENT_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_DOCUMENT_PAGE)] = 100,
) -> DocumentPage:
    return await run_in_threadpool(queries.document_page, catalog, kb, status=status_, offset=offset, limit=limit)


@router.get(KB_DOCS + "/{doc_id}")
async def get_document(kb: str, doc_id: str, catalog: CatalogDep) -> DocumentPublic:
    _, doc = await run_in_threadpool(catalog.document, kb, doc_id)
    return DocumentPublic.of(doc)


@router.delete(KB_DOCS + "/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(kb: str, doc_id: str, catalog: CatalogDep) -> Response:
    """Delete the document: its row, its chunks, its lexical-index entries and its original file."""
    await run_in_threadpool(catalog.delete_document, kb, doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(KB_DOCS + "/{doc_id}/residue")
async def document_residue(kb: str, doc_id: str, catalog: CatalogDep, retriever: RetrieverDep) -> ResiduePublic:
    """Proof of deletion: the document row, its chunks and its lexical-index entries that remain (all none once
    it is deleted: ``clean``). Works for any id, deleted or not."""
    return await run_in_threadpool(queries.document_residue, catalog, retriever.lexical, kb, doc_id)


@router.get("/v1/knowledge-bases/{kb}/audit")
async def audit_kb(kb: str, catalog: CatalogDep) -> AuditPublic:
    """Documents by status and chunk counts, with the chunks that belong to no ready document."""
    return await run_in_threadpool(queries.kb_audit, catalog, kb)


async def _items(request: Request, settings: Settings) -> list[SourceItem]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _files(request, settings)
    if kind == "application/json":
        raw = await request.body()
        if len(raw) > settings.ingest.max_file_bytes:
            raise FileTooLarge("request body", f"{len(raw)} bytes; the limit is {settings.ingest.max_file_bytes}")
        try:
            body = DocumentCreate.model_validate_json(raw)
        except ValidationError as exc:  # reported like every other request validation error
            raise RequestValidationError(exc.errors()) from exc
        return [SourceItem(safe_name(body.name), text=body.text, metadata=dict(body.metadata))]
    raise UnsupportedFormat(
        "request", f"content type {kind or 'none'!r}: send multipart/form-data (files) or application/json"
    )


async def _files(request: Request, settings: Settings) -> list[SourceItem]:
    form = await request.form(max_files=MAX_FILES, max_fields=10)
    uploads = [v for key in ("files", "file") for v in form.getlist(key) if isinstance(v, UploadFile)]
    if not uploads:
        raise InvalidInput("no files: send them as multipart form field 'files'")
    metadata: dict[str, Scalar] = {}
    if isinstance(raw_meta := form.get("metadata"), str) and raw_meta.strip():
        metadata = parse_metadata(raw_meta)
    items = []
    for upload in uploads:
        name = safe_name(upload.filename or "")
        data = await upload.read(settings.ingest.max_file_bytes + 1)
        if len(data) > settings.ingest.max_file_bytes:
            raise FileTooLarge(name, f"larger than the limit of {settings.ingest.max_file_bytes} bytes")
        detect_format(data, name)  # unsupported types are refused now (415), before any job exists
        items.append(SourceItem(name, data=data, metadata=dict(metadata)))
    return items


def safe_name(name: str) -> str:
    """The file name without any directory part; control characters and empty names are refused."""
    base = PurePosixPath(name.replace("\\", "/")).name.strip()
    if not base or base in (".", ".."):
        raise InvalidInput(f"file name {name!r} is empty or only a path")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in base):
        raise InvalidInput(f"file name {name!r} contains control characters")
    return unicodedata.normalize("NFC", base)
