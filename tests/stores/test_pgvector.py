"""PgvectorStore specifics: vectors kept in the row, searched exactly until a table is large enough, then an HNSW
index built in one go by ``seal``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.sentence import SentenceTransformerEmbedder
from kb_service.stores.pgvector import PgvectorStore
from tests.stores.test_contract import _add, _chunks, _doc, _vec

pytestmark = pytest.mark.integration


@pytest.fixture
def small_store(pg_dsn: str) -> Iterator[PgvectorStore]:
    store = PgvectorStore(pg_dsn, hnsw_min_rows=6)
    yield store
    store.close()


@pytest.fixture
def pg_kb(small_store: PgvectorStore, embedder: SentenceTransformerEmbedder) -> Iterator[KnowledgeBase]:
    kb = KnowledgeBase(name="hnsw threshold", embedding=embedder.info)
    small_store.create_kb(kb)
    yield kb
    small_store.drop_kb(kb.name)


def _has_vector_index(store: PgvectorStore, kb: KnowledgeBase, table: str) -> bool:
    with store.pool.connection() as conn:
        row = conn.execute("SELECT to_regclass(%s) AS i", (f"kb_{kb.key}_{table}_vector_idx",)).fetchone()
    return row["i"] is not None  # type: ignore[index]


def test_hnsw_index_is_built_by_seal_once_a_table_is_large_enough(
    small_store: PgvectorStore, pg_kb: KnowledgeBase
) -> None:
    dim = pg_kb.embedding.dimension
    _add(small_store, pg_kb, "doc-a", 1)
    small_store.seal(pg_kb)
    assert not _has_vector_index(small_store, pg_kb, "chunks")  # 3 rows: searched exactly
    query = _vec(dim, 100)[None, :]
    assert small_store.search_chunks(pg_kb, query, top_k=1)[0][0].chunk.id == "doc-a:0"

    added = [_add(small_store, pg_kb, doc_id, seed)[1] for doc_id, seed in (("doc-b", 2), ("doc-c", 3))]
    small_store.seal(pg_kb)
    assert _has_vector_index(small_store, pg_kb, "chunks")  # 9 rows
    assert not _has_vector_index(small_store, pg_kb, "docs")  # 3 rows
    small_store.seal(pg_kb)  # idempotent
    # The index serves the same nearest neighbours as the exact order.
    chunks = [c for batch in added for c in batch]
    best = max(chunks, key=lambda c: float(np.dot(c.vector, _vec(dim, 201))))  # type: ignore[arg-type]
    hits = small_store.search_chunks(pg_kb, _vec(dim, 201)[None, :], top_k=3)[0]
    assert hits[0].chunk.id == best.id
    assert hits[0].score == pytest.approx(float(np.dot(best.vector, _vec(dim, 201))), abs=1e-5)  # type: ignore[arg-type]


def test_vectors_stay_in_the_row_and_unpublished_documents_have_none(
    small_store: PgvectorStore, pg_kb: KnowledgeBase
) -> None:
    with small_store.pool.connection() as conn:
        storage = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'vector'",
            (f"kb_{pg_kb.key}_chunks",),
        ).fetchone()
    assert storage["attstorage"] == "m"  # type: ignore[index]
    doc = _doc("doc-p", "p.txt", pg_kb.embedding.dimension, 7)

    def stored_vector() -> object:
        with small_store.pool.connection() as conn:
            row = conn.execute(f"SELECT vector FROM kb_{pg_kb.key}_docs WHERE doc_id = 'doc-p'").fetchone()
        return row["vector"]  # type: ignore[index]

    small_store.put_documents(pg_kb, [doc])
    assert stored_vector() is None  # written (and indexed) once, when published
    small_store.publish_documents(pg_kb, [doc])
    assert np.allclose(stored_vector().to_numpy(), doc.summary_vector, atol=1e-6)  # type: ignore[attr-defined]


def test_a_global_search_past_unpublished_neighbours_is_not_short(
    small_store: PgvectorStore, pg_kb: KnowledgeBase
) -> None:
    """HNSW hands back ``ef_search`` candidates and the join drops those of unpublished documents: when a bulk upload
    sits nearest the query, a global search would come back short (or empty). It is redone exactly then."""
    dim = pg_kb.embedding.dimension
    _, ready = _add(small_store, pg_kb, "doc-a", 1)
    _add(small_store, pg_kb, "doc-b", 2)
    small_store.seal(pg_kb)
    assert _has_vector_index(small_store, pg_kb, "chunks")
    query = _vec(dim, 300)
    rng = np.random.default_rng(0)
    for i in range(10):  # 300 chunks about the query, none published
        doc = _doc(f"bulk-{i}", f"bulk-{i}.txt", dim, 1_000 + i)
        small_store.put_documents(pg_kb, [doc])
        chunks = _chunks(doc.id, dim, 1_000 + i, n=30)
        for c in chunks:
            v = query + 0.05 * rng.standard_normal(dim).astype(np.float32)
            c.vector = v / np.linalg.norm(v)
        small_store.add_chunks(pg_kb, chunks)
    with small_store.pool.connection() as conn:  # as autovacuum will: the planner then takes the HNSW index
        conn.execute(f"ANALYZE kb_{pg_kb.key}_chunks")
        conn.execute(f"ANALYZE kb_{pg_kb.key}_docs")
    hits = small_store.search_chunks(pg_kb, query[None, :], top_k=4)[0]
    assert len(hits) == 4 and {h.chunk.doc_id for h in hits} <= {"doc-a", "doc-b"}
    assert [i for i, _ in small_store.search_chunk_ids(pg_kb, query[None, :], top_k=4)[0]] == [h.chunk.id for h in hits]
    assert ready[0].id in {h.chunk.id for h in small_store.search_chunks(pg_kb, query[None, :], top_k=6)[0]}
