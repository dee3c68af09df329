"""One contract, run unchanged against MilvusStore (Milvus Lite), PgvectorStore (real PostgreSQL) and MemoryStore
(the in-memory reference; unit-fast). A test of an optional capability skips a store that does not offer it."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest

from kb_service.core.errors import (
    DocumentNotFound,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
    ReindexInProgress,
    ReindexNotFound,
)
from kb_service.core.records import Chunk, DocStatus, Document, EmbeddingModelInfo, KnowledgeBase, text_hash
from kb_service.stores.base import (
    ChunkIdSearch,
    Reindexable,
    RerankVectorStore,
    Revisioned,
    StoredVectors,
    VectorStore,
    all_documents,
    seal,
)
from kb_service.stores.changes import Changes
from kb_service.stores.filters import Filter
from kb_service.stores.memory import MemoryStore
from kb_service.stores.milvus import MilvusStore
from kb_service.stores.pgvector import PgvectorStore

pytestmark = pytest.mark.integration
INFO = EmbeddingModelInfo(name="contract-model", dimension=384, fingerprint="f" * 16, max_tokens=256)
_names = itertools.count()


@pytest.fixture(params=["milvus", "pgvector", pytest.param("memory", marks=pytest.mark.unit)])
def store(request: pytest.FixtureRequest) -> VectorStore:
    if request.param == "memory":
        return MemoryStore()
    return request.getfixturevalue(f"{'milvus' if request.param == 'milvus' else 'pg'}_store")  # type: ignore[no-any-return]


@pytest.fixture
def kb(store: VectorStore) -> Iterator[KnowledgeBase]:
    knowledge_base = KnowledgeBase(name=f"契约 kb {next(_names)}", embedding=INFO)
    store.create_kb(knowledge_base)
    yield knowledge_base
    store.drop_kb(knowledge_base.name)


def needs(store: VectorStore, capability: type) -> None:
    if not isinstance(store, capability):
        pytest.skip(f"{type(store).__name__} does not offer the optional {capability.__name__}")


def _vec(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _doc(doc_id: str, source: str, dim: int, seed: int, status: DocStatus = DocStatus.PROCESSING) -> Document:
    return Document(
        id=doc_id,
        source=source,
        title=source.upper(),
        format="text",
        status=status,
        summary=f"summary of {source}",
        summary_vector=_vec(dim, seed),
        chunk_count=3,
    )


def _chunks(doc_id: str, dim: int, seed: int, n: int = 3, **meta: object) -> list[Chunk]:
    return [
        Chunk(
            id=f"{doc_id}:{i}",
            doc_id=doc_id,
            ord=i,
            text=f"{doc_id} text {i}",
            hash=text_hash(f"{doc_id}{i}"),
            page=i + 1,
            section="Intro",
            start=i * 10,
            end=i * 10 + 9,
            metadata={"source": doc_id, **meta},
            vector=_vec(dim, seed * 100 + i),
        )
        for i in range(n)
    ]


def _add(store: VectorStore, kb: KnowledgeBase, doc_id: str, seed: int, *, publish: bool = True, **meta: object):
    dim = kb.embedding.dimension
    doc = _doc(doc_id, f"{doc_id}.txt", dim, seed)
    store.put_documents(kb, [doc])
    chunks = _chunks(doc_id, dim, seed, **meta)
    store.add_chunks(kb, chunks)
    if publish:
        store.publish_documents(kb, [doc])
    return doc, chunks


def test_kb_lifecycle_with_unicode_names(store: VectorStore, kb: KnowledgeBase) -> None:
    assert store.get_kb(kb.name).embedding == kb.embedding
    assert kb.name in [k.name for k in store.list_kbs()]
    with pytest.raises(KnowledgeBaseExists, match="already exists"):
        store.create_kb(kb)
    with pytest.raises(KnowledgeBaseNotFound, match="does not exist"):
        store.get_kb("没有这个知识库")


def test_unpublished_documents_are_invisible(store: VectorStore, kb: KnowledgeBase) -> None:
    doc, chunks = _add(store, kb, "doc-a", 1, publish=False)
    query = chunks[0].vector[None, :]
    assert store.search_chunks(kb, query, top_k=5) == [[]]
    assert store.search_documents(kb, query, top_k=5) == [[]]
    assert store.count_chunks(kb, doc_id="doc-a") == 3
    store.publish_documents(kb, [doc])
    hits = store.search_chunks(kb, query, top_k=5)[0]
    assert [h.chunk.id for h in hits][0] == "doc-a:0"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(a.score >= b.score for a, b in pairwise(hits))
    first = hits[0].chunk
    assert (first.page, first.section, first.start, first.end, first.text) == (1, "Intro", 0, 9, "doc-a text 0")
    assert store.get_document(kb, "doc-a").status == DocStatus.READY


def test_search_restricted_to_documents_and_metadata(store: VectorStore, kb: KnowledgeBase) -> None:
    _add(store, kb, "doc-a", 1, lang="en")
    _, b_chunks = _add(store, kb, "doc-b", 2, lang="zh")
    query = b_chunks[0].vector[None, :]
    only_a = store.search_chunks(kb, query, top_k=10, doc_ids=["doc-a"])[0]
    assert {h.chunk.doc_id for h in only_a} == {"doc-a"} and len(only_a) == 3
    zh = store.search_chunks(kb, query, top_k=10, filters=Filter.parse({"lang": "zh"}))[0]
    assert {h.chunk.doc_id for h in zh} == {"doc-b"}
    both = store.search_chunks(kb, query, top_k=10, filters=Filter.parse({"lang": ["zh", "en"]}))[0]
    assert len(both) == 6
    docs = store.search_documents(kb, np.vstack([b_chunks[0].vector, b_chunks[1].vector]), top_k=2)
    assert len(docs) == 2 and {d for d, _ in docs[0]} == {"doc-a", "doc-b"}
    [ranked] = store.search_documents(kb, _vec(kb.embedding.dimension, 2)[None, :], top_k=5)  # doc-b's summary
    assert ranked[0][0] == "doc-b" and ranked[0][1] == pytest.approx(1.0, abs=1e-4)
    assert [d for d, _ in ranked] == ["doc-b", "doc-a"] and ranked[0][1] > ranked[1][1]


def test_chunk_id_search_ranks_like_the_full_search_and_get_chunks_reads_visible_chunks(
    store: VectorStore, kb: KnowledgeBase
) -> None:
    needs(store, ChunkIdSearch)
    _, a_chunks = _add(store, kb, "doc-a", 1, lang="en")
    _add(store, kb, "doc-b", 2, lang="zh")
    _, hidden = _add(store, kb, "doc-c", 3, publish=False)
    queries = np.vstack([a_chunks[0].vector, hidden[0].vector])
    for kwargs in ({}, {"doc_ids": ["doc-b"]}, {"filters": Filter.parse({"lang": "zh"})}):
        full = store.search_chunks(kb, queries, top_k=4, **kwargs)
        ids = store.search_chunk_ids(kb, queries, top_k=4, **kwargs)
        assert [len(pairs) for pairs in ids] == [3 if kwargs else 4] * 2  # doc-b alone has 3 chunks
        for hits, pairs in zip(full, ids, strict=True):
            assert [h.chunk.id for h in hits] == [cid for cid, _ in pairs]
            assert [h.score for h in hits] == pytest.approx([score for _, score in pairs], abs=1e-5)
        found = {cid for pairs in ids for cid, _ in pairs}
        assert not any(cid.startswith("doc-c:") for cid in found)  # unpublished, even for its own vector
        assert kwargs or found & {c.id for c in a_chunks}
    read = store.get_chunks(kb, ["doc-a:1", "doc-a:0", "doc-c:0", "nope", "doc-a:1"])
    expected = {c.id: replace(c, vector=None) for c in a_chunks[:2]}
    assert read == expected
    assert store.get_chunks(kb, []) == {}


def test_replace_is_atomic_and_leaves_no_old_chunks(store: VectorStore, kb: KnowledgeBase) -> None:
    _add(store, kb, "v1", 1)
    dim = kb.embedding.dimension
    new = _doc("v2", "v1.txt", dim, 2)
    store.put_documents(kb, [new])
    store.add_chunks(kb, _chunks("v2", dim, 2))
    store.publish_documents(kb, [new], replaces={"v2": "v1"})
    assert store.get_document(kb, "v1") is None
    assert store.count_chunks(kb, doc_id="v1") == 0
    assert store.count_chunks(kb) == 3
    assert [d.id for d in store.documents_by_source(kb, ["v1.txt"])] == ["v2"]


def test_delete_removes_every_chunk(store: VectorStore, kb: KnowledgeBase) -> None:
    _add(store, kb, "doc-a", 1)
    _add(store, kb, "doc-b", 2)
    store.delete_document(kb, "doc-a")
    assert store.count_chunks(kb, doc_id="doc-a") == 0
    assert store.count_chunks(kb) == 3
    assert store.count_documents(kb) == 1
    with pytest.raises(DocumentNotFound, match="doc-a"):
        store.delete_document(kb, "doc-a")


def test_vectors_for_hashes_and_listing(store: VectorStore, kb: KnowledgeBase) -> None:
    _, chunks = _add(store, kb, "doc-a", 1)
    _add(store, kb, "doc-b", 2, publish=False)
    if isinstance(store, StoredVectors):
        found = store.vectors_for_hashes(kb, [chunks[0].hash, "unknown"])
        assert list(found) == [chunks[0].hash]
        np.testing.assert_allclose(found[chunks[0].hash], chunks[0].vector, atol=1e-6)
    assert [d.id for d in store.list_documents(kb)] == ["doc-a", "doc-b"]
    assert [d.id for d in store.list_documents(kb, status=DocStatus.READY)] == ["doc-a"]
    assert store.count_documents(kb, status=DocStatus.PROCESSING) == 1
    assert [d.id for d in store.list_documents(kb, offset=1, limit=5)] == ["doc-b"]
    assert set(store.get_documents(kb, ["doc-a", "doc-b", "nope"])) == {"doc-a", "doc-b"}


def test_more_unpublished_documents_than_a_query_page(store: VectorStore) -> None:
    """A bulk upload leaves more documents unpublished than one store query returns (Milvus: 10,000 rows): none of
    them is searchable, and listing pages through all of them in order, each once."""
    many = 10_050
    info = replace(INFO, dimension=8)
    kb = KnowledgeBase(name=f"bulk {next(_names)}", embedding=info)
    store.create_kb(kb)
    try:
        # Sources run against the ids, so the listing order (source, id) is not the ids' order.
        pending = [_doc(f"d{i:05d}", f"s{many - i:05d}.txt", 8, i) for i in range(many)]
        for i in range(0, many, 2_000):
            store.put_documents(kb, pending[i : i + 2_000])
            store.add_chunks(kb, [c for j, d in enumerate(pending) if i <= j < i + 2_000 for c in _chunks(d.id, 8, j)])
        ready, ready_chunks = _add(store, kb, "ready", 7)
        seal(store, kb)
        # The index must still find the few visible rows among the many it has to pass over.
        query = np.stack([ready_chunks[0].vector, pending[-1].summary_vector])
        for hits in store.search_chunks(kb, query, top_k=50):
            assert {h.chunk.id for h in hits} == {c.id for c in ready_chunks}
        assert [d for d, _ in store.search_documents(kb, query, top_k=5)[0]] == ["ready"]
        assert {c.doc_id for batch in store.iter_chunks(kb) for c in batch} == {"ready"}
        assert store.get_chunks(kb, ["d00000:0", f"d{many - 1:05d}:0", "ready:0"]).keys() == {"ready:0"}

        expected = [d.id for d in sorted([*pending, ready], key=lambda d: (d.source, d.id))]
        assert [d.id for d in store.list_documents(kb, offset=10_000, limit=100)] == expected[10_000:10_100]
        assert [d.id for d in store.list_documents(kb, status=DocStatus.READY)] == ["ready"]
        batches = list(store.iter_documents(kb, batch_size=3_000))
        assert max(map(len, batches)) <= 3_000
        assert sorted(d.id for b in batches for d in b) == sorted(expected)  # each once
        assert all(d.summary_vector is None for b in batches for d in b)
        assert [d.id for d in all_documents(store, kb, page=4_000)] == expected
        assert [d.id for d in all_documents(store, kb, status=DocStatus.READY)] == ["ready"]
    finally:
        store.drop_kb(kb.name)


def test_drop_removes_the_knowledge_base(store: VectorStore) -> None:
    kb = KnowledgeBase(name="to drop ..é", embedding=INFO)
    store.create_kb(kb)
    _add(store, kb, "doc-a", 1)
    store.drop_kb(kb.name)
    with pytest.raises(KnowledgeBaseNotFound):
        store.get_kb(kb.name)
    store.create_kb(kb)  # the name is free again, with empty collections
    assert store.count_chunks(kb) == 0
    store.drop_kb(kb.name)


def test_changes_since_a_revision(store: VectorStore, kb: KnowledgeBase) -> None:
    needs(store, Revisioned)
    start = store.kb_revision(kb)
    _add(store, kb, "doc-a", 1)
    after_a = store.kb_revision(kb)
    assert store.changes_since(kb, start) == Changes(after_a, frozenset({"doc-a"}), frozenset())
    new = _doc("doc-b", "doc-a.txt", kb.embedding.dimension, 2)  # a new version of doc-a
    store.put_documents(kb, [new])
    store.add_chunks(kb, _chunks("doc-b", kb.embedding.dimension, 2))
    store.publish_documents(kb, [new], replaces={"doc-b": "doc-a"})
    _add(store, kb, "doc-c", 3)
    store.delete_document(kb, "doc-c")
    now = store.kb_revision(kb)
    assert store.changes_since(kb, after_a) == Changes(now, frozenset({"doc-b"}), frozenset({"doc-a", "doc-c"}))
    assert store.changes_since(kb, start) == Changes(now, frozenset({"doc-b"}), frozenset({"doc-a", "doc-c"}))
    assert store.changes_since(kb, now) == Changes(now, frozenset(), frozenset())
    assert store.changes_since(kb, "not a revision of it") is None


def test_iter_chunks_revision_and_seal(store: VectorStore, kb: KnowledgeBase) -> None:
    needs(store, Revisioned)
    start = store.kb_revision(kb)
    _add(store, kb, "doc-a", 1)
    after_publish = store.kb_revision(kb)
    assert after_publish != start
    _add(store, kb, "doc-b", 2, publish=False)  # unpublished: invisible, and the revision does not move
    assert store.kb_revision(kb) == after_publish
    batches = list(store.iter_chunks(kb, batch_size=2))
    assert [len(b) for b in batches] == [2, 1]
    chunks = [c for b in batches for c in b]
    assert sorted(c.id for c in chunks) == ["doc-a:0", "doc-a:1", "doc-a:2"]
    assert all(c.vector is None and c.text.startswith("doc-a text") and c.page for c in chunks)
    seal(store, kb)
    assert store.search_chunks(kb, _vec(kb.embedding.dimension, 100)[None, :], top_k=1)[0][0].chunk.id == "doc-a:0"
    store.delete_document(kb, "doc-a")
    assert store.kb_revision(kb) != after_publish
    assert [c for b in store.iter_chunks(kb) for c in b] == []


def _another_store(store: VectorStore) -> VectorStore:
    """A second store object on the same data (Milvus Lite: the same file, served by the same child)."""
    if isinstance(store, MilvusStore):
        return MilvusStore(store.uri)
    assert isinstance(store, PgvectorStore)
    return PgvectorStore(store.dsn)


def test_a_second_store_on_the_same_data_sees_each_write_at_once(store: VectorStore, kb: KnowledgeBase) -> None:
    """What a store remembers between searches (Milvus Lite: the hidden documents, the revision) never outlives a
    write through another store object."""
    if isinstance(store, MemoryStore):
        pytest.skip("MemoryStore holds its data in one object: there is no second store on the same data")
    reader = _another_store(store)
    try:
        doc, chunks = _add(store, kb, "doc-a", 1, publish=False)
        query = chunks[0].vector[None, :]
        revision = reader.kb_revision(kb)
        assert reader.search_chunks(kb, query, top_k=5) == [[]]
        store.publish_documents(kb, [doc])
        assert [h.chunk.id for h in reader.search_chunks(kb, query, top_k=5)[0]][0] == "doc-a:0"
        assert reader.kb_revision(kb) != revision
        revision = reader.kb_revision(kb)
        store.delete_document(kb, "doc-a")
        assert reader.search_chunks(kb, query, top_k=5) == [[]] and reader.kb_revision(kb) != revision
        _add(store, kb, "doc-b", 2)
        store.drop_kb(kb.name)
        with pytest.raises(KnowledgeBaseNotFound):
            reader.kb_revision(kb)
        store.create_kb(kb)  # the same name again: nothing of the dropped one shows
        _add(store, kb, "doc-c", 3, publish=False)
        assert reader.search_chunks(kb, query, top_k=5) == [[]]
        assert reader.kb_revision(kb) == ""
    finally:
        reader.close()


def test_rerank_vectors_live_and_die_with_their_chunks(store: VectorStore, kb: KnowledgeBase) -> None:
    needs(store, RerankVectorStore)
    _, a = _add(store, kb, "doc-a", 1)
    _, b = _add(store, kb, "doc-b", 2)
    assert store.rerank_vectors(kb, "e5small", [c.id for c in a]) == {}  # nothing stored in that space yet
    assert store.rerank_vector_ids(kb, "e5small", [c.id for c in a]) == set()
    second = np.stack([_vec(16, 500 + i) for i in range(6)])  # another model: its own dimension
    store.put_rerank_vectors(kb, "e5small", [*a, *b], second)
    store.put_rerank_vectors(kb, "e5small", a[:1], second[1:2])  # overwrites
    found = store.rerank_vectors(kb, "e5small", [a[0].id, b[2].id, "doc-z:0"])
    assert set(found) == {a[0].id, b[2].id}
    assert store.rerank_vector_ids(kb, "e5small", [a[0].id, b[2].id, "doc-z:0"]) == {a[0].id, b[2].id}
    np.testing.assert_allclose(found[a[0].id], second[1], atol=1e-6)
    np.testing.assert_allclose(found[b[2].id], second[5], atol=1e-6)
    assert store.rerank_vectors(kb, "othermodel", [a[0].id]) == {}
    assert store.rerank_vector_ids(kb, "othermodel", [a[0].id]) == set()

    store.delete_document(kb, "doc-a")
    assert set(store.rerank_vectors(kb, "e5small", [c.id for c in [*a, *b]])) == {c.id for c in b}
    assert store.rerank_vector_ids(kb, "e5small", [c.id for c in [*a, *b]]) == {c.id for c in b}
    # A document replaced by a new version takes its vectors along.
    dim = kb.embedding.dimension
    new = _doc("doc-b2", "doc-b.txt", dim, 3)
    store.put_documents(kb, [new])
    store.add_chunks(kb, _chunks("doc-b2", dim, 3))
    store.publish_documents(kb, [new], replaces={"doc-b2": "doc-b"})
    assert store.rerank_vectors(kb, "e5small", [c.id for c in b]) == {}
    # Vectors for chunks that are gone are skipped, not stored.
    store.put_rerank_vectors(kb, "e5small", a, second[:3])
    assert store.rerank_vectors(kb, "e5small", [c.id for c in a]) == {}
    with pytest.raises(ValueError, match="lowercase letters or digits"):
        store.rerank_vectors(kb, "x; DROP TABLE", [])
    with pytest.raises(ValueError, match="lowercase letters or digits"):
        store.rerank_vector_ids(kb, "x; DROP TABLE", [])


def test_drop_removes_rerank_vectors(store: VectorStore) -> None:
    needs(store, RerankVectorStore)
    kb = KnowledgeBase(name="rerank drop", embedding=INFO)
    store.create_kb(kb)
    _, chunks = _add(store, kb, "doc-a", 1)
    store.put_rerank_vectors(kb, "e5small", chunks, np.stack([_vec(16, i) for i in range(3)]))
    store.drop_kb(kb.name)
    store.create_kb(kb)
    _add(store, kb, "doc-a", 1)
    assert store.rerank_vectors(kb, "e5small", [c.id for c in chunks]) == {}
    with pytest.raises(KnowledgeBaseNotFound):
        store.put_rerank_vectors(
            KnowledgeBase(name="never created", embedding=INFO), "e5small", chunks[:1], chunks[0].vector[None]
        )
    store.drop_kb(kb.name)


def test_rerank_vectors_written_while_the_kb_is_dropped_leave_nothing(store: VectorStore) -> None:
    needs(store, RerankVectorStore)
    kb = KnowledgeBase(name="rerank race", embedding=INFO)
    second = np.stack([_vec(16, i) for i in range(3)])
    for attempt in range(4):
        store.create_kb(kb)
        _, chunks = _add(store, kb, "doc-a", 1)
        errors: list[BaseException] = []

        def write(chunks: list[Chunk] = chunks, errors: list[BaseException] = errors) -> None:
            try:
                for _ in range(50):
                    store.put_rerank_vectors(kb, "race", chunks, second)
            except KnowledgeBaseNotFound:
                return
            except BaseException as exc:  # anything else is a bug
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.02 * attempt)
        store.drop_kb(kb.name)
        writer.join()
        assert errors == []
        store.create_kb(kb)  # the same name and chunk ids again: no vector may survive the drop
        _add(store, kb, "doc-a", 1)
        assert store.rerank_vectors(kb, "race", [c.id for c in chunks]) == {}
        store.drop_kb(kb.name)


FILTERS = [
    {"lang": "zh"},
    {"lang": ["zh", "en"]},
    {"lang": "de"},
    {"level": 2},
    {"level": [1, 3.5]},
    {"flag": True},
    {"flag": False},
    {"level": True},  # a boolean equals the number it stands for
    {"flag": [0, "x"]},
    {"level": "2"},  # a string never equals a number
    {"flag": 1},
    {"doc_id": "doc-b", "lang": "zh"},
    {"page": [1, 3]},
    {"section": "Intro", "lang": "en"},
    {"missing": "x"},
    {"source": ["doc-c", "doc-a"], "page": 2},
]


def test_filters_translate_to_the_reference_semantics(store: VectorStore, kb: KnowledgeBase) -> None:
    """Each backend's translation of the filter grammar finds exactly the chunks ``Filter.matches`` accepts."""
    everything = []
    for i, meta in enumerate(
        [
            {"lang": "en", "level": 1, "flag": True},
            {"lang": "zh", "level": 2, "flag": False},
            {"lang": "en", "level": 3.5},
        ]
    ):
        _, chunks = _add(store, kb, f"doc-{'abc'[i]}", i + 1, **meta)
        everything += chunks
    query = everything[0].vector[None, :]
    for raw in FILTERS:
        where = Filter.parse(raw)
        expected = {c.id for c in everything if where is not None and where.matches(c)}
        found = {h.chunk.id for h in store.search_chunks(kb, query, top_k=50, filters=where)[0]}
        assert found == expected, raw
        if isinstance(store, ChunkIdSearch):
            ids = {chunk_id for chunk_id, _ in store.search_chunk_ids(kb, query, top_k=50, filters=where)[0]}
            assert ids == expected, raw


def test_a_document_deleted_during_its_ingest_stays_deleted(store: VectorStore, kb: KnowledgeBase) -> None:
    """The delete wins whichever step of the ingest it lands between: chunks written after it are not kept, the
    publish does not bring the row back, and what the new version would have replaced stays."""
    dim = kb.embedding.dimension
    _add(store, kb, "old", 1)
    for when in ("before chunks", "before publish"):
        doc = _doc("new", "old.txt", dim, 2)
        store.put_documents(kb, [doc])
        if when == "before publish":
            store.add_chunks(kb, _chunks("new", dim, 2))
        store.delete_document(kb, "new")
        if when == "before chunks":
            store.add_chunks(kb, _chunks("new", dim, 2))
        assert store.publish_documents(kb, [doc], replaces={"new": "old"}) == []
        assert store.get_document(kb, "new") is None
        assert store.count_chunks(kb, doc_id="new") == 0
        assert store.get_document(kb, "old") is not None and store.count_chunks(kb, doc_id="old") == 3
    other = _doc("other", "other.txt", dim, 3)
    store.put_documents(kb, [other])
    store.add_chunks(kb, _chunks("other", dim, 3))
    assert store.publish_documents(kb, [other]) == ["other"]


def test_writes_to_a_dropped_kb_never_reach_its_successor(store: VectorStore) -> None:
    """A knowledge base has an identity beyond its name: one dropped and created again is another one."""
    name = f"successor {next(_names)}"
    old = KnowledgeBase(name=name, embedding=INFO)
    store.create_kb(old)
    doc = _doc("doc-a", "a.txt", INFO.dimension, 1)
    store.put_documents(old, [doc])
    store.drop_kb(name)
    new = KnowledgeBase(name=name, embedding=INFO)
    store.create_kb(new)
    assert new.uid != old.uid and store.get_kb(name).uid == new.uid
    writes = [
        lambda: store.put_documents(old, [doc]),
        lambda: store.add_chunks(old, _chunks("doc-a", INFO.dimension, 1)),
        lambda: store.publish_documents(old, [doc]),
        lambda: store.delete_document(old, "doc-a"),
        lambda: store.get_documents(old, ["doc-a"]),
    ]
    if isinstance(store, Revisioned):
        writes.append(lambda: store.kb_revision(old))
    for write in writes:
        with pytest.raises(KnowledgeBaseNotFound):
            write()
    assert store.count_documents(new) == 0 and store.count_chunks(new) == 0
    store.drop_kb(name)


def test_ids_with_quotes_and_backslashes(store: VectorStore, kb: KnowledgeBase) -> None:
    """Ids come from URLs: quotes and backslashes in them must not break the store's expressions."""
    for doc_id in ["it's", 'say "hi"', "back\\slash", "\\'", "a\\\\'b", "\x14\u00c3", "new\nline", "cr\rlf", "\x7f"]:
        assert store.get_document(kb, doc_id) is None
        with pytest.raises(DocumentNotFound):
            store.delete_document(kb, doc_id)
        assert store.get_chunks(kb, [doc_id + ":0"]) == {}
    for doc_id in ["it's \\ here", 'a "quoted"\nline\x14']:
        _add(store, kb, doc_id, 1)
        assert store.get_document(kb, doc_id) is not None and store.count_chunks(kb, doc_id=doc_id) == 3
        store.delete_document(kb, doc_id)
    assert store.count_chunks(kb) == 0


def test_ready_doc_ids(store: VectorStore, kb: KnowledgeBase) -> None:
    _add(store, kb, "doc-a", 1)
    _add(store, kb, "doc-b", 2, publish=False)
    assert store.ready_doc_ids(kb, ["doc-a", "doc-b", "nope", "it's\n"]) == {"doc-a"}
    store.delete_document(kb, "doc-a")
    assert store.ready_doc_ids(kb, ["doc-a"]) == set() and store.ready_doc_ids(kb, []) == set()


SMALL = EmbeddingModelInfo(name="other-model", dimension=16, fingerprint="e" * 16, max_tokens=512)


def test_reindex_builds_beside_the_serving_index_and_switches_in_one_step(
    store: VectorStore, kb: KnowledgeBase
) -> None:
    needs(store, Reindexable)
    assert isinstance(store, Reindexable)
    _add(store, kb, "doc-a", 1)
    assert store.reindex_of(kb) is None
    shadow = replace(kb, embedding=SMALL, index="n1")
    assert shadow.key != kb.key and shadow.home_key == kb.home_key
    store.begin_reindex(kb, shadow, {"embedding_model": "other-model"})
    with pytest.raises(ReindexInProgress):
        store.begin_reindex(kb, replace(kb, embedding=SMALL, index="n2"), {})
    recorded = store.reindex_of(kb)
    assert (
        recorded is not None
        and recorded.kb.same_index(shadow)
        and recorded.params == {"embedding_model": "other-model"}
    )
    assert recorded.kb.embedding == SMALL
    # The shadow is written and searched like any index, with its own dimension; the serving one is untouched.
    _add(store, shadow, "doc-a", 1)
    assert [h.chunk.doc_id for h in store.search_chunks(shadow, _vec(16, 100)[None], top_k=1)[0]] == ["doc-a"]
    assert store.get_kb(kb.name).same_index(kb) and [k.name for k in store.list_kbs()].count(kb.name) == 1
    assert store.count_chunks(kb) == 3 and store.search_chunks(kb, _vec(384, 100)[None], top_k=1)[0]
    if isinstance(store, Revisioned):
        before = store.kb_revision(kb)
        store.delete_document(shadow, "doc-a")
        assert store.kb_revision(kb) == before  # the shadow's writes move its own revision only
        _add(store, shadow, "doc-a", 1)

    revision = store.kb_revision(kb)
    _add(store, kb, "doc-c", 3)  # published after the re-index read the revision: no switch yet
    assert store.switch_index(kb, revision) is None and store.get_kb(kb.name).same_index(kb)
    new = store.switch_index(kb, store.kb_revision(kb))
    assert new is not None
    assert new.same_index(shadow) and new.embedding == SMALL and store.get_kb(kb.name).same_index(shadow)
    assert store.reindex_of(new) is None
    with pytest.raises(ReindexNotFound):
        store.switch_index(new, store.kb_revision(new))
    with pytest.raises(KnowledgeBaseNotFound):  # a switch from an index that no longer serves
        store.switch_index(kb, revision)
    # The retired index still answers searches (those that started on it), but takes no writes.
    assert [k.same_index(kb) for k in store.retired_indexes(new)] == [True]
    assert store.search_chunks(kb, _vec(384, 100)[None], top_k=1)[0]
    if isinstance(store, Revisioned):
        store.kb_revision(kb)
    for write in (
        lambda: store.publish_documents(kb, [_doc("doc-b", "b.txt", 384, 2)]),
        lambda: store.delete_document(kb, "doc-a"),
    ):
        with pytest.raises(KnowledgeBaseNotFound):
            write()
    store.discard_index(new, kb)
    assert store.retired_indexes(new) == []
    with pytest.raises(KnowledgeBaseNotFound):
        store.search_chunks(kb, _vec(384, 100)[None], top_k=1)
    assert store.count_chunks(new) == 3 and store.get_document(new, "doc-a") is not None


def test_a_discarded_reindex_leaves_the_knowledge_base_as_it_was(store: VectorStore, kb: KnowledgeBase) -> None:
    needs(store, Reindexable)
    assert isinstance(store, Reindexable)
    _add(store, kb, "doc-a", 1)
    shadow = replace(kb, embedding=SMALL, index="n1")
    store.begin_reindex(kb, shadow, {})
    _add(store, shadow, "doc-a", 1)
    store.discard_index(kb, shadow)
    assert store.reindex_of(kb) is None and store.get_kb(kb.name).same_index(kb)
    assert store.count_chunks(kb) == 3
    with pytest.raises(KnowledgeBaseNotFound):
        store.count_chunks(shadow)
    # Dropping a knowledge base during a re-index removes both indexes.
    again = replace(kb, embedding=SMALL, index="n2")
    store.begin_reindex(kb, again, {})
    _add(store, again, "doc-a", 1)
    store.drop_kb(kb.name)
    with pytest.raises(KnowledgeBaseNotFound):
        store.count_chunks(again)
    store.create_kb(kb)  # for the fixture's drop
