"""Vector stores over knowledge bases: a vector store *is* a knowledge base (its id is the knowledge base's name),
and a vector store file is a document of it: one put in from an uploaded file (an attachment, ingested by an
ordinary ingestion job) or any other document, listed under its document id.

Identical content is one document (as everywhere): two files with the same text attached to one knowledge base
become one document, and it is deleted only when the last of them is detached."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kb_service.catalog import Catalog
from kb_service.core.errors import (
    DocumentNotFound,
    FileInUse,
    FileNotFound,
    InvalidInput,
    JobNotFound,
    KnowledgeBaseNotFound,
)
from kb_service.core.metadata import check_metadata
from kb_service.core.records import DERIVED_METADATA, DocStatus, Document, KnowledgeBase, ScoredChunk, possible_doc_id
from kb_service.embeddings.base import Embedder
from kb_service.filesearch import filters
from kb_service.filesearch.registry import Attachment, AttachmentStatus, FileRegistry, StoredFile
from kb_service.ingest.parsers import detect_format
from kb_service.ingest.sources import SourceItem
from kb_service.jobs import JobManager, JobStatus
from kb_service.retrieval.fusion import rrf
from kb_service.retrieval.pipeline import Retriever, SearchOptions
from kb_service.stores.base import all_documents
from kb_service.stores.filters import Condition, Filter

MAX_ATTRIBUTES = 16  # OpenAI's limit on a file's attributes
SET_HERE = frozenset({"source", "title", "lang", "bbox"}) | DERIVED_METADATA  # metadata the service sets
NOTHING = Filter((Condition("doc_id", ("",)),))  # matches no document: no id is empty
LOST = "the ingestion job of this file was lost (the service restarted without its upload); attach the file again"


@dataclass(frozen=True)
class StoreFile:
    """One file of a vector store, as its API shows it."""

    id: str
    filename: str
    status: AttachmentStatus
    created_at: float
    usage_bytes: int
    attributes: dict[str, Any] = field(default_factory=dict)
    doc_id: str | None = None
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True)
class FileHit:
    """A search hit under the file it came from."""

    file_id: str
    filename: str
    hit: ScoredChunk
    attributes: dict[str, Any]


def source_name(file: StoredFile) -> str:
    """The document name a file is ingested under: its id and name, so two files of one name are two documents,
    never a replacement of one by the other."""
    return f"{file.id}/{file.filename}"


def attributes_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """A document's attributes: its metadata without what the service set (file name, title, language, box …)."""
    return {k: v for k, v in metadata.items() if k not in SET_HERE}


def check_attributes(raw: object) -> dict[str, Any]:
    attributes = check_metadata(raw or {})
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"attributes take at most {MAX_ATTRIBUTES} keys, got {len(attributes)}")
    reserved = sorted(set(attributes) & SET_HERE)
    if reserved:
        raise InvalidInput(f"attribute keys {reserved} are reserved (the service sets them)")
    return attributes


class FileSearch:
    def __init__(self, registry: FileRegistry, catalog: Catalog, jobs: JobManager) -> None:
        self.registry = registry
        self.catalog = catalog
        self.jobs = jobs

    def attach(self, kb_name: str, file: StoredFile, attributes: dict[str, Any]) -> StoreFile:
        """Ingest ``file`` into the knowledge base (a job; the file is ``in_progress`` until it ends). Attaching a
        file that is attached already answers the attachment there is."""
        kb = self.catalog.get(kb_name)
        existing = self.registry.attachment(kb.uid, file.id)
        if existing is not None:
            return self._view(self._settle(existing), file)
        data = self.registry.content(file.id)
        detect_format(data, file.filename)  # a type we cannot parse is refused now (415), as an upload is
        item = SourceItem(source_name(file), data=data, title=file.filename, metadata=attributes)
        job = self.jobs.submit(kb.name, [item])[0]
        attachment = Attachment(kb=kb.name, kb_uid=kb.uid, file_id=file.id, job_id=job.id, attributes=attributes)
        self.registry.put(attachment)
        return self._view(attachment, file)

    def file(self, kb_name: str, file_id: str) -> StoreFile:
        """One file of the vector store: an attachment, or a document by its id."""
        kb = self.catalog.get(kb_name)
        attachment = self.registry.attachment(kb.uid, file_id)
        if attachment is not None:
            return self._view(self._settle(attachment), self._stored(file_id))
        doc = self.catalog.store.get_document(kb, file_id) if possible_doc_id(file_id) else None
        if doc is None or doc.status != DocStatus.READY:
            raise DocumentNotFound(kb.name, file_id)
        return _document_view(doc)

    def files(self, kb_name: str) -> list[StoreFile]:
        """Every file of the vector store, oldest first: its attachments and its other ready documents."""
        kb = self.catalog.get(kb_name)
        attachments = [self._settle(a) for a in self.registry.attachments(kb.uid)]
        out = [self._view(a, self._stored(a.file_id)) for a in attachments]
        attached = {a.doc_id for a in attachments if a.doc_id}
        docs = all_documents(self.catalog.store, kb, status=DocStatus.READY)
        out += [_document_view(d) for d in docs if d.id not in attached]
        return sorted(out, key=lambda f: (f.created_at, f.id))

    def detach(self, kb_name: str, file_id: str) -> None:
        """Take the file out of the vector store: its document is deleted (unless another attachment shares it);
        the file itself stays in the Files API."""
        kb = self.catalog.get(kb_name)
        attachment = self.registry.attachment(kb.uid, file_id)
        if attachment is None:  # a document not put in from a file
            self.catalog.delete_document(kb.name, file_id)
            return
        self._detach(kb, self._settle(attachment))

    def delete_file(self, file: StoredFile) -> None:
        """Delete a file and every document it became, in every vector store (FileInUse while one is ingesting)."""
        attachments = [self._settle(a) for a in self.registry.attachments_of_file(file.id)]
        busy = [a.kb for a in attachments if a.status == "in_progress"]
        if busy:
            raise FileInUse(
                f"file {file.id!r} is still being ingested into vector store(s) {busy}: delete it once its status "
                "is completed or failed"
            )
        for attachment in attachments:
            try:
                kb = self.catalog.get(attachment.kb)
            except KnowledgeBaseNotFound:
                kb = None
            if kb is None or kb.uid != attachment.kb_uid:  # the knowledge base was dropped
                self.registry.detach(attachment.kb_uid, file.id)
                continue
            self._detach(kb, attachment)
        self.registry.remove(file.id)

    def forget(self, kb: KnowledgeBase) -> None:
        """A dropped knowledge base's attachments."""
        self.registry.forget_kb(kb.uid)

    def counts(self, kb: KnowledgeBase) -> dict[str, int]:
        """OpenAI's ``file_counts``: attachments in progress and failed, and every ready document completed."""
        states = [self._settle(a).status for a in self.registry.attachments(kb.uid)]
        counts = {
            "in_progress": states.count("in_progress"),
            "completed": self.catalog.store.count_documents(kb, status=DocStatus.READY),
            "failed": states.count("failed"),
            "cancelled": states.count("cancelled"),
        }
        return counts | {"total": sum(counts.values())}

    def usage_bytes(self, kb: KnowledgeBase) -> int:
        """The bytes of the files whose documents are in the knowledge base."""
        total = 0
        for attachment in self.registry.attachments(kb.uid):
            stored = self._stored(attachment.file_id) if attachment.status == "completed" else None
            total += stored.bytes if stored else 0
        return total

    def search(
        self,
        retriever: Retriever,
        kb: KnowledgeBase,
        embedder: Embedder,
        queries: Sequence[str],
        *,
        options: SearchOptions,
        where: filters.Node | None,
    ) -> list[FileHit]:
        """The best chunks for ``queries`` (several: fused by reciprocal rank), each under its file."""
        scope = self.scope(kb, where)
        if scope is NOTHING:
            return []
        options = replace(options, filters=scope).validate()
        results = [retriever.search(kb, embedder, q, options).hits for q in queries]
        if len(results) == 1:
            hits = results[0]
        else:
            by_id = {h.chunk.id: h for hits in results for h in hits}
            fused = rrf([[h.chunk.id for h in hits] for hits in results], k=options.rrf_k)
            hits = [replace(by_id[c], score=s) for c, s in sorted(fused.items(), key=lambda kv: -kv[1])]
            hits = hits[: options.top_k]
        names = self.file_names(kb, [h.chunk.doc_id for h in hits])
        return [FileHit(*names[h.chunk.doc_id], hit=h, attributes=attributes_of(h.chunk.metadata)) for h in hits]

    def scope(self, kb: KnowledgeBase, where: filters.Node | None) -> Filter | None:
        """The store filter that searches what ``where`` selects (``NOTHING`` when no document matches)."""
        scope = filters.store_filter(where)
        if where is None or scope is not None:
            return scope
        docs = all_documents(self.catalog.store, kb, status=DocStatus.READY)  # evaluated here, per document
        return filters.documents_filter([d.id for d in docs if where.matches(d.metadata)]) or NOTHING

    def file_names(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """doc_id → (file id, file name): the file it was put in from, else the document itself."""
        attachments = self.registry.attachments_of_docs(kb.uid, doc_ids)
        out: dict[str, tuple[str, str]] = {}
        for doc_id in doc_ids:
            attachment = attachments.get(doc_id)
            if attachment is not None:
                stored = self._stored(attachment.file_id)
                out[doc_id] = (attachment.file_id, stored.filename if stored else attachment.file_id)
            else:
                doc = self.catalog.store.get_document(kb, doc_id)
                out[doc_id] = (doc_id, doc.source if doc else doc_id)
        return out

    def _detach(self, kb: KnowledgeBase, attachment: Attachment) -> None:
        if attachment.status == "in_progress":
            raise FileInUse(
                f"file {attachment.file_id!r} is still being ingested into vector store {kb.name!r}: remove it once "
                "its status is completed or failed"
            )
        doc_id = attachment.doc_id
        shared = doc_id is not None and any(
            a.file_id != attachment.file_id and a.doc_id == doc_id for a in self.registry.attachments(kb.uid)
        )
        if doc_id is not None and not shared:
            with contextlib.suppress(DocumentNotFound):  # deleted through the documents API meanwhile
                self.catalog.delete_document(kb.name, doc_id)
        self.registry.detach(kb.uid, attachment.file_id)

    def _settle(self, attachment: Attachment) -> Attachment:
        """The attachment with its job's outcome, recorded once the job has ended."""
        if attachment.status != "in_progress":
            return attachment
        try:
            job = self.jobs.get(attachment.job_id)
        except JobNotFound:  # forgotten (the oldest finished jobs are): its document tells, if it is there
            doc_id = self._published(attachment)
            if doc_id is not None:
                settled = replace(attachment, status="completed", doc_id=doc_id)
            else:
                settled = replace(attachment, status="failed", error_code="server_error", error=LOST)
        else:
            if job.status == JobStatus.READY:
                settled = replace(attachment, status="completed", doc_id=job.doc_id)
            elif job.status == JobStatus.FAILED:
                code = "unsupported_file" if job.reason == "unsupported_format" else "invalid_file"
                code = "server_error" if job.reason in ("ingest_error", "interrupted") else code
                settled = replace(attachment, status="failed", error_code=code, error=job.error or job.reason)
            else:
                return attachment
        self.registry.put(settled)
        return settled

    def _published(self, attachment: Attachment) -> str | None:
        """The ready document the attachment's job made, found by its source name (None if there is none)."""
        stored = self._stored(attachment.file_id)
        try:
            kb = self.catalog.get(attachment.kb)
        except KnowledgeBaseNotFound:
            return None
        if stored is None or kb.uid != attachment.kb_uid:
            return None
        docs = self.catalog.store.documents_by_source(kb, [source_name(stored)])
        return next((d.id for d in docs if d.status == DocStatus.READY), None)

    def _stored(self, file_id: str) -> StoredFile | None:
        try:
            return self.registry.get(file_id)
        except FileNotFound:  # deleted meanwhile: the attachment is shown by its id
            return None

    @staticmethod
    def _view(attachment: Attachment, file: StoredFile | None) -> StoreFile:
        return StoreFile(
            id=attachment.file_id,
            filename=file.filename if file else attachment.file_id,
            status=attachment.status,
            created_at=attachment.created_at,
            usage_bytes=file.bytes if file else 0,
            attributes=attachment.attributes,
            doc_id=attachment.doc_id,
            error_code=attachment.error_code,
            error=attachment.error,
        )


def _document_view(doc: Document) -> StoreFile:
    return StoreFile(
        id=doc.id,
        filename=doc.source,
        status="completed",
        created_at=doc.created_at,
        usage_bytes=doc.n_chars,
        attributes=attributes_of(doc.metadata),
        doc_id=doc.id,
    )
