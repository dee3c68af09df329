"""One sync of a knowledge base from its source (a folder or an S3 prefix): list the files, compare them with what
was synced before, then add the new files, replace the changed ones and delete the documents of files deleted at the
source (each delete proved by its residue check).

A file whose size and version (modification time, ETag) are what the last sync recorded is unchanged without being
read; one whose
bytes hash to the recorded SHA-256 is unchanged without being parsed (an object is downloaded into a spool folder
that lives as long as the sync). Documents are named by their path inside the source, as ``kb ingest`` of a folder
names them, so a sync takes over documents ingested that way. A file the state
calls unchanged but whose document is gone from the knowledge base (deleted by hand) is added again: the knowledge
base mirrors the folder. Documents that did not come from the folder are never touched."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from kb_service.catalog import Catalog
from kb_service.core.errors import SyncInProgress, SyncSourceNotFound
from kb_service.core.records import DocStatus, Document, KnowledgeBase
from kb_service.embeddings.base import Embedder
from kb_service.ingest.pipeline import Ingestor, IngestResult, Outcome
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.residue import residue
from kb_service.sync.sources import Entry, Source, open_source
from kb_service.sync.state import FileState, SyncState

BLOCK = 1 << 20


@dataclass
class SyncPlan:
    """What a sync would do: paths inside the source, by what happens to them."""

    source: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    files: dict[str, tuple[Path, FileState]] = field(default_factory=dict, repr=False)


@dataclass
class SyncFailure:
    path: str
    reason: str
    error: str


@dataclass
class SyncReport:
    knowledge_base: str
    source: str
    dry_run: bool
    added: list[str]
    changed: list[str]
    deleted: list[str]
    unchanged: int
    failed: list[SyncFailure]
    clean: bool  # every deleted document left nothing behind (row, chunks, index entries, original)
    seconds: float


IngestorFactory = Callable[[KnowledgeBase, Embedder], Ingestor]


class Syncer:
    def __init__(self, catalog: Catalog, lexical: LexicalIndexes, state: SyncState, ingestor: IngestorFactory) -> None:
        self.catalog = catalog
        self.lexical = lexical
        self.state = state
        self.ingestor = ingestor
        self._running: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def run(
        self,
        kb_name: str,
        source: str | Path,
        *,
        dry_run: bool = False,
        on_result: Callable[[IngestResult], None] | None = None,
    ) -> SyncReport:
        """Sync ``kb_name`` from ``source``: a folder, or ``s3://bucket/prefix``."""
        started = time.perf_counter()
        origin = open_source(source)
        kb = self.catalog.get(kb_name)
        with self._exclusive(kb, origin.name), tempfile.TemporaryDirectory(prefix="kb-sync-") as spool:
            plan = self._plan(kb, origin, Path(spool))
            failed: list[SyncFailure] = []
            clean = True
            if not dry_run:
                failed = self._ingest(kb, plan, on_result)
                clean = self._delete(kb, plan)
        return SyncReport(
            knowledge_base=kb.name,
            source=origin.name,
            dry_run=dry_run,
            added=plan.added,
            changed=plan.changed,
            deleted=plan.deleted,
            unchanged=len(plan.unchanged),
            failed=failed,
            clean=clean,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _plan(self, kb: KnowledgeBase, origin: Source, spool: Path) -> SyncPlan:
        known = self.state.files(kb, origin.name)
        plan = SyncPlan(source=origin.name)
        listed: dict[str, Entry] = {}
        for entry in origin.entries():
            name = entry.path
            listed[name] = entry
            before = known.get(name)
            if before is not None and (before.size, before.version) == (entry.size, entry.version):
                plan.unchanged.append(name)
                continue
            try:
                path = origin.local(entry, spool)
                now = FileState(entry.size, entry.version, _sha256(path))
            except FileNotFoundError:  # deleted since it was listed: the next sync sees it gone
                del listed[name]
                continue
            plan.files[name] = (path, now)
            if before is None:
                plan.added.append(name)
            elif before.sha256 == now.sha256:  # touched, not changed: remember the new time, read it no more
                now = replace(now, doc_id=before.doc_id)
                plan.files[name] = (path, now)
                plan.unchanged.append(name)
                self.state.put(kb, origin.name, name, now)
            else:
                plan.changed.append(name)
        plan.deleted = sorted(set(known) - set(listed))
        # An unchanged file whose document is gone from the knowledge base (deleted by hand) comes back.
        if plan.unchanged:
            present = {d.source for d in self._ready(kb, plan.unchanged)}
            # a file whose content another file's document already held is present through that document
            recorded = {n: known[n].doc_id for n in plan.unchanged if n in known and known[n].doc_id}
            ready = self.catalog.store.ready_doc_ids(kb, list(set(recorded.values())))
            present |= {n for n, doc_id in recorded.items() if doc_id in ready}
            missing = []
            for name in plan.unchanged:
                if name in present:
                    continue
                if name not in plan.files:  # not read yet: it was unchanged by size and time
                    try:
                        plan.files[name] = (origin.local(listed[name], spool), known[name])
                    except FileNotFoundError:
                        continue
                missing.append(name)
            plan.unchanged = [n for n in plan.unchanged if n in present]
            plan.added = sorted([*plan.added, *missing])
        return plan

    def _ready(self, kb: KnowledgeBase, names: list[str]) -> Iterator[Document]:
        for doc in self.catalog.store.documents_by_source(kb, names):
            if doc.status == DocStatus.READY:
                yield doc

    def _ingest(
        self, kb: KnowledgeBase, plan: SyncPlan, on_result: Callable[[IngestResult], None] | None
    ) -> list[SyncFailure]:
        names = [*plan.added, *plan.changed]
        if not names:
            return []
        embedder = self.catalog.embedders.for_kb(kb)  # the model loads only when something is to be embedded
        failed: list[SyncFailure] = []

        def record(result: IngestResult) -> None:
            if result.outcome == Outcome.FAILED:
                failed.append(SyncFailure(result.source, result.reason, result.error))
            else:  # only a file that made it in is remembered: a failed one is tried again next time
                state = replace(plan.files[result.source][1], doc_id=result.doc_id or "")
                self.state.put(kb, plan.source, result.source, state)
            if on_result is not None:
                on_result(result)

        items = [SourceItem(name=name, path=plan.files[name][0]) for name in names]
        self.ingestor(kb, embedder).ingest(items, on_result=record)
        return failed

    def _delete(self, kb: KnowledgeBase, plan: SyncPlan) -> bool:
        clean = True
        for name in plan.deleted:
            for doc in self.catalog.store.documents_by_source(kb, [name]):
                self.catalog.delete_document(kb.name, doc.id)
                left = residue(self.catalog.store, self.lexical, kb, doc.id, self.catalog.originals)
                clean = clean and left.clean
            self.state.forget(kb, plan.source, name)
        return clean

    @contextmanager
    def _exclusive(self, kb: KnowledgeBase, source: str) -> Iterator[None]:
        key = (kb.home_key, source)
        with self._lock:
            if key in self._running:
                raise SyncInProgress(kb.name, source)
            self._running.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(key)


def configured_source(sources: Mapping[str, str], kb: str) -> str:
    """The folder ``KB_SYNC_SOURCES`` names for ``kb`` (names compare in NFC, as knowledge bases are stored)."""
    folder = {unicodedata.normalize("NFC", k): v for k, v in sources.items()}.get(unicodedata.normalize("NFC", kb))
    if folder is None:
        raise SyncSourceNotFound(
            f"no sync source is configured for knowledge base {kb!r}: the operator names its folder in "
            'KB_SYNC_SOURCES (e.g. {"manuals": "/srv/manuals"}), or run `kb sync KB FOLDER`'
        )
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
