"""Re-indexing a knowledge base with another embedding model or chunking, without downtime.

The new index (the *shadow*) is built beside the one serving, which answers every search meanwhile. It is filled by
passes: each lists the documents ready in the serving index and copies those the shadow lacks (re-embedding their
stored chunks with the new model, or re-chunking their kept original files), and removes from the shadow what is no
longer there. Uploads and deletes go on in the serving index during the passes; each pass catches up with them.
Once a pass has copied everything, the switch makes the shadow serve in one step, provided nothing was published or
deleted since that pass read the serving index's revision (else another, short pass runs first). The old index keeps
answering the searches that started on it for ``reindex_retire_s``, then it is removed.

The shadow is recorded in the store, so a re-index killed at any point leaves the old index serving, and running it
again (or starting the service) resumes it: what the shadow holds already is not embedded again. A cancelled or
failed re-index discards the shadow: the knowledge base is exactly as it was."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import (
    DocumentNotFound,
    InvalidInput,
    KBError,
    ParseError,
    ReindexCancelled,
    ReindexNotFound,
    StoreError,
)
from kb_service.core.records import (
    Chunk,
    DocStatus,
    Document,
    KnowledgeBase,
    document_context,
    indexed_text,
    text_hash,
)
from kb_service.embeddings.base import Embedder
from kb_service.ingest.chunking import TokenChunker
from kb_service.ingest.parsers.ocr import OcrOptions
from kb_service.ingest.parsers.registry import parse_file
from kb_service.ingest.pipeline import mean_vector
from kb_service.stores.base import Reindexable, Shadow, VectorStore, all_documents, chunks_of, seal

log = logging.getLogger(__name__)
PAGE = 10_000  # documents listed per call (Milvus reads every row for each page: few pages)
SWITCH_ATTEMPTS = 50  # passes that find changes made meanwhile before a switch gives up (a constant upload stream)


@dataclass(frozen=True)
class ReindexPlan:
    """What to build: the embedding model and, to re-chunk from the original files, the chunking."""

    embedding_model: str
    chunk_size: int | None = None
    chunk_overlap: int | None = None

    @property
    def rechunk(self) -> bool:
        return self.chunk_size is not None or self.chunk_overlap is not None

    def chunking(self, settings: Settings) -> tuple[int, int]:
        """Chunk size and overlap to re-chunk with: the plan's, else the configured ones."""
        size = self.chunk_size if self.chunk_size is not None else settings.ingest.chunk_size
        overlap = self.chunk_overlap if self.chunk_overlap is not None else settings.ingest.chunk_overlap
        return size, overlap

    @classmethod
    def of(cls, params: dict[str, Any]) -> ReindexPlan:
        """The plan a recorded re-index was started with (its ``params``)."""
        return cls(params["embedding_model"], params.get("chunk_size"), params.get("chunk_overlap"))

    def params(self, embedder: Embedder) -> dict[str, Any]:
        """As the store records it beside the shadow (a resumed re-index must be asked for the same)."""
        size, overlap = self.chunk_size, self.chunk_overlap
        return {"embedding_model": embedder.info.name, "chunk_size": size, "chunk_overlap": overlap}


@dataclass
class ReindexStatus:
    """Where a re-index is: ``building`` (passes), ``switching``, then ``ready`` (the new index serves),
    ``failed`` or ``cancelled`` (the knowledge base as it was), ``built`` (asked not to switch: recorded, to compare)
    or ``interrupted`` (recorded, not running here: start it again to resume)."""

    knowledge_base: str
    embedding_model: str
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    state: str = "building"
    documents: int = 0  # ready in the serving index at the last pass
    copied: int = 0  # documents this run wrote into the new index
    kept: int = 0  # documents the new index held already when this run started (resumed)
    removed: int = 0  # documents removed from the new index (deleted or replaced in the serving one meanwhile)
    chunks: int = 0  # chunks this run embedded
    passes: int = 0
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    seconds: float = 0.0
    error: str = ""
    index: str = ""  # the new index's id
    dimension: int = 0  # the new model's

    @property
    def finished(self) -> bool:
        return self.state in ("ready", "failed", "cancelled", "built", "interrupted")


class Reindexer:
    """Builds and switches re-indexes on one store (which must be ``Reindexable``)."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        warm: Callable[[KnowledgeBase], object] | None = None,
        forget: Callable[[KnowledgeBase], object] | None = None,
    ) -> None:
        """``warm``: called with the new index before the switch and after it (the lexical index is built there,
        so the first searches after the switch do not wait for it); ``forget``: with each index removed (what was
        derived from it goes)."""
        if not isinstance(catalog.store, Reindexable):
            raise StoreError(f"{type(catalog.store).__name__} cannot re-index")
        self.settings = settings
        self.catalog = catalog
        self.store: Reindexable = catalog.store
        self.warm = warm
        self.forget = forget
        self._timers: list[threading.Timer] = []  # retirements waiting for their searches to end

    def close(self) -> None:
        """Cancel the retirements still waiting: the indexes they would remove are removed at the next start."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    @property
    def _vectors(self) -> VectorStore:
        return self.catalog.store

    # -- starting ----------------------------------------------------------------------------------
    def prepare(self, name: str, plan: ReindexPlan) -> tuple[KnowledgeBase, Embedder, Shadow | None]:
        """Check the plan against the knowledge base before anything is written; returns the knowledge base, the
        new model and a recorded re-index of the same plan to resume (None: a new one). InvalidInput says what is
        wrong with a plan."""
        kb = self.catalog.get(name)
        embedder = self.catalog.embedders.get(plan.embedding_model)
        info = embedder.info
        size, overlap = plan.chunking(self.settings)
        if plan.rechunk and overlap >= size:
            raise InvalidInput(f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size})")
        if not plan.rechunk:
            if (info.name, info.fingerprint) == (kb.embedding.name, kb.embedding.fingerprint):
                raise InvalidInput(
                    f"knowledge base {name!r} uses {info.name!r} already; give another embedding model, or a "
                    "chunk size to re-chunk it"
                )
            if info.max_tokens < kb.embedding.max_tokens:
                raise InvalidInput(
                    f"{info.name!r} reads at most {info.max_tokens} tokens, fewer than the {kb.embedding.max_tokens} "
                    f"the chunks of {name!r} were cut for: give a chunk size to re-chunk them"
                )
        if plan.rechunk:
            self._check_originals(kb)
        recorded = self.store.reindex_of(kb)
        if recorded is not None and _same_build(recorded.params) != plan.params(embedder):
            raise InvalidInput(
                f"another re-index of {name!r} is recorded ({recorded.params}); cancel it first "
                f"(DELETE /v1/knowledge-bases/{{kb}}/reindex or `kb reindex {name} --cancel`)"
            )
        return kb, embedder, recorded

    def _check_originals(self, kb: KnowledgeBase) -> None:
        originals = self.catalog.originals
        if originals is None or not originals.keep:
            raise InvalidInput("re-chunking reads the documents' original files, and this service keeps none")
        missing = [d.source for d in self._ready(kb) if originals.get(kb, d.id) is None]
        if missing:
            raise InvalidInput(
                f"re-chunking reads the documents' original files; {len(missing)} documents have none kept "
                f"(e.g. {missing[0]!r}): upload them again, or re-index without changing the chunking"
            )

    # -- running -----------------------------------------------------------------------------------
    def run(
        self,
        name: str,
        plan: ReindexPlan,
        *,
        cancel: threading.Event | None = None,
        stop: threading.Event | None = None,
        report: Callable[[ReindexStatus], None] = lambda _s: None,
        switch: bool = True,
        retire_later: bool = True,
    ) -> ReindexStatus:
        """Build, switch and retire; returns the final status. ``cancel`` discards the shadow; ``stop`` (the
        process is stopping) leaves it recorded to resume. Without ``switch`` it stops once built (``built``: the
        shadow stays recorded, to compare it; running it again switches at once). ``retire_later``: the old index is
        removed ``reindex_retire_s`` after the switch on a timer (else the caller calls ``retire``)."""
        cancel, stop = cancel or threading.Event(), stop or threading.Event()
        kb, embedder, recorded = self.prepare(name, plan)
        status = ReindexStatus(name, embedder.info.name, plan.chunk_size, plan.chunk_overlap)
        if recorded is None:
            shadow = replace(kb, embedding=embedder.info, index=uuid.uuid4().hex[:12])
            self.store.begin_reindex(kb, shadow, {**plan.params(embedder), "switch": switch})
        else:
            shadow = recorded.kb
            status.kept = self._vectors.count_documents(shadow, status=DocStatus.READY)
            log.info("resuming the re-index of %s (%d documents built already)", name, status.kept)
        status.index, status.dimension = shadow.index, shadow.embedding.dimension

        def tell(**changes: Any) -> None:
            for key, value in changes.items():
                setattr(status, key, value)
            status.updated_at = time.time()
            status.seconds = status.updated_at - status.started_at
            report(replace(status))

        copier = _Copier(self.settings, self.catalog, kb, shadow, embedder, plan)
        try:
            tell()
            new = self._build_and_switch(kb, shadow, copier, status, tell, cancel, stop, switch=switch)
        except _Stopped:
            tell(state="interrupted", error="the process stopped; start the re-index again to resume it")
            return status
        except Exception as exc:  # not KeyboardInterrupt: an interrupted re-index stays recorded, to resume
            cancelled = isinstance(exc, ReindexCancelled)
            with contextlib.suppress(KBError):
                self.store.discard_index(kb, shadow)
            if not cancelled:
                log.exception("re-index of %s failed", name)
            tell(state="cancelled" if cancelled else "failed", error=str(exc))
            if isinstance(exc, KBError):
                return status
            raise
        if new is None:
            tell(state="built")
            return status
        tell(state="ready")
        if retire_later:
            self._retire_later(new)
        return status

    def _build_and_switch(
        self,
        kb: KnowledgeBase,
        shadow: KnowledgeBase,
        copier: _Copier,
        status: ReindexStatus,
        tell: Callable[..., None],
        cancel: threading.Event,
        stop: threading.Event,
        *,
        switch: bool,
    ) -> KnowledgeBase | None:
        warmed = False
        for _ in range(SWITCH_ATTEMPTS):
            revision = self.store.kb_revision(kb)
            ready = {d.id: d for d in self._ready(kb)}
            built = {d.id: d for d in all_documents(self._vectors, shadow, page=PAGE)}
            remove = [d for d, doc in built.items() if d not in ready or doc.status != DocStatus.READY]
            copy = [doc for d, doc in ready.items() if d not in built or built[d].status != DocStatus.READY]
            tell(documents=len(ready), passes=status.passes + 1)
            for doc_id in remove:
                with contextlib.suppress(DocumentNotFound):
                    self._vectors.delete_document(shadow, doc_id)
            if remove:
                tell(removed=status.removed + sum(1 for d in remove if d not in ready))
            for batch in copier.batches(copy):
                if cancel.is_set():
                    raise ReindexCancelled(f"the re-index of {kb.name!r} was cancelled; it is as it was")
                if stop.is_set():
                    raise _Stopped
                done = copier.copy(batch)
                tell(copied=status.copied + len(done), chunks=status.chunks + sum(d.chunk_count for d in done))
            if copy:
                seal(self._vectors, shadow)
            if not warmed or copy or remove:
                self._warm(shadow)  # before the switch: its first searches find the lexical index built
                warmed = True
            if cancel.is_set():
                raise ReindexCancelled(f"the re-index of {kb.name!r} was cancelled; it is as it was")
            if not switch:
                return None
            tell(state="switching")
            new = self.store.switch_index(kb, revision)
            if new is not None:
                log.info("re-index of %s: switched to %s", kb.name, new.embedding.name)
                self._warm(new)
                return new
            tell(state="building")  # published or deleted meanwhile: one more (short) pass
        raise StoreError(f"{kb.name!r} changed during each of {SWITCH_ATTEMPTS} passes; re-index when it is quieter")

    def _warm(self, kb: KnowledgeBase) -> None:
        if self.warm is not None:
            try:
                self.warm(kb)
            except KBError:
                log.warning("re-index of %s: warming the new index failed", kb.name, exc_info=True)

    def _retire_later(self, kb: KnowledgeBase) -> None:
        """Remove the indexes the switch retired once the searches that started on them are done."""

        def retire() -> None:
            try:
                self.retire(kb)
            except Exception as exc:  # the store went away meanwhile (the process is stopping): not lost
                log.warning("the old index of %s is removed at the next start (now: %s)", kb.name, exc)

        delay = self.settings.ingest.reindex_retire_s
        timer = threading.Timer(delay, retire)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def retire(self, kb: KnowledgeBase) -> int:
        """Remove the retired indexes of ``kb`` now; returns how many."""
        retired = self.store.retired_indexes(kb)
        for index in retired:
            self.store.discard_index(kb, index)
            if self.forget is not None:
                self.forget(index)
        return len(retired)

    def cancel_recorded(self, name: str) -> Shadow:
        """Discard a recorded re-index that is not running (interrupted); ReindexNotFound when there is none."""
        kb = self.catalog.get(name)
        recorded = self.store.reindex_of(kb)
        if recorded is None:
            raise ReindexNotFound(f"knowledge base {name!r} has no re-index recorded")
        self.store.discard_index(kb, recorded.kb)
        return recorded

    def recorded(self, name: str) -> Shadow | None:
        return self.store.reindex_of(self.catalog.get(name))

    def _ready(self, kb: KnowledgeBase) -> list[Document]:
        return all_documents(self._vectors, kb, status=DocStatus.READY, page=PAGE)


def _same_build(params: dict[str, Any]) -> dict[str, Any]:
    """What a recorded re-index builds (not whether it was asked to switch)."""
    return {k: v for k, v in params.items() if k != "switch"}


class _Stopped(Exception):
    """The process is stopping: the re-index stays recorded, to resume."""


class _Copier:
    """Writes documents of the serving index into the shadow: their stored chunks embedded with the new model, or
    (re-chunking) their original files parsed and chunked again."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        kb: KnowledgeBase,
        shadow: KnowledgeBase,
        embedder: Embedder,
        plan: ReindexPlan,
    ) -> None:
        self.store = catalog.store
        self.originals = catalog.originals
        self.kb, self.shadow, self.embedder = kb, shadow, embedder
        self.ingest = settings.ingest
        self.chunker: TokenChunker | None = None
        if plan.rechunk:
            size, overlap = plan.chunking(settings)
            self.chunker = TokenChunker.for_model(
                embedder.count_tokens, embedder.info.max_tokens, chunk_size=size, chunk_overlap=overlap
            )

    def batches(self, docs: Sequence[Document]) -> list[list[Document]]:
        """Groups of about ``batch_chunks`` chunks: embedded in one call, written together."""
        out: list[list[Document]] = [[]]
        size = 0
        for doc in docs:
            if out[-1] and size + doc.chunk_count > self.ingest.batch_chunks:
                out.append([])
                size = 0
            out[-1].append(doc)
            size += doc.chunk_count
        return [b for b in out if b]

    def copy(self, docs: Sequence[Document]) -> list[Document]:
        """Write ``docs`` into the shadow and publish them; returns those written (one deleted meanwhile is not)."""
        planned: list[tuple[Document, list[Chunk], list[str]]] = []
        for doc in docs:
            chunks = self._rechunk(doc) if self.chunker is not None else None
            if chunks is None:
                chunks = self._stored_chunks(doc)
            if chunks is None:
                continue  # deleted meanwhile: the next pass sees it gone
            planned.append((doc, chunks, [self._input(doc, c) for c in chunks]))
        if not planned:
            return []
        texts = {text_hash(t): t for _, _, inputs in planned for t in inputs}
        embed_summaries = self.ingest.summary_vector == "embed"
        for doc, chunks, _ in planned:
            if embed_summaries or not chunks:
                texts[text_hash(doc.summary)] = doc.summary
        order = list(texts)
        vectors = dict(zip(order, self.embedder.embed_documents([texts[h] for h in order]), strict=True))
        rows = []
        for doc, chunks, inputs in planned:
            for c, text in zip(chunks, inputs, strict=True):
                c.hash, c.vector = text_hash(text), vectors[text_hash(text)]
            if embed_summaries or not chunks:
                summary = vectors[text_hash(doc.summary)]
            else:
                summary = mean_vector([vectors[c.hash] for c in chunks])
            rows.append(
                replace(doc, status=DocStatus.PROCESSING, chunk_count=len(chunks), summary_vector=summary, error="")
            )
        self.store.put_documents(self.shadow, rows)
        self.store.add_chunks(self.shadow, [c for _, chunks, _ in planned for c in chunks])
        published = set(self.store.publish_documents(self.shadow, rows))
        return [r for r in rows if r.id in published]

    def _stored_chunks(self, doc: Document) -> list[Chunk] | None:
        found = chunks_of(self.store, self.kb, [doc])
        return found if len(found) == doc.chunk_count else None

    def _rechunk(self, doc: Document) -> list[Chunk] | None:
        assert self.chunker is not None
        original = self.originals.get(self.kb, doc.id) if self.originals is not None else None
        if original is None:
            return None
        try:
            ocr = OcrOptions(self.ingest.ocr, self.ingest.ocr_min_confidence)
            parsed = parse_file(original.path, source=doc.source, ocr=ocr)
        except ParseError as exc:  # the parser changed since: keep the chunks it had, embedded anew
            log.warning("re-index: %s no longer parses (%s); its stored chunks are kept", doc.source, exc)
            return None
        parsed.title, parsed.metadata = doc.title, dict(doc.metadata)
        return self.chunker.split(parsed, doc.id)

    def _input(self, doc: Document, chunk: Chunk) -> str:
        """What the chunk is embedded as: its text, under its document's context line where it was indexed so
        (``chunk_context=document`` at its ingest, or now for re-chunked ones)."""
        context = document_context(doc.title, doc.source)
        with_context = indexed_text(context, chunk.text)
        if self.chunker is not None:
            return with_context if self.ingest.chunk_context == "document" else chunk.text
        return with_context if chunk.hash == text_hash(with_context) and context else chunk.text
