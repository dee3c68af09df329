"""PgvectorStore: PostgreSQL with pgvector through psycopg 3, one table pair per KB; HNSW cosine indexes built in
bulk once a table is large enough to need one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from kb_service.core.errors import (
    DocumentNotFound,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
    StoreError,
)
from kb_service.core.records import Chunk, DocStatus, Document, KnowledgeBase, ScoredChunk, kb_key
from kb_service.stores import indexes
from kb_service.stores.base import Shadow, rerank_prefix, rerank_table
from kb_service.stores.changes import Changes
from kb_service.stores.filters import Filter, with_numeric_twins
from kb_service.stores.serialize import (
    DOC_FIELDS,
    doc_from_row,
    doc_to_row,
    kb_from_json,
    kb_to_json,
    page_in,
    page_out,
)

CHUNK_COLUMNS = ("id", "doc_id", "ord", "text", "chunk_hash", "page", "section", "start_char", "end_char", "metadata")
# Below this many rows a table's vectors are searched exactly (as fast as HNSW there, and exact); from it on, ``seal``
# builds an HNSW index in one go: pgvector 0.6 builds HNSW far cheaper at once than it maintains it row by row
# (docs/BENCHMARKS.md, "Measurements behind the code").
HNSW_MIN_ROWS = 5_000
# Room for the in-memory build (about 2 KB per 384-d vector; beyond it pgvector goes on on disk, row by row),
# within 64 MB – 1 GB.
HNSW_BUILD_MEMORY_KB_PER_ROW = 4
HNSW_BUILD_MEMORY_KB = (65_536, 1_048_576)


class PgvectorStore:
    """Vector store over PostgreSQL + pgvector. Publishing and replacing documents are single transactions."""

    def __init__(self, dsn: str, *, pool_size: int = 8, hnsw_min_rows: int = HNSW_MIN_ROWS) -> None:
        self.dsn = dsn
        self.hnsw_min_rows = hnsw_min_rows
        self._rr_tables: set[str] = set()  # rerank vector tables known to exist
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                conn.execute("CREATE TABLE IF NOT EXISTS kb_registry (key text PRIMARY KEY, info jsonb NOT NULL)")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open PostgreSQL: {exc}") from exc
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            configure=register_vector,
            check=ConnectionPool.check_connection,  # connections broken by a restart are replaced, not handed out
            open=True,
            timeout=5,
            kwargs={"row_factory": dict_row},
        )

    @contextmanager
    def _tx(self, kb: KnowledgeBase | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A transaction; on ``kb``'s tables, KnowledgeBaseNotFound once that very knowledge base is dropped (a
        successor under its name has tables of its own)."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.errors.UndefinedTable as exc:
            if kb is None:
                raise
            raise KnowledgeBaseNotFound(kb.name) from exc
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL is unreachable: {exc}") from exc

    @staticmethod
    def _t(kb: KnowledgeBase, suffix: str) -> sql.Identifier:
        return sql.Identifier(f"kb_{kb.key}_{suffix}")

    @staticmethod
    def _index(kb: KnowledgeBase, suffix: str, column: str) -> sql.Identifier:
        return sql.Identifier(f"kb_{kb.key}_{suffix}_{column}_idx")

    # -- knowledge bases -------------------------------------------------------------------------
    def create_kb(self, kb: KnowledgeBase) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM kb_registry WHERE key = %s", (kb.registry_key,)).fetchone():
                raise KnowledgeBaseExists(kb.name)
            self._create_tables(conn, kb)
            conn.execute("INSERT INTO kb_registry (key, info) VALUES (%s, %s)", (kb.registry_key, kb_to_json(kb)))

    def _create_tables(self, conn: psycopg.Connection[Any], kb: KnowledgeBase) -> None:
        docs, chunks, dim = self._t(kb, "docs"), self._t(kb, "chunks"), kb.embedding.dimension
        conn.execute(
            sql.SQL(
                """CREATE TABLE {docs} (
                    doc_id text PRIMARY KEY, source text NOT NULL, title text NOT NULL,
                    format text NOT NULL, status text NOT NULL, error text NOT NULL,
                    summary text NOT NULL, chunk_count integer NOT NULL, n_chars integer NOT NULL,
                    metadata jsonb NOT NULL, created_at double precision NOT NULL,
                    updated_at double precision NOT NULL, vector vector({dim}))"""
            ).format(docs=docs, dim=sql.Literal(dim))
        )
        conn.execute(
            sql.SQL(
                """CREATE TABLE {chunks} (
                    id text PRIMARY KEY, doc_id text NOT NULL REFERENCES {docs}(doc_id) ON DELETE CASCADE,
                    ord integer NOT NULL, text text NOT NULL, chunk_hash text NOT NULL, page integer NOT NULL,
                    section text NOT NULL, start_char integer NOT NULL, end_char integer NOT NULL,
                    metadata jsonb NOT NULL, vector vector({dim}) NOT NULL)"""
            ).format(chunks=chunks, docs=docs, dim=sql.Literal(dim))
        )
        # Vectors stay in the row (pgvector's default, EXTERNAL, moves them out of line once a row passes 2 KB,
        # and an exact scan then reads two pages per row, about three times slower).
        for table in (docs, chunks):
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN vector SET STORAGE MAIN").format(table))
        # The vector (HNSW) indexes come later, from ``seal``, once a table is large enough.
        for suffix, col, method in (
            ("chunks", "doc_id", "btree (doc_id)"),
            ("chunks", "chunk_hash", "btree (chunk_hash)"),
            ("docs", "source", "btree (source)"),
            ("docs", "status", "btree (status)"),
        ):
            conn.execute(
                sql.SQL("CREATE INDEX {name} ON {table} USING " + method).format(
                    name=self._index(kb, suffix, col), table=self._t(kb, suffix)
                )
            )

    def get_kb(self, name: str) -> KnowledgeBase:
        with self._tx() as conn:
            row = conn.execute("SELECT info FROM kb_registry WHERE key = %s", (kb_key(name),)).fetchone()
        if row is None:
            raise KnowledgeBaseNotFound(name)
        return kb_from_json(json.dumps(row["info"]))

    def list_kbs(self) -> list[KnowledgeBase]:
        with self._tx() as conn:
            rows = conn.execute("SELECT info FROM kb_registry").fetchall()
        return sorted((kb_from_json(json.dumps(r["info"])) for r in rows), key=lambda kb: kb.name)

    def drop_kb(self, name: str) -> None:
        with self._tx() as conn:
            info = self._info(conn, kb_key(name), lock=True)
            if info is None:
                raise KnowledgeBaseNotFound(name)
            kb = kb_from_json(json.dumps(info))
            shadow = indexes.shadow_of(info)
            for index in [kb, *([shadow[0]] if shadow else []), *indexes.retired_of(info)]:
                self._drop_tables(conn, index)
            conn.execute("DELETE FROM kb_registry WHERE key = %s", (kb.registry_key,))

    def _drop_tables(self, conn: psycopg.Connection[Any], kb: KnowledgeBase) -> None:
        """Drop the tables of that index of the knowledge base (its rerank vector tables too)."""
        # Under the lock that creates rerank vector tables: none appears between this listing and the drops.
        _lock_rerank_tables(conn, kb)
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, %s)",
            (rerank_prefix(kb),),
        ).fetchall():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(row["tablename"])))
            self._rr_tables.discard(row["tablename"])
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t(kb, "chunks")))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._t(kb, "docs")))

    @staticmethod
    def _info(conn: psycopg.Connection[Any], key: str, *, lock: bool = False) -> dict[str, Any] | None:
        """A registry entry; with ``lock``, locked until the transaction ends (the lock every write of the knowledge
        base's documents takes, and a switch of its index)."""
        query = "SELECT info FROM kb_registry WHERE key = %s" + (" FOR UPDATE" if lock else "")
        row = conn.execute(query, (key,)).fetchone()
        return None if row is None else cast(dict[str, Any], row["info"])

    def _writable(self, conn: psycopg.Connection[Any], kb: KnowledgeBase) -> dict[str, Any]:
        """Lock ``kb``'s registry entry for a write of its documents: KnowledgeBaseNotFound unless ``kb`` is the
        index serving or the one a re-index builds (a switch waits for the write, or the write for the switch)."""
        info = self._info(conn, kb.registry_key, lock=True)
        if indexes.role(info, kb) not in indexes.WRITABLE:
            raise KnowledgeBaseNotFound(kb.name)
        assert info is not None
        return info

    @staticmethod
    def _bump(
        conn: psycopg.Connection[Any],
        kb: KnowledgeBase,
        info: dict[str, Any],
        *,
        published: Sequence[str] = (),
        removed: Sequence[str] = (),
    ) -> None:
        indexes.bump(info, kb, published=published, removed=removed)
        conn.execute("UPDATE kb_registry SET info = %s WHERE key = %s", (Jsonb(info), kb.registry_key))

    # -- documents --------------------------------------------------------------------------------
    def put_documents(self, kb: KnowledgeBase, docs: Sequence[Document]) -> None:
        if not docs:
            return
        cols = [*DOC_FIELDS, "vector"]
        rows = []
        for doc in docs:
            row = doc_to_row(doc)
            row["metadata"] = Jsonb(row["metadata"])
            # An unpublished document's vector waits for ``publish_documents``: written twice, it would be indexed
            # twice.
            vector = doc.summary_vector if doc.status == DocStatus.READY else None
            row["vector"] = None if vector is None else np.asarray(vector, np.float32)
            rows.append(row)
        with self._tx(kb) as conn, conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT (doc_id) DO UPDATE SET {upd}").format(
                    t=self._t(kb, "docs"),
                    cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                    vals=sql.SQL(", ").join(sql.Placeholder(c) for c in cols),
                    upd=sql.SQL(", ").join(
                        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols if c != "doc_id"
                    ),
                ),
                rows,
            )

    def get_documents(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> dict[str, Document]:
        return {d.id: d for d in self._select_docs(kb, "doc_id", doc_ids)}

    def get_document(self, kb: KnowledgeBase, doc_id: str) -> Document | None:
        return self.get_documents(kb, [doc_id]).get(doc_id)

    def ready_doc_ids(self, kb: KnowledgeBase, doc_ids: Sequence[str]) -> set[str]:
        with self._tx(kb) as conn:
            rows = conn.execute(
                sql.SQL("SELECT doc_id FROM {t} WHERE doc_id = ANY(%s) AND status = %s").format(t=self._t(kb, "docs")),
                (list(doc_ids), str(DocStatus.READY)),
            ).fetchall()
        return {r["doc_id"] for r in rows}

    def documents_by_source(self, kb: KnowledgeBase, sources: Sequence[str]) -> list[Document]:
        return self._select_docs(kb, "source", sources)

    def _select_docs(self, kb: KnowledgeBase, column: str, values: Sequence[str]) -> list[Document]:
        with self._tx(kb) as conn:
            rows = conn.execute(
                sql.SQL("SELECT {cols} FROM {t} WHERE {c} = ANY(%s)").format(
                    cols=_doc_cols(), t=self._t(kb, "docs"), c=sql.Identifier(column)
                ),
                (list(values),),
            ).fetchall()
        return [doc_from_row(r) for r in rows]

    def list_documents(
        self,
        kb: KnowledgeBase,
        *,
        status: DocStatus | None = None,
        source: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Document]:
        where, params = _doc_where(status, source)
        with self._tx(kb) as conn:
            rows = conn.execute(
                sql.SQL("SELECT {cols} FROM {t} WHERE {w} ORDER BY source, doc_id OFFSET %s LIMIT %s").format(
                    cols=_doc_cols(), t=self._t(kb, "docs"), w=where
                ),
                [*params, offset, limit],
            ).fetchall()
        return [doc_from_row(r) for r in rows]

    def iter_documents(
        self, kb: KnowledgeBase, *, status: DocStatus | None = None, batch_size: int = 1_000
    ) -> Iterator[list[Document]]:
        where, params = _doc_where(status, None)
        after = ""  # keyset paging on the primary key: each batch is one index range scan, not an OFFSET
        while True:
            with self._tx(kb) as conn:
                rows = conn.execute(
                    sql.SQL("SELECT {cols} FROM {t} WHERE {w} AND doc_id > %s ORDER BY doc_id LIMIT %s").format(
                        cols=_doc_cols(), t=self._t(kb, "docs"), w=where
                    ),
                    [*params, after, batch_size],
                ).fetchall()
            if not rows:
                return
            yield [doc_from_row(r) for r in rows]
            after = rows[-1]["doc_id"]

    def count_documents(self, kb: KnowledgeBase, *, status: DocStatus | None = None) -> int:
        where, params = _doc_where(status, None)
        with self._tx(kb) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {t} WHERE {w}").format(t=self._t(kb, "docs"), w=where), params
            ).fetchone()
        return int(row["n"]) if row else 0

    # -- chunks -----------------------------------------------------------------------------------
    def add_chunks(self, kb: KnowledgeBase, chunks: Sequence[Chunk]) -> None:
        if any(c.vector is None for c in chunks):
            raise StoreError("every chunk needs a vector before it is stored")
        copy_sql = sql.SQL("COPY {t} ({cols}) FROM STDIN WITH (FORMAT BINARY)").format(
            t=self._t(kb, "chunks"), cols=sql.SQL(", ").join(map(sql.Identifier, [*CHUNK_COLUMNS, "vector"]))
        )
        with self._tx(kb) as conn:
            # Rows locked until the chunks are in: a delete waits, then takes them (ON DELETE CASCADE); chunks of a
            # document deleted before are not written.
            kept = {
                r["doc_id"]
                for r in conn.execute(
                    sql.SQL("SELECT doc_id FROM {t} WHERE doc_id = ANY(%s) FOR SHARE").format(t=self._t(kb, "docs")),
                    (list({c.doc_id for c in chunks}),),
                ).fetchall()
            }
            self._copy_chunks(conn, copy_sql, [c for c in chunks if c.doc_id in kept])

    @staticmethod
    def _copy_chunks(conn: psycopg.Connection[Any], copy_sql: sql.Composed, chunks: Sequence[Chunk]) -> None:
        with conn.cursor().copy(copy_sql) as copy:
            copy.set_types(["text", "text", "int4", "text", "text", "int4", "text", "int4", "int4", "jsonb", "vector"])
            for c in chunks:
                copy.write_row(
                    (
                        c.id,
                        c.doc_id,
                        c.ord,
                        c.text,
                        c.hash,
                        page_in(c.page),
                        c.section or "",
                        c.start,
                        c.end,
                        Jsonb(c.metadata),
                        np.asarray(c.vector, dtype=np.float32),
                    )
                )

    def publish_documents(
        self, kb: KnowledgeBase, docs: Sequence[Document], *, replaces: Mapping[str, str] | None = None
    ) -> list[str]:
        now = time.time()
        with self._tx(kb) as conn, conn.cursor() as cur:
            info = self._writable(conn, kb)
            # Locked: a delete waits for this transaction; rows deleted before it (during their ingest) stay deleted.
            live = {
                r["doc_id"]
                for r in cur.execute(
                    sql.SQL("SELECT doc_id FROM {t} WHERE doc_id = ANY(%s) AND status = %s FOR UPDATE").format(
                        t=self._t(kb, "docs")
                    ),
                    ([d.id for d in docs], str(DocStatus.PROCESSING)),
                ).fetchall()
            }
            published = [d for d in docs if d.id in live]
            self._publish(cur, kb, published, now)
            olds = [old for d in published if (old := (replaces or {}).get(d.id)) is not None]
            if olds:
                # Same transaction: readers see the old version or the new one, never both or neither.
                cur.execute(sql.SQL("DELETE FROM {t} WHERE doc_id = ANY(%s)").format(t=self._t(kb, "docs")), (olds,))
            self._bump(conn, kb, info, published=[d.id for d in published], removed=olds)
        return [d.id for d in published]

    def _publish(self, cur: psycopg.Cursor[Any], kb: KnowledgeBase, docs: Sequence[Document], now: float) -> None:
        params = []
        for doc in docs:
            doc.status, doc.updated_at = DocStatus.READY, now
            params.append(
                (
                    str(doc.status),
                    doc.summary,
                    doc.chunk_count,
                    doc.n_chars,
                    Jsonb(doc.metadata),
                    now,
                    None if doc.summary_vector is None else np.asarray(doc.summary_vector, np.float32),
                    doc.id,
                )
            )
        if params:
            cur.executemany(
                sql.SQL(
                    "UPDATE {t} SET status = %s, error = '', summary = %s, chunk_count = %s, n_chars = %s, "
                    "metadata = %s, updated_at = %s, vector = %s WHERE doc_id = %s"
                ).format(t=self._t(kb, "docs")),
                params,
            )

    def delete_document(self, kb: KnowledgeBase, doc_id: str) -> None:
        with self._tx(kb) as conn:
            info = self._writable(conn, kb)
            cur = conn.execute(sql.SQL("DELETE FROM {t} WHERE doc_id = %s").format(t=self._t(kb, "docs")), (doc_id,))
            if cur.rowcount == 0:
                raise DocumentNotFound(kb.name, doc_id)
            self._bump(conn, kb, info, removed=[doc_id])

    def count_chunks(self, kb: KnowledgeBase, *, doc_id: str | None = None) -> int:
        where = sql.SQL("TRUE") if doc_id is None else sql.SQL("doc_id = %s")
        with self._tx(kb) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) AS n FROM {t} WHERE {w}").format(t=self._t(kb, "chunks"), w=where),
                () if doc_id is None else (doc_id,),
            ).fetchone()
        return int(row["n"]) if row else 0

    def iter_chunks(self, kb: KnowledgeBase, *, batch_size: int = 2_000) -> Iterator[list[Chunk]]:
        query = sql.SQL(
            "SELECT {cols} FROM {c} c JOIN {d} d ON d.doc_id = c.doc_id WHERE d.status = 'ready' ORDER BY c.id"
        ).format(cols=_chunk_cols(), c=self._t(kb, "chunks"), d=self._t(kb, "docs"))
        # A server-side cursor streams the rows: the whole table never sits in memory at once.
        with self._tx(kb) as conn, conn.cursor(name=f"chunks_{uuid.uuid4().hex}") as cur:
            cur.execute(query)
            while rows := cur.fetchmany(batch_size):
                yield [_chunk(r) for r in rows]

    def get_chunks(self, kb: KnowledgeBase, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        query = sql.SQL(
            "SELECT {cols} FROM {c} c JOIN {d} d ON d.doc_id = c.doc_id WHERE d.status = 'ready' AND c.id = ANY(%s)"
        ).format(cols=_chunk_cols(), c=self._t(kb, "chunks"), d=self._t(kb, "docs"))
        with self._tx(kb) as conn:
            rows = conn.execute(query, (list(dict.fromkeys(chunk_ids)),)).fetchall()
        return {r["id"]: _chunk(r) for r in rows}

    def seal(self, kb: KnowledgeBase) -> None:
        """After an ingest: refresh each table's planner statistics when its row count moved by a fifth or more
        since they were taken (right after a first ingest the planner would otherwise still count its documents as
        unpublished and join chunks to them row by row, ten times slower), and build the HNSW index
        of a table that has none yet and holds at least ``hnsw_min_rows`` rows, in one go; from then on PostgreSQL
        maintains it on every insert. Reads go on during a build; writes to that table wait for it."""
        for suffix in ("chunks", "docs"):
            table, index = self._t(kb, suffix), self._index(kb, suffix, "vector")
            with self._tx(kb) as conn:
                # One sealer per KB at a time: a concurrent one waits here, then finds the work done.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"seal:{kb.key}",))
                rows = _scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(table))
                estimate = _scalar(
                    conn,
                    sql.SQL("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)"),
                    (table.as_string(conn),),
                )
                if estimate < 0 or abs(rows - estimate) > 0.2 * max(rows, 1):  # -1: never analysed
                    conn.execute(sql.SQL("ANALYZE {}").format(table))
                if rows < self.hnsw_min_rows or _scalar(
                    conn, sql.SQL("SELECT to_regclass(%s)"), (index.as_string(conn),)
                ):
                    continue
                low, high = HNSW_BUILD_MEMORY_KB
                memory = min(high, max(low, rows * HNSW_BUILD_MEMORY_KB_PER_ROW))
                conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(f"{memory}kB")))
                conn.execute(
                    sql.SQL("CREATE INDEX {} ON {} USING hnsw (vector vector_cosine_ops)").format(index, table)
                )

    def kb_revision(self, kb: KnowledgeBase) -> str:
        with self._tx(kb) as conn:
            revision = indexes.revision(self._info(conn, kb.registry_key), kb)
        if revision is None:
            raise KnowledgeBaseNotFound(kb.name)
        return revision

    def changes_since(self, kb: KnowledgeBase, revision: str) -> Changes | None:
        with self._tx(kb) as conn:
            return indexes.changes_since(self._info(conn, kb.registry_key), kb, revision)

    # -- re-indexing ------------------------------------------------------------------------------
    def begin_reindex(self, kb: KnowledgeBase, shadow: KnowledgeBase, params: Mapping[str, Any]) -> None:
        with self._tx() as conn:
            info = indexes.begun(self._info(conn, kb.registry_key, lock=True), kb, shadow, dict(params))
            self._create_tables(conn, shadow)
            conn.execute("UPDATE kb_registry SET info = %s WHERE key = %s", (Jsonb(info), kb.registry_key))

    def reindex_of(self, kb: KnowledgeBase) -> Shadow | None:
        with self._tx() as conn:
            info = self._info(conn, kb.registry_key)
        found = indexes.shadow_of(info) if info is not None else None
        return Shadow(*found) if found is not None else None

    def switch_index(self, kb: KnowledgeBase, revision: str) -> KnowledgeBase | None:
        with self._tx() as conn:
            # Locked: the publishes and deletes of kb wait for the switch, or it waits for them.
            new = indexes.switched(self._info(conn, kb.registry_key, lock=True), kb, revision)
            if new is None:
                return None
            conn.execute("UPDATE kb_registry SET info = %s WHERE key = %s", (Jsonb(new), kb.registry_key))
        return kb_from_json(json.dumps(new))

    def retired_indexes(self, kb: KnowledgeBase) -> list[KnowledgeBase]:
        with self._tx() as conn:
            info = self._info(conn, kb.registry_key)
        return indexes.retired_of(info) if info is not None else []

    def discard_index(self, kb: KnowledgeBase, index: KnowledgeBase) -> None:
        with self._tx() as conn:
            info = self._info(conn, kb.registry_key, lock=True)
            if info is None or not indexes.discardable(info, index):
                return
            self._drop_tables(conn, index)
            kept = Jsonb(indexes.without(info, index))
            conn.execute("UPDATE kb_registry SET info = %s WHERE key = %s", (kept, kb.registry_key))

    def vectors_for_hashes(self, kb: KnowledgeBase, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        with self._tx(kb) as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT DISTINCT ON (chunk_hash) chunk_hash, vector FROM {t} WHERE chunk_hash = ANY(%s)"
                ).format(t=self._t(kb, "chunks")),
                (list(set(hashes)),),
            ).fetchall()
        return {r["chunk_hash"]: _as_array(r["vector"]) for r in rows}

    # -- rerank vectors ---------------------------------------------------------------------------
    # One table per knowledge base and space, created by the first write: rows reference their chunk, so every
    # path that deletes chunks (document deleted or replaced, recovery) deletes their vectors in the same step.
    def rerank_vectors(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {r["id"]: _as_array(r["vector"]) for r in self._rerank_rows(kb, space, chunk_ids, "id, vector")}

    def rerank_vector_ids(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str]) -> set[str]:
        return {r["id"] for r in self._rerank_rows(kb, space, chunk_ids, "id")}

    def _rerank_rows(self, kb: KnowledgeBase, space: str, chunk_ids: Sequence[str], columns: str) -> list[Any]:
        table = sql.Identifier(rerank_table(kb, space))
        try:
            with self._tx() as conn:
                return conn.execute(
                    sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(sql.SQL(columns), table),
                    (list(chunk_ids),),
                ).fetchall()
        except psycopg.errors.UndefinedTable:  # nothing stored in this space yet
            return []

    def put_rerank_vectors(self, kb: KnowledgeBase, space: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise StoreError(f"{len(chunks)} chunks but {len(vectors)} rerank vectors")
        if not chunks:
            return
        name = rerank_table(kb, space)
        table = sql.Identifier(name)
        insert = sql.SQL(
            "INSERT INTO {rr} (id, vector) SELECT c.id, %s FROM {c} c WHERE c.id = %s "
            "ON CONFLICT (id) DO UPDATE SET vector = EXCLUDED.vector"
        ).format(rr=table, c=self._t(kb, "chunks"))
        rows = [(np.asarray(v, dtype=np.float32), c.id) for c, v in zip(chunks, vectors, strict=True)]
        for attempt in range(3):
            try:
                with self._tx() as conn:
                    if name not in self._rr_tables:
                        self._create_rr_table(conn, kb, table)
                    conn.cursor().executemany(insert, rows)
                self._rr_tables.add(name)
                return
            except psycopg.errors.ForeignKeyViolation:
                # A chunk was deleted between the existence check and the insert: the next try skips it.
                if attempt == 2:
                    raise
            except psycopg.errors.UndefinedTable as exc:
                if name not in self._rr_tables:  # the chunks table is gone: so is the knowledge base
                    raise KnowledgeBaseNotFound(kb.name) from exc
                self._rr_tables.discard(name)  # dropped by another process: create it again
        raise StoreError(f"could not store rerank vectors for knowledge base {kb.name!r}")

    def _create_rr_table(self, conn: psycopg.Connection[Any], kb: KnowledgeBase, table: sql.Identifier) -> None:
        _lock_rerank_tables(conn, kb)  # one creator at a time
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {rr} (id text PRIMARY KEY REFERENCES {c}(id) ON DELETE CASCADE, "
                "vector vector NOT NULL)"
            ).format(rr=table, c=self._t(kb, "chunks"))
        )
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN vector SET STORAGE MAIN").format(table))

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
        # The nearest ids first, then their rows: sorting only (id, distance) keeps an exact scan cheap.
        rows = self._search_chunks(
            kb,
            queries,
            "SELECT {cols}, 1 - top.distance AS score FROM top JOIN {c} c ON c.id = top.id ORDER BY top.distance",
            top_k=top_k,
            doc_ids=doc_ids,
            filters=filters,
        )
        return [[_scored_chunk(r) for r in hits] for hits in rows]

    def search_chunk_ids(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None = None,
        filters: Filter | None = None,
    ) -> list[list[tuple[str, float]]]:
        select = "SELECT top.id, 1 - top.distance AS score FROM top ORDER BY top.distance"
        rows = self._search_chunks(kb, queries, select, top_k=top_k, doc_ids=doc_ids, filters=filters)
        return [[(r["id"], float(r["score"])) for r in hits] for hits in rows]

    def _search_chunks(
        self,
        kb: KnowledgeBase,
        queries: np.ndarray,
        select: str,
        *,
        top_k: int,
        doc_ids: Sequence[str] | None,
        filters: Filter | None,
    ) -> list[list[dict[str, Any]]]:
        """The rows of ``select`` over ``top``, the ``top_k`` nearest visible chunks (id, distance), per query."""
        clauses: list[sql.Composable] = [sql.SQL("d.status = 'ready'")]
        params: dict[str, Any] = {"k": top_k}
        if doc_ids is not None:
            clauses.append(sql.SQL("c.doc_id = ANY(%(only)s)"))
            params["only"] = list(doc_ids)
        for i, condition in enumerate(filters.conditions if filters else ()):
            if condition.is_column:
                clauses.append(sql.SQL(f"c.{condition.field} = ANY(%(f{i})s)"))
                params[f"f{i}"] = list(condition.values)
            else:
                clauses.append(sql.SQL(f"(c.metadata -> %(k{i})s) IN (SELECT jsonb_array_elements(%(f{i})s))"))
                params[f"k{i}"], params[f"f{i}"] = condition.field, Jsonb(with_numeric_twins(condition.values))

        # A restricted search is exact (the "+ 0" keeps the planner off the HNSW index, whose post-filtering
        # would drop matches outside its candidate list); a global one uses HNSW, and is redone exactly when it
        # comes back short: the HNSW candidates were mostly chunks of unpublished documents (a bulk upload).
        def query(exact: bool) -> sql.Composed:
            return sql.SQL(
                "WITH top AS (SELECT c.id, c.vector <=> %(q)s AS distance FROM {c} c JOIN {d} d ON d.doc_id = c.doc_id "
                "WHERE {w} ORDER BY {order} LIMIT %(k)s) " + select
            ).format(
                cols=_chunk_cols(),
                c=self._t(kb, "chunks"),
                d=self._t(kb, "docs"),
                w=sql.SQL(" AND ").join(clauses),
                order=sql.SQL("(c.vector <=> %(q)s) + 0" if exact else "c.vector <=> %(q)s"),
            )

        restricted = doc_ids is not None or bool(filters)
        with self._tx(kb) as conn:
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(40, top_k * 2))))
            out = []
            for q in np.asarray(queries, dtype=np.float32):
                rows = conn.execute(query(restricted), {**params, "q": q}).fetchall()
                if len(rows) < top_k and not restricted:
                    rows = conn.execute(query(True), {**params, "q": q}).fetchall()
                out.append(rows)
            return out

    def search_documents(self, kb: KnowledgeBase, queries: np.ndarray, *, top_k: int) -> list[list[tuple[str, float]]]:
        # Only READY rows have a vector (``put_documents``), so HNSW's candidates are never unpublished documents.
        query = sql.SQL(
            "SELECT doc_id, 1 - distance AS score FROM (SELECT doc_id, vector <=> %(q)s AS distance FROM {t} "
            "WHERE status = 'ready' ORDER BY vector <=> %(q)s LIMIT %(k)s) top ORDER BY distance"
        ).format(t=self._t(kb, "docs"))
        out = []
        with self._tx(kb) as conn:
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(40, top_k * 2))))
            for q in np.asarray(queries, dtype=np.float32):
                rows = conn.execute(query, {"q": q, "k": top_k}).fetchall()
                out.append([(r["doc_id"], float(r["score"])) for r in rows])
        return out

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self.pool.close()


def _scalar(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, params: Sequence[Any] = ()) -> Any:
    """The first column of a query's one row."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, "an aggregate or catalog lookup returns one row"
    return next(iter(row.values()))


def _as_array(value: Any) -> np.ndarray:
    """pgvector's adapter returns numpy arrays or Vector objects depending on its version."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)


def _doc_cols() -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, DOC_FIELDS))


def _doc_where(status: DocStatus | None, source: str | None) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    if status is not None:
        clauses.append(sql.SQL("status = %s"))
        params.append(str(status))
    if source is not None:
        clauses.append(sql.SQL("source = %s"))
        params.append(source)
    return sql.SQL(" AND ").join(clauses), params


def _lock_rerank_tables(conn: psycopg.Connection[Any], kb: KnowledgeBase) -> None:
    """Until the transaction ends: no other transaction creates or drops ``kb``'s rerank vector tables."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rr:{kb.key}",))


def _chunk_cols() -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("c.") + sql.Identifier(col) for col in CHUNK_COLUMNS)


def _scored_chunk(row: dict[str, Any]) -> ScoredChunk:
    chunk = _chunk(row)
    return ScoredChunk(chunk=chunk, score=float(row["score"]), source=chunk.metadata.get("source", ""))


def _chunk(row: dict[str, Any]) -> Chunk:
    return Chunk(
        id=row["id"],
        doc_id=row["doc_id"],
        ord=row["ord"],
        text=row["text"],
        hash=row["chunk_hash"],
        page=page_out(row["page"]),
        section=row["section"] or None,
        start=row["start_char"],
        end=row["end_char"],
        metadata=dict(row["metadata"] or {}),
    )
