"""The read side of the documents API, shared by its routes and the in-process client so both answer alike."""

from __future__ import annotations

from dataclasses import asdict

from kb_service.api.schemas import AuditPublic, DocumentPage, DocumentPublic, ResiduePublic
from kb_service.catalog.catalog import Catalog
from kb_service.core.records import DocStatus
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.residue import residue
from kb_service.stores.recovery import audit


def document_page(catalog: Catalog, kb: str, *, status: DocStatus | None, offset: int, limit: int) -> DocumentPage:
    found = catalog.get(kb)
    docs = catalog.store.list_documents(found, status=status, offset=offset, limit=limit)
    total = catalog.store.count_documents(found, status=status)
    return DocumentPage(documents=[DocumentPublic.of(d) for d in docs], total=total, offset=offset, limit=limit)


def document_residue(catalog: Catalog, lexical: LexicalIndexes, kb: str, doc_id: str) -> ResiduePublic:
    r = residue(catalog.store, lexical, catalog.get(kb), doc_id)
    return ResiduePublic(**asdict(r), clean=r.clean)


def kb_audit(catalog: Catalog, kb: str) -> AuditPublic:
    a = audit(catalog.store, catalog.get(kb))
    return AuditPublic(**asdict(a), clean=a.clean)
