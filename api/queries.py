"""The read side of the documents API, shared by its routes and the in-process client so both answer alike."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import PurePosixPath

from kb_service.api.auth import ANONYMOUS, Principal
from kb_service.api.schemas import AuditPublic, DocumentPage, DocumentPublic, ResiduePublic
from kb_service.catalog.catalog import Catalog
from kb_service.core.errors import KnowledgeBaseNotFound, OriginalNotFound
from kb_service.core.records import DocStatus, Document
from kb_service.ingest.parsers.pages import page_png
from kb_service.retrieval.federated import Target
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.residue import residue
from kb_service.stores.originals import Original
from kb_service.stores.recovery import audit


def open_targets(catalog: Catalog, names: Sequence[str] | None, principal: Principal = ANONYMOUS) -> list[Target]:
    """The knowledge bases a search over several looks in, each with its own embedder: those named (Forbidden for
    one outside the caller's key's scope), or every one the caller may use."""
    if names is None:
        names = [kb.name for kb in catalog.list() if principal.allows(kb.name)]
        if not names:
            raise KnowledgeBaseNotFound("there is no knowledge base to search: create one first")
    names = list(dict.fromkeys(names))
    for name in names:
        principal.check(name)
    return [Target(*catalog.open(name)) for name in names]


def document_page(catalog: Catalog, kb: str, *, status: DocStatus | None, offset: int, limit: int) -> DocumentPage:
    found = catalog.get(kb)
    docs = catalog.store.list_documents(found, status=status, offset=offset, limit=limit)
    total = catalog.store.count_documents(found, status=status)
    return DocumentPage(documents=[DocumentPublic.of(d) for d in docs], total=total, offset=offset, limit=limit)


def document_residue(catalog: Catalog, lexical: LexicalIndexes, kb: str, doc_id: str) -> ResiduePublic:
    r = residue(catalog.store, lexical, catalog.get(kb), doc_id, catalog.originals)
    return ResiduePublic(**asdict(r), clean=r.clean)


def kb_audit(catalog: Catalog, kb: str) -> AuditPublic:
    a = audit(catalog.store, catalog.get(kb), catalog.originals)
    return AuditPublic(**asdict(a), clean=a.clean)


def original(catalog: Catalog, kb: str, doc_id: str) -> tuple[Document, Original]:
    """The document and its kept original file, or OriginalNotFound."""
    found, doc = catalog.document(kb, doc_id)
    kept = catalog.originals.get(found, doc_id) if catalog.originals is not None else None
    if kept is None:
        raise OriginalNotFound(kb, doc_id)
    return doc, kept


def page_image(catalog: Catalog, kb: str, doc_id: str, page: int, width: int) -> bytes:
    """Page ``page`` (1-based) of a PDF or image document, rendered from its original as a PNG."""
    doc, kept = original(catalog, kb, doc_id)
    return page_of(doc, kept, page, width)


def page_of(doc: Document, kept: Original, page: int, width: int) -> bytes:
    return page_png(kept.path, doc.format, page, width, name=doc.source)


def media_type(doc: Document) -> str:
    """The original's media type, from its name (text given without a file name is plain text)."""
    guessed, _ = mimetypes.guess_type(PurePosixPath(doc.source).name, strict=False)
    if guessed is None:
        return "text/plain; charset=utf-8" if doc.format in ("text", "markdown") else "application/octet-stream"
    return guessed
