"""The ingestion pipeline: parse → chunk → summarise (a producer thread) → embed (the calling thread) → store
(a writer thread, while the next batch is embedded), batched across documents. A document becomes visible to
retrieval only once all its chunks and its summary are stored."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from kb_service.core.config import Settings
from kb_service.core.errors import (
    DocumentNotFound,
    IndexSwitched,
    KBError,
    KnowledgeBaseNotFound,
    ParseError,
    StoreError,
)
from kb_service.core.records import (
    Chunk,
    DocStatus,
    Document,
    KnowledgeBase,
    ParsedDocument,
    document_context,
    indexed_text,
    text_hash,
)
from kb_service.embeddings.base import Embedder
from kb_service.ingest.chunking import Chunker, TokenChunker
from kb_service.ingest.parse_pool import ParsePool, auto_workers, shared_pool
from kb_service.ingest.parsers.ocr import OcrOptions
from kb_service.ingest.sources import SourceItem
from kb_service.ingest.summarize import ExtractiveSummarizer, Summarizer
from kb_service.stores.base import StoredVectors, VectorStore, seal
from kb_service.stores.originals import Originals

log = logging.getLogger(__name__)


class Stage(StrEnum):
    """Where a document is in the pipeline (``Ingestor.on_stage``)."""

    PARSING = "parsing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    STORING = "storing"


class Outcome(StrEnum):
    ADDED = "added"
    UNCHANGED = "unchanged"
    REPLACED = "replaced"
    FAILED = "failed"


@dataclass
class IngestResult:
    source: str
    outcome: Outcome
    doc_id: str | None = None
    chunks: int = 0
    replaced: str | None = None
    reason: str = ""
    error: str = ""
    index: int = -1  # position of the source in the input


@dataclass
class _Prepared:
    index: int
    item: SourceItem
    parsed: ParsedDocument
    doc_id: str
    chunks: list[Chunk]
    summary: str
    replaces: list[str] = field(default_factory=list)
    context: str = ""  # the line each chunk is embedded under (``chunk_context=document``), else ""

    def document(self, status: DocStatus, **fields: object) -> Document:
        return Document(
            id=self.doc_id,
            source=self.item.name,
            title=self.parsed.title,
            format=self.parsed.format,
            status=status,
            **fields,  # type: ignore[arg-type]
        )


@dataclass
class _Staged:
    """A batch between the consumer and the writer: documents to store, with their vectors or the error that
    stopped their embedding, and ids of unfinished earlier copies to clear."""

    todo: list[_Prepared]
    stale: list[str]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    error: KBError | None = None


_DONE = object()
DELETED = "the document was deleted while it was being ingested"
FIRST_BATCH_CHUNKS = 32


def mean_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The normalised mean of chunk vectors: a document's summary vector with ``summary_vector=chunk-mean``."""
    mean: np.ndarray = np.mean(vectors, axis=0)
    return (mean / (np.linalg.norm(mean) or 1.0)).astype(np.float32)


class Ingestor:
    """Ingests sources into one knowledge base with the KB's own embedder."""

    def __init__(
        self,
        *,
        store: VectorStore,
        kb: KnowledgeBase,
        embedder: Embedder,
        chunker: Chunker,
        summarizer: Summarizer,
        batch_chunks: int = 512,
        max_bytes: int | None = None,
        summary_vector: str = "embed",
        ocr: OcrOptions | None = None,
        originals: Originals | None = None,
        parse_pool: ParsePool | None = None,
        chunk_context: str = "none",
    ) -> None:
        self.store = store
        self.kb = kb
        self.embedder = embedder
        self.chunker = chunker
        self.summarizer = summarizer
        self.batch_chunks = batch_chunks
        self.max_bytes = max_bytes
        self.summary_vector = summary_vector
        self.ocr = ocr or OcrOptions()
        self.originals = originals  # where each document's original file is kept (None: nowhere)
        self.parse_pool = parse_pool  # worker processes for files (None: parse in the producer thread)
        self.chunk_context = chunk_context  # "document": each chunk is embedded under its document's title and name
        # Told (source name, stage, chunks) as a document moves: parsing, chunking, embedding, storing;
        # ``chunks`` is the document's chunk count once it is known (0 before).
        self.on_stage: Callable[[str, Stage, int], None] = lambda _source, _stage, _chunks: None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        store: VectorStore,
        kb: KnowledgeBase,
        embedder: Embedder,
        summarizer: Summarizer | None = None,
        originals: Originals | None = None,
    ) -> Ingestor:
        max_tokens = embedder.info.max_tokens
        chunker = TokenChunker.for_model(
            embedder.count_tokens,
            max_tokens,
            chunk_size=settings.ingest.chunk_size,
            chunk_overlap=settings.ingest.chunk_overlap,
        )
        summarizer = summarizer or ExtractiveSummarizer(
            embedder.count_tokens, budget_tokens=min(settings.ingest.summary_tokens, max_tokens)
        )
        return cls(
            store=store,
            kb=kb,
            embedder=embedder,
            chunker=chunker,
            summarizer=summarizer,
            batch_chunks=settings.ingest.batch_chunks,
            max_bytes=settings.ingest.max_file_bytes,
            summary_vector=settings.ingest.summary_vector,
            ocr=OcrOptions(settings.ingest.ocr, settings.ingest.ocr_min_confidence),
            originals=originals,
            parse_pool=shared_pool(settings.ingest.parse_workers or auto_workers()),
            chunk_context=settings.ingest.chunk_context,
        )

    # -- public -----------------------------------------------------------------------------------
    def ingest(
        self, items: Iterable[SourceItem], *, on_result: Callable[[IngestResult], None] | None = None
    ) -> list[IngestResult]:
        """Ingest every item; parse failures are reported per item and never stop the run.
        Results come back in input order (``on_result`` sees them as they finish)."""
        results: list[IngestResult] = []

        def emit(result: IngestResult) -> None:
            results.append(result)
            if on_result is not None:
                on_result(result)

        prepared: queue.Queue[object] = queue.Queue(maxsize=256)
        failure: list[BaseException] = []  # what stopped the producer, re-raised here
        producer = threading.Thread(target=self._produce, args=(items, prepared, failure), daemon=True)
        producer.start()
        # Vectors are looked up by text hash only when the KB holds chunks already: a first upload has none to reuse
        # (a text repeated across this run's batches is then embedded again).
        reuse = self.store.count_chunks(self.kb) > 0
        # Store writes run on one writer thread, in batch order, while the next batch is embedded.
        writer = ThreadPoolExecutor(1, thread_name_prefix="ingest-store")
        pending: Future[list[IngestResult]] | None = None

        def settle() -> None:
            nonlocal pending
            if pending is not None:
                done, pending = pending, None
                for r in done.result():
                    emit(r)

        def flush(batch: list[_Prepared]) -> None:
            nonlocal pending
            unchanged, staged = self._stage(batch, reuse=reuse)
            for r in unchanged:
                emit(r)
            settle()
            if staged is not None:
                pending = writer.submit(self._commit, staged)

        batch: list[_Prepared] = []
        seen: set[str] = set()
        # Batches start small and double: the model starts as soon as a few documents are ready.
        threshold = min(FIRST_BATCH_CHUNKS, self.batch_chunks)
        try:
            while (entry := prepared.get()) is not _DONE:
                if isinstance(entry, IngestResult):
                    emit(entry)
                    continue
                assert isinstance(entry, _Prepared)
                if entry.doc_id in seen:  # the same content twice in one run
                    emit(
                        IngestResult(
                            entry.item.name, Outcome.UNCHANGED, entry.doc_id, len(entry.chunks), index=entry.index
                        )
                    )
                    continue
                seen.add(entry.doc_id)
                batch.append(entry)
                if sum(len(p.chunks) for p in batch) >= threshold:
                    flush(batch)
                    batch = []
                    threshold = min(2 * threshold, self.batch_chunks)
            if failure:
                settle()  # what was stored is reported before the error
                raise failure[0]
            flush(batch)
            settle()
        except KnowledgeBaseNotFound as exc:
            if self._reindexed():  # a write went to the index a re-index has just retired
                raise IndexSwitched(self.kb.name) from exc
            raise
        finally:
            writer.shutdown(wait=True)
        if any(r.outcome in (Outcome.ADDED, Outcome.REPLACED) for r in results):
            seal(self.store, self.kb)
        return sorted(results, key=lambda r: r.index)

    # -- producer: parsing, chunking, summaries -----------------------------------------------------
    def _produce(self, items: Iterable[SourceItem], out: queue.Queue[object], failure: list[BaseException]) -> None:
        # Several documents are prepared at once when summaries call a model or files parse in worker processes.
        workers = max(self.summarizer.concurrency, self.parse_pool.workers if self.parse_pool else 1)
        try:
            if workers <= 1:
                for index, item in enumerate(items):
                    out.put(self._prepare(index, item))
                return
            with ThreadPoolExecutor(workers, thread_name_prefix="prepare") as pool:
                window: deque[Future[_Prepared | IngestResult]] = deque()
                for index, item in enumerate(items):
                    window.append(pool.submit(self._prepare, index, item))
                    if len(window) >= 2 * workers:  # bounded look-ahead, results kept in input order
                        out.put(window.popleft().result())
                while window:
                    out.put(window.popleft().result())
        except BaseException as exc:  # surfaced in the consumer, which re-raises it
            failure.append(exc)
        finally:
            out.put(_DONE)

    def _prepare(self, index: int, item: SourceItem) -> _Prepared | IngestResult:
        self.on_stage(item.name, Stage.PARSING, 0)
        try:
            if self.parse_pool is not None and item.text is None:  # a file: parsed in a worker process
                parsed = self.parse_pool.parse(item, max_bytes=self.max_bytes, ocr=self.ocr)
            else:
                parsed = item.parse(max_bytes=self.max_bytes, ocr=self.ocr)
        except ParseError as exc:
            return IngestResult(item.name, Outcome.FAILED, reason=exc.reason, error=exc.detail, index=index)
        except OSError as exc:
            return IngestResult(item.name, Outcome.FAILED, reason="unreadable", error=str(exc), index=index)
        doc_id = parsed.content_hash
        self.on_stage(item.name, Stage.CHUNKING, 0)
        chunks = self.chunker.split(parsed, doc_id)
        context = document_context(parsed.title, item.name) if self.chunk_context == "document" else ""
        if context:
            for c in chunks:  # the hash names what is embedded: a vector is reused only for the same input
                c.hash = text_hash(indexed_text(context, c.text))
        known = self.store.get_document(self.kb, doc_id) if self.summarizer.calls_model else None
        if known is not None and known.status == DocStatus.READY:
            summary = known.summary  # unchanged content: no model call (the consumer reports it unchanged)
        else:
            summary = self.summarizer.summarize(parsed, chunks)
        return _Prepared(
            index=index, item=item, parsed=parsed, doc_id=doc_id, chunks=chunks, summary=summary, context=context
        )

    # -- consumer: embedding; writer: storing -------------------------------------------------------
    def _stage(self, batch: list[_Prepared], *, reuse: bool) -> tuple[list[IngestResult], _Staged | None]:
        """Sort out content the KB already holds, then embed the rest (on the consumer thread, while the writer
        stores the previous batch; no earlier batch of this run can hold the same content)."""
        if not batch:
            return [], None
        existing = self.store.get_documents(self.kb, [p.doc_id for p in batch])
        unchanged, todo, stale = [], [], []
        for p in batch:
            old = existing.get(p.doc_id)
            if old is not None and old.status == DocStatus.READY and self._complete(old):
                unchanged.append(self._already_there(p, old))
            else:
                if old is not None:
                    stale.append(old.id)  # left by an interrupted or failed earlier run
                todo.append(p)
        if not todo:
            return unchanged, None
        for p in todo:
            self.on_stage(p.item.name, Stage.EMBEDDING, len(p.chunks))
        summaries = [p.summary for p in todo if self.summary_vector == "embed" or not p.chunks]
        inputs = [indexed_text(p.context, c.text) for p in todo for c in p.chunks]
        try:
            vectors = self._vectors(inputs + summaries, reuse=reuse)
        except KBError as exc:
            return unchanged, _Staged(todo, stale, error=exc)
        return unchanged, _Staged(todo, stale, vectors)

    def _complete(self, doc: Document) -> bool:
        """A ready row holds every chunk it declares (one that lost some is ingested again, not called unchanged)."""
        return self.store.count_chunks(self.kb, doc_id=doc.id) == doc.chunk_count

    def _already_there(self, p: _Prepared, there: Document) -> IngestResult:
        """Content the KB holds already. Under another source name, this source's own earlier version (if any) is
        still replaced: it must not stay searchable because its new content happens to exist elsewhere."""
        result = IngestResult(p.item.name, Outcome.UNCHANGED, p.doc_id, there.chunk_count, index=p.index)
        if self.originals is not None and self.originals.get(self.kb, p.doc_id) is None:
            try:  # ingested before originals were kept (or with them off): kept now
                self._keep_original(p)
            except StoreError as exc:
                log.warning("%s", exc)
        if there.source == p.item.name:
            return result
        for own in self.store.documents_by_source(self.kb, [p.item.name]):
            if own.id != p.doc_id:
                self._delete_if_there(own.id)
                result.outcome, result.replaced = Outcome.REPLACED, result.replaced or own.id
        return result

    def _commit(self, staged: _Staged) -> list[IngestResult]:
        """Writer thread, in batch order: find what each document replaces (by source), store and publish."""
        todo, stale = staged.todo, list(staged.stale)
        by_source = {p.item.name: p for p in todo}
        for old in self.store.documents_by_source(self.kb, list(by_source)):
            new = by_source[old.source]
            if old.id == new.doc_id:
                continue
            if old.status == DocStatus.READY:
                new.replaces.append(old.id)
            else:
                stale.append(old.id)
        try:
            for doc_id in dict.fromkeys(stale):
                self._delete_if_there(doc_id)
            if staged.error is not None:
                raise staged.error
            published = self._write(todo, staged.vectors)
        except KnowledgeBaseNotFound as exc:
            if self._reindexed():  # the originals are the knowledge base's, kept across its indexes
                raise IndexSwitched(self.kb.name) from exc
            if self.originals is not None:  # what this run kept of a dropped knowledge base
                self.originals.drop(self.kb)
            raise  # dropped meanwhile: the whole run stops
        except KBError as exc:
            log.error("ingest batch of %d documents failed: %s", len(todo), exc)
            return self._fail(todo, exc)
        results = []
        for p in todo:
            if p.doc_id not in published:  # deleted during its ingest: the delete won
                self._forget_original(p.doc_id)
                results.append(
                    IngestResult(p.item.name, Outcome.FAILED, p.doc_id, reason="deleted", error=DELETED, index=p.index)
                )
                continue
            outcome = Outcome.REPLACED if p.replaces else Outcome.ADDED
            replaced = p.replaces[0] if p.replaces else None
            results.append(
                IngestResult(p.item.name, outcome, p.doc_id, len(p.chunks), replaced=replaced, index=p.index)
            )
        return results

    def _write(self, todo: Sequence[_Prepared], vectors: dict[str, np.ndarray]) -> set[str]:
        """Store and publish; returns the ids published (a document deleted meanwhile is not)."""
        now = time.time()
        docs = []
        for p in todo:
            for c in p.chunks:
                c.vector = vectors[c.hash]
            docs.append(
                p.document(
                    DocStatus.PROCESSING,
                    summary=p.summary,
                    chunk_count=len(p.chunks),
                    n_chars=len(p.parsed.text),
                    metadata=p.parsed.metadata,
                    created_at=now,
                    updated_at=now,
                    summary_vector=self._summary_vector(p, vectors),
                )
            )
        for p in todo:
            self.on_stage(p.item.name, Stage.STORING, len(p.chunks))
        self.store.put_documents(self.kb, docs)
        self.store.add_chunks(self.kb, [c for p in todo for c in p.chunks])
        for p in todo:  # before publishing: a ready document always has its original
            self._keep_original(p)
        replaces = {p.doc_id: old for p in todo for old in p.replaces[:1]}
        published = set(self.store.publish_documents(self.kb, docs, replaces=replaces))
        for new, old in replaces.items():
            if new in published:  # the store removed the old version on publishing
                self._forget_original(old)
        for old in (old for p in todo if p.doc_id in published for old in p.replaces[1:]):
            self._delete_if_there(old)
        return published

    def _reindexed(self) -> bool:
        """Whether the knowledge base is still there under another index (a re-index switched it), not dropped."""
        try:
            now = self.store.get_kb(self.kb.name)
        except KnowledgeBaseNotFound:
            return False
        return now.uid == self.kb.uid and now.index != self.kb.index

    def _keep_original(self, p: _Prepared) -> None:
        if self.originals is None:
            return
        item = p.item
        try:
            if item.data is not None:
                self.originals.put(self.kb, p.doc_id, item.data)
            elif item.text is not None:
                self.originals.put(self.kb, p.doc_id, item.text.encode("utf-8"))
            elif item.path is not None:
                self.originals.put_file(self.kb, p.doc_id, item.path)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and self.store.get_document(self.kb, p.doc_id) is None:
                return  # deleted meanwhile, its folder with it: the delete wins (the publish will not happen)
            raise StoreError(f"could not keep the original of {item.name!r}: {exc}") from exc

    def _forget_original(self, doc_id: str) -> None:
        if self.originals is not None:
            self.originals.delete(self.kb, doc_id)

    def _delete_if_there(self, doc_id: str) -> None:
        with contextlib.suppress(DocumentNotFound):  # deleted meanwhile
            self.store.delete_document(self.kb, doc_id)
        self._forget_original(doc_id)

    def _summary_vector(self, p: _Prepared, vectors: dict[str, np.ndarray]) -> np.ndarray:
        if self.summary_vector == "embed" or not p.chunks:
            return vectors[text_hash(p.summary)]
        return mean_vector([vectors[c.hash] for c in p.chunks])

    def _vectors(self, texts: list[str], *, reuse: bool) -> dict[str, np.ndarray]:
        """Vectors keyed by text hash: reuse what the KB already stores (``reuse``), embed each new text once."""
        by_hash = {text_hash(t): t for t in texts}
        known = (
            self.store.vectors_for_hashes(self.kb, list(by_hash))
            if reuse and isinstance(self.store, StoredVectors)
            else {}
        )
        missing = [h for h in by_hash if h not in known]
        if missing:
            embedded = self.embedder.embed_documents([by_hash[h] for h in missing])
            known.update(zip(missing, embedded, strict=True))
        return known

    def _fail(self, todo: Sequence[_Prepared], exc: KBError) -> list[IngestResult]:
        failed = []
        for p in todo:
            try:
                if self.store.get_document(self.kb, p.doc_id) is not None:
                    self.store.delete_document(self.kb, p.doc_id)
                self._forget_original(p.doc_id)
                self.store.put_documents(
                    self.kb,
                    [p.document(DocStatus.FAILED, error=str(exc))],
                )
            except KBError:
                log.exception("could not record the failure of %s", p.item.name)
            failed.append(
                IngestResult(
                    p.item.name, Outcome.FAILED, p.doc_id, reason="ingest_error", error=str(exc), index=p.index
                )
            )
        return failed
