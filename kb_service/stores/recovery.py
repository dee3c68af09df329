"""Crash recovery and audits over any VectorStore.

Ingestion writes a document row as ``processing``, then its chunks, then publishes it (``ready``) in one step;
deletion marks the row ``deleting``, removes the chunks, then the row. Retrieval only sees ``ready`` documents, so
a crash at any point leaves nothing half-visible, only leftovers: rows stuck in ``pending``/``processing``/
``deleting`` and their chunks. :func:`recover` removes them (at start-up); :func:`audit` counts what a knowledge
base holds, leftovers included, and :func:`residue` proves a deleted document is gone."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kb_service.core.records import DocStatus, Document, KnowledgeBase
from kb_service.stores.base import VectorStore, all_documents
from kb_service.stores.originals import Originals

log = logging.getLogger(__name__)
UNFINISHED = (DocStatus.PENDING, DocStatus.PROCESSING, DocStatus.DELETING)
PAGE = 1_000


@dataclass
class Recovery:
    kb: str
    documents_removed: dict[str, int] = field(default_factory=dict)  # status -> count
    chunks_removed: int = 0
    originals_removed: int = 0  # original files whose document is gone


@dataclass
class Audit:
    documents: dict[str, int]  # status -> count
    chunks: int  # every chunk row in the store
    chunks_of_ready: int  # chunks of ready documents (what retrieval can see)
    leftover_chunks: int  # chunks of unfinished or failed documents, and chunks without a document row
    incomplete_documents: int = 0  # ready documents whose stored chunks are not the chunk count they declare
    originals: int = 0  # original files kept
    orphan_originals: int = 0  # original files whose document row is gone

    @property
    def clean(self) -> bool:
        unfinished = sum(self.documents.get(str(s), 0) for s in UNFINISHED)
        return (
            self.leftover_chunks == 0
            and unfinished == 0
            and self.incomplete_documents == 0
            and self.orphan_originals == 0
        )


def recover(
    store: VectorStore,
    kb: KnowledgeBase,
    *,
    grace_s: float = 0.0,
    originals: Originals | None = None,
    leased: Callable[[Document], bool] | None = None,
) -> Recovery:
    """Remove documents left unfinished by a crash (their rows, chunks and original files) and original files whose
    document is gone. What was touched in the last ``grace_s`` seconds is left alone: with several replicas on one
    store, another one may be writing it right now. Content whose ingestion was interrupted is ingested again by
    uploading it again (or by a resumed job). ``leased``: whether a live job holds a document (a job queue's
    workers renew their jobs' leases while they run), so it is left alone however old it is; a document is also
    read again just before it is removed and kept if it moved on meanwhile (published by the job that wrote it)."""
    report = Recovery(kb.name)
    cutoff = time.time() - grace_s
    for status in UNFINISHED:
        for doc in all_documents(store, kb, status=status, page=PAGE):
            if doc.updated_at > cutoff or (leased is not None and leased(doc)):
                continue
            now = store.get_document(kb, doc.id)
            if now is None or now.status != doc.status or now.updated_at != doc.updated_at:
                continue
            report.chunks_removed += store.count_chunks(kb, doc_id=doc.id)
            try:
                store.delete_document(kb, doc.id)
            except Exception as exc:  # noqa: BLE001 - recovery of the others goes on; the next start retries
                log.warning("could not remove unfinished document %s of %s: %s", doc.id, kb.name, exc)
                continue
            if originals is not None:
                originals.delete(kb, doc.id)
            report.documents_removed[str(status)] = report.documents_removed.get(str(status), 0) + 1
    if originals is not None:
        live = [d.id for d in all_documents(store, kb, page=PAGE)]
        report.originals_removed = originals.sweep(kb, live, older_than_s=grace_s)
    if report.documents_removed or report.originals_removed:
        log.warning(
            "recovered %s: removed %s unfinished documents, %d chunks and %d original files",
            kb.name,
            report.documents_removed,
            report.chunks_removed,
            report.originals_removed,
        )
    return report


def audit(store: VectorStore, kb: KnowledgeBase, originals: Originals | None = None) -> Audit:
    """Counts of documents by status and of chunks, how many chunks belong to no ready document, and the original
    files kept (with those whose document is gone)."""
    docs = all_documents(store, kb, page=PAGE)
    by_status: dict[str, int] = {}
    for doc in docs:
        by_status[str(doc.status)] = by_status.get(str(doc.status), 0) + 1
    total = store.count_chunks(kb)
    stored = {d.id: store.count_chunks(kb, doc_id=d.id) for d in docs if d.status == DocStatus.READY}
    ready = sum(stored.values())
    incomplete = sum(1 for d in docs if d.id in stored and stored[d.id] != d.chunk_count)
    files = originals.doc_ids(kb) if originals is not None else set()
    return Audit(
        originals=len(files),
        orphan_originals=len(files - {d.id for d in docs}),
        documents=by_status,
        chunks=total,
        chunks_of_ready=ready,
        leftover_chunks=total - ready,
        incomplete_documents=incomplete,
    )
