"""OpenAI's Files API: ``POST /v1/files`` keeps an upload for later use (attaching it to vector stores), with list,
retrieve, content and delete. A key scoped to some knowledge bases sees only the files it uploaded; deleting a file
removes every document it became, in every vector store."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kb_service.api.auth import Principal, PrincipalDep
from kb_service.api.deps import FileSearchDep, SettingsDep
from kb_service.api.filesearch_schemas import Deleted, FileList, FileObject, Purpose, page_of
from kb_service.api.routes.documents import safe_name
from kb_service.api.routes.originals import attachment_header
from kb_service.core.errors import FileNotFound, FileTooLarge, InvalidInput
from kb_service.filesearch.registry import StoredFile
from kb_service.filesearch.service import FileSearch

router = APIRouter(prefix="/v1/files", tags=["files"])
PURPOSES = set(Purpose.__args__)  # type: ignore[attr-defined]
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": sorted(PURPOSES)},
                    },
                    "required": ["file", "purpose"],
                }
            }
        },
    }
}


def owned(files: FileSearch, file_id: str, principal: Principal) -> StoredFile:
    """The file, if the caller may see it (a scoped key: only its own uploads); else FileNotFound."""
    stored = files.registry.get(file_id)
    if principal.kbs is not None and stored.owner != principal.name:
        raise FileNotFound(file_id)
    return stored


@router.post("", openapi_extra=UPLOAD_BODY)
async def upload_file(
    request: Request, files: FileSearchDep, settings: SettingsDep, principal: PrincipalDep
) -> FileObject:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise InvalidInput("send the file as multipart/form-data with fields 'file' and 'purpose'")
    form = await request.form(max_files=1, max_fields=4)
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("no file: send it as multipart form field 'file'")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {', '.join(sorted(PURPOSES))}; got {purpose!r}")
    name = safe_name(upload.filename or "")
    data = await upload.read(settings.ingest.max_file_bytes + 1)
    if len(data) > settings.ingest.max_file_bytes:
        raise FileTooLarge(name, f"larger than the limit of {settings.ingest.max_file_bytes} bytes")
    stored = await run_in_threadpool(
        files.registry.add, filename=name, purpose=str(purpose), data=data, owner=principal.name
    )
    return FileObject.of(stored)


@router.get("")
async def list_files(
    files: FileSearchDep,
    principal: PrincipalDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> FileList:
    found = await run_in_threadpool(files.registry.files, purpose=purpose)
    visible = [f for f in found if principal.kbs is None or f.owner == principal.name]
    page, more = page_of(visible, after=after, before=None, limit=limit, order=order)
    data = [FileObject.of(f) for f in page]
    return FileList(
        data=data, has_more=more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.get("/{file_id}")
async def retrieve_file(file_id: str, files: FileSearchDep, principal: PrincipalDep) -> FileObject:
    return FileObject.of(await run_in_threadpool(owned, files, file_id, principal))


@router.get(
    "/{file_id}/content", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}}
)
async def file_content(file_id: str, files: FileSearchDep, principal: PrincipalDep) -> Response:
    stored = await run_in_threadpool(owned, files, file_id, principal)
    data = await run_in_threadpool(files.registry.content, file_id)
    return Response(
        data, media_type="application/octet-stream", headers={"Content-Disposition": attachment_header(stored.filename)}
    )


@router.delete("/{file_id}")
async def delete_file(file_id: str, files: FileSearchDep, principal: PrincipalDep) -> Deleted:
    """The file, and every document it became in every vector store (409 while one is still ingesting it)."""
    stored = await run_in_threadpool(owned, files, file_id, principal)
    await run_in_threadpool(files.delete_file, stored)
    return Deleted(id=file_id, object="file")
