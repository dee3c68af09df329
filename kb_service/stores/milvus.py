"""MilvusStore: Milvus Lite (a local file) by default, or any Milvus server by URI."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from kb_service.core.errors import (
    DocumentNotFound,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
    StoreError,
)
from kb_service.core.records import (
    Chunk,
    DocStatus,
    Document,
    KnowledgeBase,
    ScoredChunk,
    kb_key,
)
from kb_service.stores import indexes, milvus_lite_speedups
from kb_service.stores.base import Shadow, rerank_prefix, rerank_table
from kb_service.stores.changes import Changes
from kb_service.stores.embedded_milvus import EmbeddedMilvus, Registry, start_embedded_milvus
from kb_service.stores.filters import Filter
from kb_service.stores.serialize import (
    DOC_FIELDS,
    doc_from_row,
    doc_to_row,
    kb_from_json,
    kb_to_json,
    page_in,
    page_out,
    truncate_utf8,
)

T = TypeVar("T")
REGISTRY = "kb_registry"
TEXT_BYTES = 65_535
SHORT_BYTES = 2_048
QUERY_PAGE = 10_000
IN_BATCH = 1_000
EXACT_ROWS = 20_000  # a filtered search that the index answers short is redone exactly over at most this many rows
WIDE_EF = 2_048  # else again with this breadth
KEY_FIELDS = ["doc_id", "source"]  # what documents are listed by
CHUNK_FIELDS = ["id", "doc_id", "ord", "text", "chunk_hash", "page", "section", "start", "end", "metadata"]
DOC_OUTPUT = list(DOC_FIELDS)


class MilvusStore:
    """Vector store over pymilvus' MilvusClient; collections use Strong consistency so reads see writes."""

    # Milvus Lite runs one embedded server per database file, shared by every process on it (a server process by
    # default, see ``stores.embedded_milvus``; or this process's threads); this process leaves it when its last
    # store on that file closes, and it stops once no process uses it.
    _lite_users: ClassVar[dict[str, int]] = {}
    _lite_servers: ClassVar[dict[str, EmbeddedMilvus]] = {}
    _lite_lock: ClassVar[threading.Lock] = threading.Lock()
    # What searches read about a knowledge base besides its vectors (its hidden documents, its revision), per
    # Milvus Lite file: valid while the file's write count (in its registry, bumped after every document or registry
    # write by any process on the file) is the one it was read at.
    _lite_reads: ClassVar[dict[tuple[str, str, str], tuple[int, Any]]] = {}

    def __init__(
        self,
        uri: str,
        *,
        token: str | None = None,
        index_type: str = "HNSW",
        lite_process: bool = True,
        lite_speedups: bool = True,
    ) -> None:
        self.uri = uri
        self.index_type = index_type
        self._lite = None if "://" in uri else os.path.abspath(uri)
        # the file's registry: its server, and the write count every process on the file shares
        self._registry = Registry(Path(self._lite)) if self._lite is not None else None
        with self._lite_lock:
            connect_to = self._join_lite(lite_process, lite_speedups) if self._lite is not None else uri
            try:
                self.client = MilvusClient(uri=connect_to, token=token or "")
            except Exception as exc:  # pymilvus raises several unrelated types on connection failure
                if self._lite is not None:
                    self._leave_lite()
                raise StoreError(f"cannot open Milvus at {uri}: {exc}") from exc
        # Milvus Lite serialises access to one file; concurrent calls from threads must not interleave.
        self._lock = threading.RLock()
        self._depth = 0  # nested writes under ``_lock``: the file's write lock is taken by the outermost
        self._loaded: set[str] = set()
        self._ensure_registry()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the lock for a write of documents or of the registry (on Milvus Lite, also the file's write lock,
        which the other processes on it take); what was read before it is stale after."""
        try:
            with self._lock:
                self._depth += 1
                try:
                    if self._depth == 1 and self._registry is not None:
                        with self._registry.writing():
                            yield
                    else:
                        yield
                finally:
                    self._depth -= 1
        finally:
            if self._registry is not None:
                self._registry.count_write()

    def _lite_cached(self, kb: KnowledgeBase, what: str, read: Callable[[], T]) -> T:
        """``read()``, or on Milvus Lite its value from an earlier call with no write since."""
        if self._lite is None or self._registry is None:
            return read()
        key = (self._lite, kb.key, what)
        writes = self._registry.writes()
        known = self._lite_reads.get(key)
        if known is not None and known[0] == writes:
            return cast(T, known[1])
        value = read()
        self._lite_reads[key] = (writes, value)  # a write meanwhile has moved the count past ``writes``
        return value

    # -- knowledge bases -------------------------------------------------------------------------
    def _ensure_loaded(self, collection: str) -> str:
        """Collections come back 'released' when a process reopens the data; load each once per process."""
        if collection not in self._loaded:
            with self._lock:
                self.client.load_collection(collection)
                self._loaded.add(collection)
        return collection

    def _kb_collection(self, kb: KnowledgeBase, suffix: str) -> str:
        """A collection of that very knowledge base: KnowledgeBaseNotFound once it is dropped (its successor under
        the same name has collections of its own)."""
        name = f"kb_{kb.key}_{suffix}"
        try:
            return self._ensure_loaded(name)
        except MilvusException as exc:
            if self.client.has_collection(name):
                raise
            raise KnowledgeBaseNotFound(kb.name) from exc

    def _entry(self, kb: KnowledgeBase) -> dict[str, Any] | None:
        """The registry entry of the knowledge base named like ``kb`` (``indexes`` says what ``kb`` is to it)."""
        rows = self._get_rows(REGISTRY, "key", [kb.registry_key], ["info"])
        return cast(dict[str, Any], json.loads(rows[0]["info"])) if rows else None

    def _put_entry(self, key: str, info: dict[str, Any]) -> None:
        self.client.upsert(REGISTRY, [{"key": key, "info": json.dumps(info, ensure_ascii=False), "vector": [0.0, 0.0]}])

    def _writable(self, kb: KnowledgeBase) -> dict[str, Any]:
        """Under the write lock, before a write of ``kb``'s documents: KnowledgeBaseNotFound unless ``kb`` is the
        index serving or the one a re-index builds."""
        info = self._entry(kb)
        if indexes.role(info, kb) not in indexes.WRITABLE:
            raise KnowledgeBaseNotFound(kb.name)
        assert info is not None
        return info

    def _get_rows(self, collection: str, pk: str, ids: Sequence[str], fields: list[str]) -> list[dict[str, Any]]:
        """Rows by primary key. Not ``MilvusClient.get``, which quotes string keys without escaping them (an id
        with a quote or a backslash breaks its expression)."""
        unique = list(dict.fromkeys(ids))
        rows: list[dict[str, Any]] = []
        for i in range(0, len(unique), IN_BATCH):
            part = unique[i : i + IN_BATCH]
            rows += self.client.query(
                collection, filter=_bind(pk + " in {ids}", {"ids": part}), output_fields=fields, limit=len(part)
            )
        return rows

    def _ensure_registry(self) -> None:
        if self.client.has_collection(REGISTRY):
            self._ensure_loaded(REGISTRY)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("info", DataType.VARCHAR, max_length=TEXT_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires one vector field
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        self.client.create_collection(REGISTRY, schema=schema, index_params=index, consistency_level="Strong")

    def create_kb(self, kb: KnowledgeBase) -> None:
        with self._writing():
            if self._get_rows(REGISTRY, "key", [kb.registry_key], ["key"]):
                raise KnowledgeBaseExists(kb.name)
            dim = kb.embedding.dimension
            self._create_docs_collection(kb.key, dim)
            self._create_chunks_collection(kb.key, dim)
            # The registry row is written last: a knowledge base exists only once all its collections do.
            self.client.insert(REGISTRY, [{"key": kb.registry_key, "info": kb_to_json(kb), "vector": [0.0, 0.0]}])

    def _vector_index(self) -> Any:
        index = self.client.prepare_index_params()
        params: dict[str, Any] = {}
        if self.index_type == "HNSW":
            params = {"M": 16, "efConstruction": 200}
        elif self.index_type == "IVF_FLAT":
            params = {"nlist": 128}
        index.add_index("vector", index_type=self.index_type, metric_type="COSINE", params=params)
        return index

    def _create_docs_collection(self, key: str, dim: int) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("source", DataType.VARCHAR, max_length=SHORT_BYTES)
        schema.add_field("title", DataType.VARCHAR, max_length=SHORT_BYTES)
        schema.add_field("format", DataType.VARCHAR, max_length=32)
        schema.add_field("status", DataType.VARCHAR, max_length=16)
        schema.add_field("error", DataType.VARCHAR, max_length=SHORT_BYTES)
        schema.add_field("summary", DataType.VARCHAR, max_length=TEXT_BYTES)
        schema.add_field("chunk_count", DataType.INT64)
        schema.add_field("n_chars", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("created_at", DataType.DOUBLE)
        schema.add_field("updated_at", DataType.DOUBLE)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        self.client.create_collection(
            f"kb_{key}_docs", schema=schema, index_params=self._vector_index(), consistency_level="Strong"
        )

    def _create_chunks_collection(self, key: str, dim: int) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=160)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=128)
        schema.add_field("ord", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES)
        schema.add_field("chunk_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("page", DataType.INT64)
        schema.add_field("section", DataType.VARCHAR, max_length=SHORT_BYTES)
        schema.add_field("start", DataType.INT64)
        schema.add_field("end", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self._vector_index()
        index.add_index("doc_id", index_type="INVERTED")
        index.add_index("chunk_hash", index_type="INVERTED")
        self.client.create_collection(f"kb_{key}_chunks", schema=schema, index_params=index, consistency_level="Strong")

    def get_kb(self, name: str) -> KnowledgeBase:
        rows = self._get_rows(REGISTRY, "key", [kb_key(name)], ["info"])
        if not rows:
            raise KnowledgeBaseNotFound(name)
        return kb_from_json(rows[0]["info"])

    def list_kbs(self) -> list[KnowledgeBase]:
        rows = self._query_all(REGISTRY, 'key != ""', {}, ["info"])
        return sorted((kb_from_json(r["info"]) for r in rows), key=lambda kb: kb.name)

    def _rr_collections(self, kb: KnowledgeBase) -> list[str]:
        return [name for name in self.client.list_collections() if name.startswith(rerank_prefix(kb))]

    def drop_kb(self, name: str) -> None:
        kb = self.get_kb(name)
        with self._writing():
            info = self._entry(kb) or {}
            shadow = indexes.shadow_of(info)
            # Registry row first: a half-dropped knowledge base is invisible rather than half-usable.
            self.client.delete(REGISTRY, filter=_bind("key in {k}", {"k": [kb.registry_key]}))
            for index in [kb, *([shadow[0]] if shadow else []), *indexes.retired_of(info)]:
                self._drop_collections(index)

    def _drop_collections(self, kb: KnowledgeBase) -> None:
        """Drop the collections of that index of the knowledge base (its rerank vectors too)."""
        for collection in [f"kb_{kb.key}_docs", f"kb_{kb.key}_chunks", *self._rr_collections(kb)]:
            self.client.drop_collection(collection)
            self._loaded.discard(collection)

    # -- documents --------------------------------------------------------------------------------
    def _docs(self, kb: KnowledgeBase) -> str:
        return self._kb_collection(kb, "docs")

    def _chunks(self, kb: KnowledgeBase) -> str:
        return self._kb_collection(kb, "chunks")

    def _doc_row(self, kb: KnowledgeBase, doc: Document) -> dict[str, Any]:
        row = doc_to_row(doc)
        row["source"] = truncate_utf8(row["source"], SHORT_BYTES)
        row["title"] = truncate_utf8(row["title"], SHORT_BYTES)
        row["error"] = truncate_utf8(row["error"], SHORT_BYTES)
        row["summary"] = truncate_utf8(row["summary"], TEXT_BYTES)
        if doc.summary_vector is not None:
            row["vector"] = np.asarray(doc.summary_vector, dtype=np.float32).tolist()
        else:
            # A placeholder unit vector: documents that are not READY never take part in a search.
            placeholder = np.zeros(kb.embedding.dimension, dtype=np.float32)
            placeholder[0] = 1.0
            row["vector"] = placeholder.tolist()
        return row

    def put_documents(self, kb: KnowledgeBase, docs: Sequence[Document]) -> None:
        if docs:
            with self._writing():
                self.client.upsert(self._docs(kb), [self._doc_row(kb, d) for d in docs])

    def get_documents(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> dict[str, Document]:
        return {
            row["doc_id"]: doc_from_row(row) for row in self._get_rows(self._docs(kb), "doc_id", doc_ids, DOC_OUTPUT)
        }

    def get_document(self, kb: KnowledgeBase, doc_id: str) -> Document | None:
        return self.get_documents(kb, [doc_id]).get(doc_id)

    def ready_doc_ids(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> set[str]:
        rows = self._get_rows(self._docs(kb), "doc_id", doc_ids, ["doc_id", "status"])
        return {r["doc_id"] for r in rows if r["status"] == str(DocStatus.READY)}

    def documents_by_source(self, kb: KnowledgeBase, sources: Sequence[str]) -> list[Document]:
        unique = list(dict.fromkeys(sources))
        docs: list[Document] = []
        for i in range(0, len(unique), IN_BATCH):
            rows = self._query_all(self._docs(kb), "source in {s}", {"s": unique[i : i + IN_BATCH]}, DOC_OUTPUT)
            docs.extend(doc_from_row(r) for r in rows)
        return docs

    def list_documents(
        self,
        kb: KnowledgeBase,
        *,
        status: DocStatus | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Document]:
        # Milvus cannot sort a query: the ids are sorted here from their sort keys alone, then the page's rows are
        # read by id. On Milvus Lite the order is kept until the next write, so paging reads the keys once.
        expr, params = self._doc_filter(status, source)

        def ordered() -> list[str]:
            keys = sorted((r["source"], r["doc_id"]) for r in self._query_all(self._docs(kb), expr, params, KEY_FIELDS))
            return [doc_id for _, doc_id in keys]

        ids = ordered() if source is not None else self._lite_cached(kb, f"listing {status}", ordered)
        page = ids[offset : offset + limit]
        found = self.get_documents(kb, page)
        return [found[doc_id] for doc_id in page if doc_id in found]  # less one deleted since the keys were read

    def iter_documents(
        self, kb: KnowledgeBase, *, status: DocStatus | None = None, batch_size: int = 1_000
    ) -> Iterator[list[Document]]:
        expr, params = self._doc_filter(status, None)
        for rows in self._query_pages(self._docs(kb), expr, params, DOC_OUTPUT, batch_size):
            yield [doc_from_row(r) for r in rows]

    def count_documents(self, kb: KnowledgeBase, *, status: DocStatus | None = None) -> int:
        expr, params = self._doc_filter(status, None)
        return self._count(self._docs(kb), expr, params)

    @staticmethod
    def _doc_filter(status: DocStatus | None, source: str | None) -> tuple[str, dict[str, Any]]:
        clauses, params = ['doc_id != ""'], {}
        if status is not None:
            clauses.append("status == {status}")
            params["status"] = str(status)
        if source is not None:
            clauses.append("source == {source}")
            params["source"] = source
        return " and ".join(clauses), params

    def _query_all(
        self, collection: str, expr: str, params: dict[str, Any], fields: list[str]
    ) -> Iterator[dict[str, Any]]:
        for rows in self._query_pages(collection, expr, params, fields, QUERY_PAGE):
            yield from rows

    def _query_pages(
        self, collection: str, expr: str, params: dict[str, Any], fields: list[str], batch_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``expr``, ``batch_size`` at a time. query_iterator pages by primary key, so it is not
        bound by the offset + limit window of query() (16,384 rows on a Milvus server), nor O(n) per page."""
        it = self.client.query_iterator(
            collection, batch_size=batch_size, filter=_bind(expr, params), output_fields=fields
        )
        try:
            while page := it.next():
                yield page
        finally:
            it.close()

    def _count(self, collection: str, expr: str, params: dict[str, Any]) -> int:
        res = self.client.query(collection, filter=_bind(expr, params), output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    # -- chunks -----------------------------------------------------------------------------------
    def add_chunks(self, kb: KnowledgeBase, chunks: Sequence[Chunk]) -> None:
        rows = []
        for c in chunks:
            if c.vector is None:
                raise StoreError(f"chunk {c.id} has no vector")
            rows.append(
                {
                    "id": c.id,
                    "doc_id": c.doc_id,
                    "ord": c.ord,
                    "text": truncate_utf8(c.text, TEXT_BYTES),
                    "chunk_hash": c.hash,
                    "page": page_in(c.page),
                    "section": truncate_utf8(c.section or "", SHORT_BYTES),
                    "start": c.start,
                    "end": c.end,
                    "metadata": c.metadata,
                    "vector": np.asarray(c.vector, dtype=np.float32).tolist(),
                }
            )
        with self._lock:
            # Under the lock that deletes take: a document deleted during its ingest gets no more chunks.
            ids = [r["doc_id"] for r in rows]
            kept = {r["doc_id"] for r in self._get_rows(self._docs(kb), "doc_id", ids, ["doc_id"])}
            rows = [r for r in rows if r["doc_id"] in kept]
            for i in range(0, len(rows), 2_000):
                self.client.upsert(self._chunks(kb), rows[i : i + 2_000])

    def publish_documents(
        self, kb: KnowledgeBase, docs: Sequence[Document], *, replaces: Mapping[str, str] | None = None
    ) -> list[str]:
        now = time.time()
        with self._writing():
            info = self._writable(kb)
            # Under the lock that deletes take: a row deleted during its ingest (gone, or DELETING) stays deleted.
            current = self.get_documents(kb, [d.id for d in docs])
            live = [d for d in docs if (c := current.get(d.id)) is not None and c.status == DocStatus.PROCESSING]
            gone = [d.id for d in docs if d.id not in {p.id for p in live}]
            for doc in live:
                doc.status, doc.updated_at = DocStatus.READY, now
            olds = [old_id for d in live if (old_id := (replaces or {}).get(d.id)) is not None]
            old_docs = list(self.get_documents(kb, olds).values())
            for old in old_docs:
                old.status, old.updated_at = DocStatus.DELETING, now
            # One upsert flips new and old rows together: searches see either the old version or the new one.
            if live or old_docs:
                self.client.upsert(self._docs(kb), [self._doc_row(kb, d) for d in [*live, *old_docs]])
            if old_docs or gone:
                self._remove(kb, [old.id for old in old_docs] + gone)
            self._bump_revision(kb, info, published=[d.id for d in live], removed=[old.id for old in old_docs])
        return [d.id for d in live]

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        with self._writing():
            info = self._writable(kb)
            doc = self.get_document(kb, doc_id)
            if doc is None:
                raise DocumentNotFound(kb.name, doc_id)
            doc.status = DocStatus.DELETING
            doc.updated_at = time.time()
            self.client.upsert(self._docs(kb), [self._doc_row(kb, doc)])
            self._remove(kb, [doc_id])
            self._bump_revision(kb, info, removed=[doc_id])

    def _remove(self, kb: KnowledgeBase, doc_ids: list[str]) -> None:
        # Chunks before the rows: a crash in between leaves DELETING rows that recovery finishes.
        for collection in self._rr_collections(kb):
            self._ensure_loaded(collection)
            self.client.delete(collection, filter=_bind("doc_id in {d}", {"d": doc_ids}))
        self.client.delete(self._chunks(kb), filter=_bind("doc_id in {d}", {"d": doc_ids}))
        self.client.delete(self._docs(kb), filter=_bind("doc_id in {d}", {"d": doc_ids}))

    def count_chunks(self, kb: KnowledgeBase, *, doc_id: str | None = None) -> int:
        if doc_id is None:
            return self._count(self._chunks(kb), 'id != ""', {})
        return self._count(self._chunks(kb), "doc_id == {d}", {"d": doc_id})

    def iter_chunks(self, kb: KnowledgeBase, *, batch_size: int = 2_000) -> Iterator[list[Chunk]]:
        hidden = self._hidden_doc_ids(kb)
        expr, params = ("doc_id not in {h}", {"h": hidden}) if hidden else ('id != ""', {})
        for rows in self._query_pages(self._chunks(kb), expr, params, CHUNK_FIELDS, batch_size):
            yield [_chunk(row) for row in rows]

    def get_chunks(self, kb: KnowledgeBase, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        hidden = set(self._hidden_doc_ids(kb))
        rows = self._get_rows(self._chunks(kb), "id", chunk_ids, CHUNK_FIELDS)
        return {r["id"]: _chunk(r) for r in rows if r["doc_id"] not in hidden}

    def seal(self, kb: KnowledgeBase) -> None:
        with self._lock:
            self.client.flush(self._chunks(kb))
            self.client.flush(self._docs(kb))

    def kb_revision(self, kb: KnowledgeBase) -> str:
        revision = self._lite_cached(kb, "revision", lambda: indexes.revision(self._entry(kb), kb))
        if revision is None:
            raise KnowledgeBaseNotFound(kb.name)
        return revision

    def _bump_revision(
        self, kb: KnowledgeBase, info: dict[str, Any], *, published: Sequence[str] = (), removed: Sequence[str] = ()
    ) -> None:
        indexes.bump(info, kb, published=published, removed=removed)
        self._put_entry(kb.registry_key, info)

    def changes_since(self, kb: KnowledgeBase, revision: str) -> Changes | None:
        return indexes.changes_since(self._entry(kb), kb, revision)

    # -- re-indexing ------------------------------------------------------------------------------
    def begin_reindex(self, kb: KnowledgeBase, shadow: KnowledgeBase, params: Mapping[str, Any]) -> None:
        with self._writing():
            info = indexes.begun(self._entry(kb), kb, shadow, dict(params))
            dim = shadow.embedding.dimension
            self._create_docs_collection(shadow.key, dim)
            self._create_chunks_collection(shadow.key, dim)
            self._put_entry(kb.registry_key, info)

    def reindex_of(self, kb: KnowledgeBase) -> Shadow | None:
        info = self._entry(kb)
        found = indexes.shadow_of(info) if info is not None else None
        return Shadow(*found) if found is not None else None

    def switch_index(self, kb: KnowledgeBase, revision: str) -> KnowledgeBase | None:
        with self._writing():  # publishes and deletes of kb (in this process) wait, or it waits
            new = indexes.switched(self._entry(kb), kb, revision)
            if new is None:
                return None
            self._put_entry(kb.registry_key, new)
        return kb_from_json(json.dumps(new))

    def retired_indexes(self, kb: KnowledgeBase) -> list[KnowledgeBase]:
        info = self._entry(kb)
        return indexes.retired_of(info) if info is not None else []

    def discard_index(self, kb: KnowledgeBase, index: KnowledgeBase) -> None:
        with self._writing():
            info = self._entry(kb)
            if info is None or not indexes.discardable(info, index):
                return
            self._drop_collections(index)  # then the record: after a crash between, discarding again finishes
            self._put_entry(kb.registry_key, indexes.without(info, index))

    def vectors_for_hashes(self, kb: KnowledgeBase, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), IN_BATCH):
            part = unique[i : i + IN_BATCH]
            rows = self.client.query(
                self._chunks(kb),
                filter=_bind("chunk_hash in {h}", {"h": part}),
                output_fields=["chunk_hash", "vector"],
                limit=QUERY_PAGE,
            )
            for r in rows:
                found[r["chunk_hash"]] = np.asarray(r["vector"], dtype=np.float32)
        return found

    # -- rerank vectors ---------------------------------------------------------------------------
    # One collection per knowledge base and space, created by the first write; ``_remove`` deletes a document's
    # vectors with its chunks.
    def rerank_vectors(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self._rerank_rows(kb, space, chunk_ids, ["id", "vector"])
        return {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}

    def rerank_vector_ids(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str]) -> set[str]:
        return {r["id"] for r in self._rerank_rows(kb, space, chunk_ids, ["id"])}

    def _rerank_rows(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str], fields: list[str]) -> list[Any]:
        collection = rerank_table(kb, space)
        if collection not in self._loaded and not self.client.has_collection(collection):
            return []  # nothing stored in this space yet
        try:
            self._ensure_loaded(collection)
            rows = self._get_rows(collection, "id", chunk_ids, fields)
        except MilvusException:
            if self.client.has_collection(collection):
                raise
            self._loaded.discard(collection)  # dropped by another process
            return []
        return rows

    def put_rerank_vectors(self, kb: KnowledgeBase, space: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} rerank vectors")
        if not chunks:
            return
        collection = rerank_table(kb, space)
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            if not self.client.has_collection(collection):
                self.get_kb(kb.name)  # KnowledgeBaseNotFound once it is dropped
                self._create_rr_collection(collection, vectors.shape[1])
            self._ensure_loaded(collection)
            self.client.upsert(
                collection,
                [{"id": c.id, "doc_id": c.doc_id, "vector": v.tolist()} for c, v in zip(chunks, vectors, strict=True)],
            )
            # Milvus has no foreign keys: drop the vectors of documents removed meanwhile.
            doc_ids = list({c.doc_id for c in chunks})
            live = self.get_documents(kb, doc_ids)
            gone = [d for d in doc_ids if d not in live or live[d].status == DocStatus.DELETING]
            if gone:
                self.client.delete(collection, filter=_bind("doc_id in {d}", {"d": gone}))

    def _create_rr_collection(self, name: str, dim: int) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=160)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE")  # read by id, never searched
        index.add_index("doc_id", index_type="INVERTED")
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    # -- search -----------------------------------------------------------------------------------
    def _hidden_doc_ids(self, kb: KnowledgeBase) -> list[str]:
        def read() -> tuple[str, ...]:
            # All of them: a bulk upload can leave more than a page of documents unpublished at once.
            rows = self._query_all(self._docs(kb), "status != {s}", {"s": str(DocStatus.READY)}, ["doc_id"])
            return tuple(r["doc_id"] for r in rows)

        return list(self._lite_cached(kb, "hidden", read))

    def search_chunks(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None = None,
        filters: Filter | None = None,
    ) -> list[list[ScoredChunk]]:
        res = self._search_chunks(kb, queries, CHUNK_FIELDS, top_k=top_k, doc_ids=doc_ids, filters=filters)
        return [[_scored_chunk(hit) for hit in hits] for hits in res]

    def search_chunk_ids(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None = None,
        filters: Filter | None = None,
    ) -> list[list[tuple[str, float]]]:
        # Without the rows: reading the entities is a large share of a Milvus Lite search.
        res = self._search_chunks(kb, queries, ["id"], top_k=top_k, doc_ids=doc_ids, filters=filters)
        return [[(hit["id"], float(hit["distance"])) for hit in hits] for hits in res]

    def _search_chunks(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        fields: list[str],
        *,
        top_k: int,
        doc_ids: Sequence[str] | None,
        filters: Filter | None,
    ) -> Any:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        hidden = self._hidden_doc_ids(kb)
        if hidden:
            clauses.append("doc_id not in {hidden}")
            params["hidden"] = hidden
        if doc_ids is not None:
            clauses.append("doc_id in {only}")
            params["only"] = list(doc_ids)
        for i, condition in enumerate(filters.conditions if filters else ()):
            field = condition.field if condition.is_column else f'metadata["{condition.field}"]'
            # JSON paths do not support "in": spell the alternatives out.
            clauses.append("(" + " or ".join(f"{field} == {{f{i}_{j}}}" for j in range(len(condition.values))) + ")")
            params.update({f"f{i}_{j}": v for j, v in enumerate(condition.values)})
        return self._search(self._chunks(kb), "id", queries, _bind(" and ".join(clauses), params), fields, top_k)

    def search_documents(self, kb: KnowledgeBase, queries: np.ndarray, *, top_k: int) -> list[list[tuple[str, float]]]:
        expr = _bind("status == {s}", {"s": str(DocStatus.READY)})
        res = self._search(self._docs(kb), "doc_id", queries, expr, ["doc_id"], top_k)
        return [[(h["entity"]["doc_id"], float(h["distance"])) for h in hits] for hits in res]

    def _search(
        self, collection: str, pk: str, queries: np.ndarray, expr: str, fields: list[str], top_k: int
    ) -> list[list[Any]]:
        """The ``top_k`` rows matching ``expr`` nearest each query. An HNSW search under a filter that excludes
        most rows (a gate's few documents, a bulk upload not yet published) can end before it finds ``top_k`` of
        them: FAISS, Milvus Lite's engine, walks the graph with the excluded rows as dead ends. A query answered
        short of the rows that match is answered again exactly when they are few, else with a wider search."""
        data = np.asarray(queries, dtype=np.float32)
        res = [list(hits) for hits in self._ann(collection, data, expr, fields, top_k, ef=max(64, top_k * 2))]
        if not expr or all(len(hits) >= top_k for hits in res):
            return res
        matching = self._count(collection, expr, {})
        short = [i for i, hits in enumerate(res) if len(hits) < min(top_k, matching)]
        if not short:
            return res
        if matching <= EXACT_ROWS:
            again = self._exact(collection, pk, data[short], expr, fields, top_k)
        else:
            again = [list(h) for h in self._ann(collection, data[short], expr, fields, top_k, ef=WIDE_EF)]
        for i, hits in zip(short, again, strict=True):
            res[i] = hits
        return res

    def _ann(self, collection: str, data: np.ndarray, expr: str, fields: list[str], top_k: int, *, ef: int) -> Any:
        return self.client.search(
            collection,
            data=data.tolist(),
            anns_field="vector",
            limit=top_k,
            filter=expr,
            output_fields=fields,
            search_params={"metric_type": "COSINE", "params": {"ef": max(ef, top_k)}},
        )

    def _exact(
        self, collection: str, pk: str, data: np.ndarray, expr: str, fields: list[str], top_k: int
    ) -> list[list[dict[str, Any]]]:
        """Hits shaped as a search's (id, distance: the cosine, entity), from every row matching ``expr``."""
        rows = list(self._query_all(collection, expr, {}, [*fields, "vector"]))
        if not rows:
            return [[] for _ in data]
        vectors = np.asarray([r.pop("vector") for r in rows], dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        queries = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        scores = queries @ vectors.T
        hits = []
        for row_scores in scores:
            best = np.argsort(-row_scores, kind="stable")[:top_k]
            hits.append([{"id": rows[j][pk], "distance": float(row_scores[j]), "entity": rows[j]} for j in best])
        return hits

    def ping(self) -> None:
        try:
            self.client.has_collection(REGISTRY)
        except MilvusException as exc:
            raise StoreError(f"Milvus at {self.uri} is unreachable: {exc}") from exc

    def close(self) -> None:
        self.client.close()
        if self._lite is not None:
            with self._lite_lock:
                self._leave_lite()

    # Both with ``_lite_lock`` held.
    def _join_lite(self, in_child: bool, speedups: bool) -> str:
        """The URI to reach this file's Milvus Lite: its child-process server (started by the first user), or the
        file itself for pymilvus' in-process server. The first user decides on ``stores.milvus_lite_speedups``; in
        this process they stay once installed."""
        assert self._lite is not None
        logging.getLogger("pymilvus.orm.iterator").addFilter(_LITE_SESSION_TS)
        first = self._lite not in self._lite_users
        self._lite_users[self._lite] = self._lite_users.get(self._lite, 0) + 1
        if self._lite in self._lite_servers:
            return self._lite_servers[self._lite].uri
        if not in_child or not first:  # this process already serves the file in its own threads
            if speedups:
                milvus_lite_speedups.install()
            return self._lite
        try:
            server = start_embedded_milvus(Path(self._lite), speedups=speedups)
        except StoreError:
            self._leave_lite()
            raise
        self._lite_servers[self._lite] = server
        return server.uri

    def _leave_lite(self) -> None:
        assert self._lite is not None
        users = self._lite_users[self._lite] = self._lite_users.get(self._lite, 1) - 1
        if users > 0:
            return
        del self._lite_users[self._lite]
        for key in [k for k in self._lite_reads if k[0] == self._lite]:
            del self._lite_reads[key]
        server = self._lite_servers.pop(self._lite, None)
        if server is not None:
            server.stop()
            return
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(self._lite)


class _LiteHasNoSessionTs(logging.Filter):
    """Milvus Lite answers a query iterator no session timestamp; pymilvus then warns on every iterator and uses the
    client's clock instead, which is right for a single local engine. The warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to get mvccTs" not in record.getMessage()


_LITE_SESSION_TS = _LiteHasNoSessionTs()


def _bind(expr: str, params: dict[str, Any]) -> str:
    """Fill ``{name}`` slots with literals (Milvus Lite has no filter templating)."""
    return expr.format(**{k: _literal(v) for k, v in params.items()}) if params else expr


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def _literal(value: Any) -> str:
    """A Milvus expression literal. Strings escape only what its parser needs (backslash, quote, line breaks) and
    keep every other character as it is: it knows no ``\\uXXXX``, ``\\b`` or ``\\f`` escape."""
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(value)


def _scored_chunk(hit: dict[str, Any]) -> ScoredChunk:
    chunk = _chunk(hit["entity"])
    return ScoredChunk(chunk=chunk, score=float(hit["distance"]), source=chunk.metadata.get("source", ""))


def _chunk(e: dict[str, Any]) -> Chunk:
    return Chunk(
        id=e["id"],
        doc_id=e["doc_id"],
        ord=int(e["ord"]),
        text=e["text"],
        hash=e["chunk_hash"],
        page=page_out(e["page"]),
        section=e["section"] or None,
        start=int(e["start"]),
        end=int(e["end"]),
        metadata=dict(e.get("metadata") or {}),
    )
