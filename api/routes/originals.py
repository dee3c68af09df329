"""A document's original file, and its pages as images: ``GET …/documents/{id}/file`` downloads what was uploaded,
``GET …/documents/{id}/pages/{n}.png`` renders page ``n`` of a PDF or image document so that a client can show
the page a citation names (a chunk's ``page`` and ``bbox``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Annotated, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from kb_service.api import queries
from kb_service.api.deps import CatalogDep
from kb_service.api.routes.documents import KB_DOCS
from kb_service.core import limits
from kb_service.core.errors import OriginalNotFound

router = APIRouter(tags=["documents"])
BLOCK = 1 << 16
# An original may be HTML or SVG: it is served as a download that a browser never runs on this origin.
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
CACHE = "private, max-age=3600"


@router.get(
    KB_DOCS + "/{doc_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file as uploaded."}},
)
async def download(kb: str, doc_id: str, catalog: CatalogDep, request: Request) -> Response:
    """The document's original file as it was uploaded (a text sent as JSON comes back as UTF-8 text)."""
    doc, kept = await run_in_threadpool(queries.original, catalog, kb, doc_id)
    etag = f'"{kept.sha256}"'
    if _fresh(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE})
    try:  # opened now: a delete from here on cannot cut the download short
        handle = open(kept.path, "rb")  # noqa: SIM115 - closed by the response's iterator
    except FileNotFoundError:
        raise OriginalNotFound(kb, doc_id) from None
    headers = {
        "Content-Length": str(os.fstat(handle.fileno()).st_size),
        "Content-Disposition": attachment_header(PurePosixPath(doc.source).name),
        "ETag": etag,
        "Cache-Control": CACHE,
        **SAFE_HEADERS,
    }
    return StreamingResponse(_blocks(handle), media_type=queries.media_type(doc), headers=headers)


@router.get(
    KB_DOCS + "/{doc_id}/pages/{page}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The page as a PNG image."}},
)
async def page_image(
    kb: str,
    doc_id: str,
    page: Annotated[int, Path(ge=1, le=limits.MAX_PAGE_NUMBER, description="Page number, from 1 (a chunk's `page`).")],
    catalog: CatalogDep,
    request: Request,
    width: Annotated[
        int, Query(ge=limits.MIN_PAGE_WIDTH, le=limits.MAX_PAGE_WIDTH, description="Image width in pixels.")
    ] = limits.DEFAULT_PAGE_WIDTH,
) -> Response:
    """Page ``page`` of a PDF (rendered by PDFium) or of an image document (a TIFF's frame), ``width`` pixels wide.
    A chunk's ``bbox`` (fractions of the page: left, top, right, bottom) marks its text on this image."""
    doc, kept = await run_in_threadpool(queries.original, catalog, kb, doc_id)
    etag = f'"{kept.sha256}-{page}-{width}"'
    if _fresh(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE})
    png = await run_in_threadpool(queries.page_of, doc, kept, page, width)
    return Response(png, media_type="image/png", headers={"ETag": etag, "Cache-Control": CACHE})


def _fresh(request: Request, etag: str) -> bool:
    return etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}


def attachment_header(name: str) -> str:
    """``attachment`` with the file name: quoted as it is when plain ASCII, else also in RFC 5987 form."""
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'attachment; filename="{name}"'
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(BLOCK):
            yield block
