"""Milvus Lite with ``stores.milvus_lite_speedups`` returns what the engine's own code returns, on a collection
whose keys live in several segments and the memtable, with tombstones flushed and not yet flushed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from kb_service.stores import milvus_lite_speedups
from kb_service.stores.milvus import MilvusStore

pytestmark = pytest.mark.integration
NAME = "rows"
DIM = 8


@pytest.fixture
def client(tmp_path: Path) -> Iterator[MilvusClient]:
    store = MilvusStore(str(tmp_path / "milvus.db"), lite_process=False)  # the engine runs in this process
    try:
        import milvus_lite

        # An upgrade must not drop the speed-up with CI green: check the patch against the new engine, then add it.
        assert milvus_lite_speedups.installed(), (
            f"Milvus Lite {milvus_lite.__version__} is installed, the speedups support {milvus_lite_speedups.SUPPORTED}"
            " (pyproject.toml pins the version they are tested against)"
        )
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=16)
        schema.add_field("doc", DataType.INT64)
        schema.add_field("version", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        index = store.client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 8, "efConstruction": 64})
        index.add_index("doc", index_type="INVERTED")
        store.client.create_collection(NAME, schema=schema, index_params=index, consistency_level="Strong")
        yield store.client
    finally:
        store.close()


@pytest.fixture
def masks_made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | None]]:
    """(sources, dead rows) of every live-mask computation of ours; dead rows None where it left it to the engine."""
    made: list[tuple[int, int | None]] = []
    real = milvus_lite_speedups.live_masks

    def spy(sources: Any, *args: Any, **kwargs: Any) -> Any:
        masks = real(sources, *args, **kwargs)
        made.append((len(sources), None if masks is None else sum(int((~m).sum()) for m in masks)))
        return masks

    monkeypatch.setattr(milvus_lite_speedups, "live_masks", spy)
    return made


def rows(keys: range | list[int], version: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    return [
        {"pk": f"p{k:04d}", "doc": k % 7, "version": version, "vector": rng.normal(size=DIM).tolist()} for k in keys
    ]


def observe(client: MilvusClient, queries: np.ndarray) -> list[Any]:
    """Everything a reader sees: searches with and without a filter, queries, counts and gets."""
    out: list[Any] = []
    for q in queries:
        for expr in ("", "doc in [1, 3, 5]", "version >= 1"):
            hits = client.search(NAME, data=[q.tolist()], limit=25, filter=expr, output_fields=["doc", "version"])
            out.append([(h["pk"], round(h["distance"], 5), *_doc_version(h["entity"])) for h in hits[0]])
        # Records read with and without the vector column, and with every field.
        for fields in (["vector", "doc"], ["*"], None):
            hits = client.search(NAME, data=[q.tolist()], limit=5, filter="version >= 1", output_fields=fields)
            out.append([(h["pk"], _rounded(h["entity"])) for h in hits[0]])
    for expr in ("doc in [0, 2]", 'pk != ""'):
        found = client.query(NAME, filter=expr, output_fields=["pk", "doc", "version"], limit=16_384)
        out.append(sorted((r["pk"], r["doc"], r["version"]) for r in found))
    # Vectors read back, a window of the matches, and a query iterator's pages (ordered by key).
    with_vectors = client.query(NAME, filter="doc == 4", output_fields=["pk", "vector"], limit=16_384)
    out.append(sorted((r["pk"], tuple(round(x, 5) for x in r["vector"])) for r in with_vectors))
    out.append([r["pk"] for r in client.query(NAME, filter="doc >= 2", output_fields=["doc"], offset=7, limit=11)])
    pages = client.query_iterator(NAME, batch_size=64, filter="version <= 2", output_fields=["doc", "version"])
    try:
        while page := pages.next():
            out.append([(r["pk"], r["doc"], r["version"]) for r in page])
    finally:
        pages.close()
    out.append(client.query(NAME, filter='pk != ""', output_fields=["count(*)"])[0]["count(*)"])
    got = client.get(NAME, ids=[f"p{k:04d}" for k in range(0, 460, 3)], output_fields=["version"])
    out.append(sorted((r["pk"], r["version"]) for r in got))
    return out


def _rounded(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: [round(x, 5) for x in v] if k == "vector" else v for k, v in entity.items()}


def _doc_version(entity: dict[str, Any]) -> tuple[int, int]:
    return entity["doc"], entity["version"]


def same_as_engine(client: MilvusClient, queries: np.ndarray) -> list[Any]:
    ours = observe(client, queries)
    with milvus_lite_speedups.disabled():
        engine = observe(client, queries)
    assert ours == engine
    return ours


def test_results_equal_the_engines_through_upserts_deletes_and_flushes(
    client: MilvusClient, masks_made: list[tuple[int, int | None]]
) -> None:
    rng = np.random.default_rng(7)
    queries = rng.normal(size=(6, DIM))

    client.insert(NAME, rows(range(200), 0, rng))
    client.flush(NAME)  # segment 1
    same_as_engine(client, queries)

    client.insert(NAME, rows(range(200, 400), 0, rng))
    client.upsert(NAME, rows(range(0, 120, 2), 1, rng))  # newer versions of segment 1's keys
    client.flush(NAME)  # segment 2
    seen = same_as_engine(client, queries)
    versions = dict(seen[-1])
    assert versions["p0000"] == 1 and versions["p0003"] == 0  # an upserted key reads its newest row, once

    client.delete(NAME, ids=[f"p{k:04d}" for k in (*range(1, 60, 4), *range(0, 40, 8), *range(300, 310))])
    client.flush(NAME)  # tombstones in the delta index
    seen = same_as_engine(client, queries)
    assert seen[-2] == 400 - 15 - 5 - 10

    # Left in the memtable: new keys, newer versions of flushed keys, deletes of flushed keys, a delete of a new key,
    # and deleted keys written again.
    client.insert(NAME, rows(range(400, 460), 0, rng))
    client.upsert(NAME, rows(range(200, 240, 2), 2, rng))
    client.delete(NAME, ids=[f"p{k:04d}" for k in (*range(100, 130, 2), 401)])
    client.upsert(NAME, rows([1, 5, 300], 3, rng))
    seen = same_as_engine(client, queries)
    versions = dict(seen[-1])
    assert "p0102" not in versions and versions["p0300"] == 3 and versions["p0201"] == 0
    assert seen[-2] == 400 - 30 + 60 - 16 + 3

    client.flush(NAME)
    same_as_engine(client, queries)
    # Our masks did the work (none was handed back to the engine), over several sources with dead rows among them.
    assert masks_made and all(dead is not None for _, dead in masks_made)
    assert max(sources for sources, _ in masks_made) >= 3 and max(dead for _, dead in masks_made) > 0  # type: ignore


def test_only_the_versions_it_was_written_for_are_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    import milvus_lite

    monkeypatch.setattr(milvus_lite_speedups, "_installed", False)
    monkeypatch.setattr(milvus_lite, "__version__", "9.0.0")
    assert milvus_lite_speedups.install() is False and not milvus_lite_speedups.installed()


def test_keys_shared_by_two_segments_are_remembered_while_both_live() -> None:
    """Flushed segments never change: the keys two share are computed once, and forgotten when one is gone."""
    a_keys, b_keys = {"x": 0, "y": 1}, {"y": 0, "z": 1}
    a_seqs, b_seqs = np.array([1, 2], dtype=np.uint64), np.array([3, 4], dtype=np.uint64)
    first = milvus_lite_speedups._shared_segment_keys(a_seqs, a_keys, b_seqs, b_keys)
    assert first == {"y"}
    b_keys["x"] = 2  # not something a segment does; shows that the pair's answer is reused
    assert milvus_lite_speedups._shared_segment_keys(a_seqs, a_keys, b_seqs, b_keys) is first
    entry = (id(a_seqs), id(b_seqs))
    assert entry in milvus_lite_speedups._shared_keys
    del b_seqs  # the segment (here its sequence numbers) is gone
    assert entry not in milvus_lite_speedups._shared_keys


def test_a_flush_returns_once_the_background_index_builds_it_started_are_done(
    client: MilvusClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until a flushed segment's index is built the engine searches it by brute force: a flush (``seal``) waits for
    the compaction and index builds it starts in the background."""
    import milvus_lite.engine.collection as collection

    finished: list[float] = []
    real = collection.Collection._bg_compact_and_index

    def slow_background_work(self: Any) -> None:
        time.sleep(0.5)
        real(self)
        finished.append(time.monotonic())

    monkeypatch.setattr(collection.Collection, "_bg_compact_and_index", slow_background_work)
    client.insert(NAME, rows(range(300), 0, np.random.default_rng(3)))
    client.flush(NAME)
    returned = time.monotonic()
    assert finished and finished[-1] <= returned
    assert client.search(NAME, data=[[1.0] * DIM], limit=3)[0]  # and the collection serves searches
