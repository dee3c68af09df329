"""An in-memory store: the reference implementation of the core ``VectorStore`` protocol (and ``Revisioned``,
``Reindexable``).

Exact cosine search in numpy, filters by ``Filter.matches``. It offers none of the other optional capabilities, so
the callers' fallbacks run against it. Nothing is persisted; for tests, notebooks and small experiments.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kb_service.core.errors import (
    DocumentNotFound,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
    ReindexInProgress,
    ReindexNotFound,
)
from kb_service.core.records import Chunk, DocStatus, Document, KnowledgeBase, ScoredChunk, kb_key
from kb_service.stores import changes
from kb_service.stores.base import Shadow
from kb_service.stores.filters import Filter


@dataclass
class _Collection:
    kb: KnowledgeBase
    docs: dict[str, Document] = field(default_factory=dict)
    chunks: dict[str, Chunk] = field(default_factory=dict)
    revision: int = 0
    log: changes.Log = field(default_factory=list)  # what the last revisions changed
    # the live collection's re-index: the index being built, its parameters, and the indexes it replaced
    shadow: _Collection | None = None
    params: dict[str, Any] = field(default_factory=dict)
    retired: list[_Collection] = field(default_factory=list)


class MemoryStore:
    """Every knowledge base in this process's memory, behind one lock."""

    def __init__(self) -> None:
        self._kbs: dict[str, _Collection] = {}
        self._lock = threading.RLock()

    def _get(self, kb: KnowledgeBase | str, *, write: bool = False) -> _Collection:
        """The collection of a name, or of that very index of that very knowledge base (not a successor under its
        name): the one serving, the one a re-index builds or, except for a write, a retired one."""
        name = kb if isinstance(kb, str) else kb.name
        found = self._kbs.get(kb_key(name))
        if found is None:
            raise KnowledgeBaseNotFound(name)
        if isinstance(kb, str):
            return found
        for c in (found, found.shadow, *([] if write else found.retired)):
            if c is not None and c.kb.same_index(kb):
                return c
        raise KnowledgeBaseNotFound(name)

    # -- knowledge bases -------------------------------------------------------------------------
    def create_kb(self, kb: KnowledgeBase) -> None:
        with self._lock:
            if kb.registry_key in self._kbs:
                raise KnowledgeBaseExists(kb.name)
            self._kbs[kb.registry_key] = _Collection(kb)

    def get_kb(self, name: str) -> KnowledgeBase:
        with self._lock:
            return self._get(name).kb

    def list_kbs(self) -> list[KnowledgeBase]:
        with self._lock:
            return sorted((c.kb for c in self._kbs.values()), key=lambda kb: kb.name)

    def drop_kb(self, name: str) -> None:
        with self._lock:
            del self._kbs[self._get(name).kb.registry_key]

    # -- documents --------------------------------------------------------------------------------
    def put_documents(self, kb: KnowledgeBase, docs: Sequence[Document]) -> None:
        with self._lock:
            c = self._get(kb, write=True)
            for doc in docs:
                c.docs[doc.id] = replace(doc, metadata=dict(doc.metadata), summary_vector=_own(doc.summary_vector))

    def get_documents(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> dict[str, Document]:
        with self._lock:
            c = self._get(kb)
            return {d: replace(c.docs[d]) for d in doc_ids if d in c.docs}

    def get_document(self, kb: KnowledgeBase, doc_id: str) -> Document | None:
        return self.get_documents(kb, [doc_id]).get(doc_id)

    def ready_doc_ids(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> set[str]:
        with self._lock:
            docs = self._get(kb).docs
            return {d for d in doc_ids if d in docs and docs[d].status == DocStatus.READY}

    def documents_by_source(self, kb: KnowledgeBase, sources: Sequence[str]) -> list[Document]:
        wanted = set(sources)
        with self._lock:
            return [replace(d) for d in self._get(kb).docs.values() if d.source in wanted]

    def list_documents(
        self,
        kb: KnowledgeBase,
        *,
        status: DocStatus | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Document]:
        with self._lock:
            docs = [
                replace(d, summary_vector=None)
                for d in self._get(kb).docs.values()
                if (status is None or d.status == status) and (source is None or d.source == source)
            ]
        return sorted(docs, key=lambda d: (d.source, d.id))[offset : offset + limit]

    def iter_documents(
        self, kb: KnowledgeBase, *, status: DocStatus | None = None, batch_size: int = 1_000
    ) -> Iterator[list[Document]]:
        with self._lock:
            docs = [replace(d, summary_vector=None) for d in self._get(kb).docs.values() if status in (None, d.status)]
        for i in range(0, len(docs), batch_size):
            yield docs[i : i + batch_size]

    def count_documents(self, kb: KnowledgeBase, *, status: DocStatus | None = None) -> int:
        with self._lock:
            return sum(1 for d in self._get(kb).docs.values() if status is None or d.status == status)

    # -- chunks, publishing -----------------------------------------------------------------------
    def add_chunks(self, kb: KnowledgeBase, chunks: Sequence[Chunk]) -> None:
        with self._lock:
            c = self._get(kb, write=True)
            for chunk in chunks:
                if chunk.doc_id in c.docs:  # a document deleted meanwhile gets none
                    c.chunks[chunk.id] = replace(chunk, metadata=dict(chunk.metadata), vector=_own(chunk.vector))

    def publish_documents(
        self, kb: KnowledgeBase, docs: Sequence[Document], *, replaces: Mapping[str, str] | None = None
    ) -> list[str]:
        with self._lock:
            c = self._get(kb, write=True)
            published: list[str] = []
            removed: list[str] = []
            for doc in docs:
                stored = c.docs.get(doc.id)
                if stored is None or stored.status != DocStatus.PROCESSING:
                    self._remove(c, doc.id)  # deleted during its ingest: the delete wins
                    continue
                vector = _own(doc.summary_vector) if doc.summary_vector is not None else stored.summary_vector
                c.docs[doc.id] = replace(doc, status=DocStatus.READY, summary_vector=vector)
                published.append(doc.id)
                if (old := (replaces or {}).get(doc.id)) is not None:
                    self._remove(c, old)
                    removed.append(old)
            self._bump(c, published, removed)
            return published

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        with self._lock:
            c = self._get(kb, write=True)
            if doc_id not in c.docs:
                raise DocumentNotFound(kb.name, doc_id)
            self._remove(c, doc_id)
            self._bump(c, [], [doc_id])

    @staticmethod
    def _bump(c: _Collection, published: list[str], removed: list[str]) -> None:
        c.log = changes.logged(c.log, str(c.revision), str(c.revision + 1), published, removed)
        c.revision += 1

    @staticmethod
    def _remove(c: _Collection, doc_id: str) -> None:
        c.docs.pop(doc_id, None)
        for chunk_id in [k for k, chunk in c.chunks.items() if chunk.doc_id == doc_id]:
            del c.chunks[chunk_id]

    def count_chunks(self, kb: KnowledgeBase, *, doc_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for ch in self._get(kb).chunks.values() if doc_id is None or ch.doc_id == doc_id)

    def _visible(self, c: _Collection) -> list[Chunk]:
        ready = {d.id for d in c.docs.values() if d.status == DocStatus.READY}
        return [ch for ch in c.chunks.values() if ch.doc_id in ready]

    def iter_chunks(self, kb: KnowledgeBase, *, batch_size: int = 2_000) -> Iterator[list[Chunk]]:
        with self._lock:
            chunks = [replace(ch, vector=None) for ch in self._visible(self._get(kb))]
        for start in range(0, len(chunks), batch_size):
            yield chunks[start : start + batch_size]

    def get_chunks(self, kb: KnowledgeBase, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        with self._lock:
            visible = {ch.id: ch for ch in self._visible(self._get(kb))}
        return {i: replace(visible[i], vector=None) for i in chunk_ids if i in visible}

    def kb_revision(self, kb: KnowledgeBase) -> str:
        with self._lock:
            return str(self._get(kb).revision)

    def changes_since(self, kb: KnowledgeBase, revision: str) -> changes.Changes | None:
        with self._lock:
            c = self._get(kb)
            return changes.since(c.log, revision, str(c.revision))

    # -- re-indexing ------------------------------------------------------------------------------
    def begin_reindex(self, kb: KnowledgeBase, shadow: KnowledgeBase, params: Mapping[str, Any]) -> None:
        with self._lock:
            live = self._get(kb, write=True)
            if live is not self._get(kb.name):
                raise KnowledgeBaseNotFound(kb.name)
            if live.shadow is not None:
                raise ReindexInProgress(f"a re-index of knowledge base {kb.name!r} is recorded already")
            live.shadow, live.params = _Collection(shadow), dict(params)

    def reindex_of(self, kb: KnowledgeBase) -> Shadow | None:
        with self._lock:
            live = self._get(kb.name)
            return None if live.shadow is None else Shadow(live.shadow.kb, dict(live.params))

    def switch_index(self, kb: KnowledgeBase, revision: str) -> KnowledgeBase | None:
        with self._lock:
            live = self._get(kb.name)
            if not live.kb.same_index(kb):
                raise KnowledgeBaseNotFound(kb.name)
            if live.shadow is None:
                raise ReindexNotFound(f"knowledge base {kb.name!r} has no re-index to switch to")
            if str(live.revision) != revision:
                return None
            new = live.shadow
            new.kb = replace(new.kb, description=live.kb.description, created_at=live.kb.created_at)
            new.retired = [*live.retired, live]
            live.shadow, live.retired = None, []
            self._kbs[kb.registry_key] = new
            return new.kb

    def retired_indexes(self, kb: KnowledgeBase) -> list[KnowledgeBase]:
        with self._lock:
            return [c.kb for c in self._get(kb.name).retired]

    def discard_index(self, kb: KnowledgeBase, index: KnowledgeBase) -> None:
        with self._lock:
            live = self._get(kb.name)
            if live.shadow is not None and live.shadow.kb.same_index(index):
                live.shadow, live.params = None, {}
            live.retired = [c for c in live.retired if not c.kb.same_index(index)]

    # -- search -----------------------------------------------------------------------------------
    def search_chunks(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None = None,
        filters: Filter | None = None,
    ) -> list[list[ScoredChunk]]:
        only = None if doc_ids is None else set(doc_ids)
        with self._lock:
            found = [
                (ch, ch.vector)
                for ch in self._visible(self._get(kb))
                if ch.vector is not None
                and (only is None or ch.doc_id in only)
                and (filters is None or filters.matches(ch))
            ]
        out = []
        for ranked in _top(queries, [v for _, v in found], top_k):
            hits = [(replace(found[i][0], vector=None), score) for i, score in ranked]
            out.append([ScoredChunk(h, score, source=h.metadata.get("source", "")) for h, score in hits])
        return out

    def search_documents(self, kb: KnowledgeBase, queries: np.ndarray, *, top_k: int) -> list[list[tuple[str, float]]]:
        with self._lock:
            found = [
                (d.id, d.summary_vector)
                for d in self._get(kb).docs.values()
                if d.status == DocStatus.READY and d.summary_vector is not None
            ]
        return [[(found[i][0], score) for i, score in ranked] for ranked in _top(queries, [v for _, v in found], top_k)]

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


def _own(vector: np.ndarray | None) -> np.ndarray | None:
    """A float32 copy the caller cannot change under the store."""
    return None if vector is None else np.asarray(vector, np.float32).copy()


def _top(queries: np.ndarray, vectors: list[np.ndarray], top_k: int) -> list[list[tuple[int, float]]]:
    """Per query row, the positions of the ``top_k`` vectors with the highest dot product (cosine: all are
    normalised) and that score, best first; ties keep their order."""
    if not vectors:
        return [[] for _ in range(len(queries))]
    scores = np.asarray(queries, np.float32) @ np.stack(vectors).T
    return [[(int(i), float(row[i])) for i in np.argsort(-row, kind="stable")[:top_k]] for row in scores]
