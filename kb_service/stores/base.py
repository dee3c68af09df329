"""The storage seam: one core protocol, ``VectorStore`` (knowledge bases, documents, chunks, publish, search), and
small optional capabilities a backend may add (``ChunkIdSearch``, ``StoredVectors``, ``RerankVectorStore``,
``Sealable``, ``Revisioned``, ``Reindexable``). Callers check a capability with ``isinstance`` and fall back without
it. Every backend passes the same contract suite (tests/stores/test_contract.py); ``MemoryStore`` is the reference
for the core."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kb_service.core.records import Chunk, DocStatus, Document, KnowledgeBase, ScoredChunk
from kb_service.stores.changes import Changes
from kb_service.stores.filters import Filter

_SPACE = re.compile(r"[0-9a-z]{1,16}")


def check_space(space: str) -> str:
    """A rerank vector space names tables and collections: 1-16 lowercase letters or digits."""
    if not isinstance(space, str) or not _SPACE.fullmatch(space):
        raise ValueError(f"rerank vector space must be 1-16 lowercase letters or digits, got {space!r}")
    return space


def rerank_prefix(kb: KnowledgeBase) -> str:
    """The common start of the names of a knowledge base's rerank vector tables (collections), one per space."""
    return f"kb_{kb.key}_rr_"


def rerank_table(kb: KnowledgeBase, space: str) -> str:
    """The table (collection) of ``kb``'s rerank vectors in ``space``."""
    return rerank_prefix(kb) + check_space(space)


class VectorStore(Protocol):
    """Per knowledge base: a document collection (metadata + summary vector) and a chunk collection.

    Vectors are L2-normalised float32; scores are cosine similarities, higher is more relevant, and every
    search result list is sorted by descending score. Only documents whose status is READY are visible to
    ``search_chunks`` and ``search_documents``.
    """

    def create_kb(self, kb: KnowledgeBase) -> None:
        """Create the knowledge base's collections; raise KnowledgeBaseExists if the name is taken."""

    def get_kb(self, name: str) -> KnowledgeBase:
        """Raise KnowledgeBaseNotFound when absent."""

    def list_kbs(self) -> list[KnowledgeBase]:
        """All knowledge bases sorted by name."""

    def drop_kb(self, name: str) -> None:
        """Remove the knowledge base with every document and chunk."""

    def put_documents(self, kb: KnowledgeBase, docs: Sequence[Document]) -> None:
        """Insert or overwrite document rows (any status) in one batch."""

    def get_documents(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> dict[str, Document]:
        """The rows that exist among ``doc_ids``, keyed by id."""

    def get_document(self, kb: KnowledgeBase, doc_id: str) -> Document | None: ...

    def ready_doc_ids(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> set[str]:
        """Those of ``doc_ids`` that are READY now (a search checks its hits with it), without reading the rows."""

    def documents_by_source(self, kb: KnowledgeBase, sources: Sequence[str]) -> list[Document]:
        """Every document (any status) whose source name is among ``sources``."""

    def list_documents(
        self,
        kb: KnowledgeBase,
        *,
        status: DocStatus | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Document]:
        """Documents sorted by source name then id, without their summary vectors."""

    def iter_documents(
        self, kb: KnowledgeBase, *, status: DocStatus | None = None, batch_size: int = 1_000
    ) -> Iterator[list[Document]]:
        """Every document (with ``status``, if given) in batches of at most ``batch_size``, in the store's own
        order, without summary vectors: one pass over the rows, where paging ``list_documents`` is O(n²)."""

    def count_documents(self, kb: KnowledgeBase, *, status: DocStatus | None = None) -> int: ...

    def add_chunks(self, kb: KnowledgeBase, chunks: Sequence[Chunk]) -> None:
        """Write chunks (with vectors) in one batch; they stay invisible until their document is published. Chunks
        of a document whose row is gone (deleted during its ingest) are not kept."""

    def publish_documents(
        self, kb: KnowledgeBase, docs: Sequence[Document], *, replaces: Mapping[str, str] | None = None
    ) -> list[str]:
        """Make ``docs`` READY and, in the same step, hide the documents they replace (``replaces``: new id ->
        old id), then delete those. Only documents whose rows are still PROCESSING are published: one deleted
        during its ingest stays deleted (its chunks go, and what it would replace stays). Returns the ids
        published.

        Every write of a knowledge base (documents, chunks, publish) goes to that very knowledge base: after it is
        dropped they raise KnowledgeBaseNotFound, even when another of the same name exists."""

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        """Remove a document row and every one of its chunks; raise DocumentNotFound when absent."""

    def count_chunks(self, kb: KnowledgeBase, *, doc_id: str | None = None) -> int: ...

    def iter_chunks(self, kb: KnowledgeBase, *, batch_size: int = 2_000) -> Iterator[list[Chunk]]:
        """Every chunk of READY documents, without vectors, in batches of at most ``batch_size``."""

    def get_chunks(self, kb: KnowledgeBase, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Those of ``chunk_ids`` that are chunks of READY documents, without vectors, keyed by id."""

    def search_chunks(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None = None,
        filters: Filter | None = None,
    ) -> list[list[ScoredChunk]]:
        """One ranked list per query row; ``doc_ids`` restricts the search to those documents."""

    def search_documents(self, kb: KnowledgeBase, queries: np.ndarray, *, top_k: int) -> list[list[tuple[str, float]]]:
        """Rank READY documents by the similarity of their summary vectors: (document id, score) pairs, one list per
        query row (``get_documents`` reads the documents themselves)."""

    def ping(self) -> None:
        """Raise StoreError when the store cannot be reached."""

    def close(self) -> None: ...


@runtime_checkable
class ChunkIdSearch(Protocol):
    """Dense chunk search that returns ids and scores only."""

    def search_chunk_ids(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None = None,
        filters: Filter | None = None,
    ) -> list[list[tuple[str, float]]]:
        """``search_chunks``' rankings as (chunk id, score) pairs, without reading the chunks: for a caller that
        holds them already (the lexical index holds every READY chunk; ``get_chunks`` reads any it lacks)."""


@runtime_checkable
class StoredVectors(Protocol):
    """Reads back stored chunk vectors by text hash. Without it, ingestion embeds every new text."""

    def vectors_for_hashes(self, kb: KnowledgeBase, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks whose text hash is among ``hashes`` (so unchanged text is never re-embedded)."""


@runtime_checkable
class RerankVectorStore(Protocol):
    """Keeps a second model's passage vectors beside the chunks. Without it, an embedding reranker embeds its
    passages at query time."""

    def rerank_vectors(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of a second model (an embedding reranker's passage vectors; ``space`` names the model)
        for those of ``chunk_ids`` that have one, keyed by chunk id."""

    def rerank_vector_ids(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str]) -> set[str]:
        """Those of ``chunk_ids`` that have a vector in ``space``, without reading the vectors."""

    def put_rerank_vectors(self, kb: KnowledgeBase, space: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Store one vector per chunk in ``space``. A vector goes when its chunk goes (document deleted or replaced,
        knowledge base dropped); chunks that are no longer stored are skipped."""


@runtime_checkable
class Sealable(Protocol):
    """Has work to finish after an ingest before searches are fast."""

    def seal(self, kb: KnowledgeBase) -> None:
        """Make recent writes fast to search (Milvus seals and indexes growing segments, which are otherwise
        searched by brute force); a no-op where writes are indexed at once."""


@runtime_checkable
class Revisioned(Protocol):
    """Knows when the searchable chunks changed. Without it, derived indexes (the lexical one) are rebuilt for every
    search."""

    def kb_revision(self, kb: KnowledgeBase) -> str:
        """A token that changes whenever the set of READY chunks changes (publish, replace, delete): derived
        indexes (the lexical one) are brought up to date when it moves."""

    def changes_since(self, kb: KnowledgeBase, revision: str) -> Changes | None:
        """Which documents were published and removed from ``revision`` to the current one, or None when the
        store's log (``stores.changes``) no longer reaches back to it: then a derived index is rebuilt."""


@dataclass(frozen=True)
class Shadow:
    """The index a re-index is building beside the one serving, and what it was asked to build."""

    kb: KnowledgeBase  # the knowledge base as it will be once switched: the same name and uid, another ``index``
    params: dict[str, Any]


@runtime_checkable
class Reindexable(Revisioned, Protocol):
    """Builds a second index of a knowledge base (another embedding model or chunking) beside the one serving and
    makes it the one serving in one step. The shadow's documents and chunks are written with the usual calls on the
    shadow's ``KnowledgeBase``; searches on it work too (to compare it before switching), and so do searches on an
    index a switch retired, until it is discarded; writes to a retired index raise KnowledgeBaseNotFound."""

    def begin_reindex(self, kb: KnowledgeBase, shadow: KnowledgeBase, params: Mapping[str, Any]) -> None:
        """Create ``shadow``'s collections and record it, with ``params``, beside ``kb`` (the index serving).
        ReindexInProgress when a shadow is recorded already; KnowledgeBaseNotFound when ``kb`` is not serving."""

    def reindex_of(self, kb: KnowledgeBase) -> Shadow | None:
        """The shadow recorded for the knowledge base named like ``kb`` (it survives restarts), or None."""

    def switch_index(self, kb: KnowledgeBase, revision: str) -> KnowledgeBase | None:
        """Make the shadow serve and retire ``kb``, in one step, if ``kb``'s revision (``kb_revision``) is still
        ``revision``: nothing was published or deleted in it since the re-index copied what it held then. Returns
        the knowledge base as it is now, or None when the revision moved (copy the changes, then try again).
        KnowledgeBaseNotFound when ``kb`` is not serving; ReindexNotFound when it has no shadow."""

    def retired_indexes(self, kb: KnowledgeBase) -> list[KnowledgeBase]:
        """Indexes of the knowledge base named like ``kb`` that a switch retired and nothing has discarded yet."""

    def discard_index(self, kb: KnowledgeBase, index: KnowledgeBase) -> None:
        """Remove the collections of ``index`` (``kb``'s shadow or one of its retired indexes) and its record."""


def all_documents(
    store: VectorStore, kb: KnowledgeBase, *, status: DocStatus | None = None, page: int = 1_000
) -> list[Document]:
    """Every document of ``kb`` (with ``status``, if given), read ``page`` at a time, sorted by source then id."""
    docs = [doc for batch in store.iter_documents(kb, status=status, batch_size=page) for doc in batch]
    return sorted(docs, key=lambda d: (d.source, d.id))


def chunks_of(store: VectorStore, kb: KnowledgeBase, docs: Sequence[Document]) -> list[Chunk]:
    """The chunks of ``docs`` (READY ones), in document then chunk order, read by their ids (``doc_id:ord``)."""
    found = store.get_chunks(kb, [f"{doc.id}:{i}" for doc in docs for i in range(doc.chunk_count)])
    return [c for doc in docs for i in range(doc.chunk_count) if (c := found.get(f"{doc.id}:{i}")) is not None]


def seal(store: VectorStore, kb: KnowledgeBase) -> None:
    """Finish a store's post-ingest work, where it has any."""
    if isinstance(store, Sealable):
        store.seal(kb)
