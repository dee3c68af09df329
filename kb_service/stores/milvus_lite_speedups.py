"""Milvus Lite 3.2.2's searches and queries without their walk over every row in Python.

Before each search or query, Milvus Lite decides which rows are live: the newest version of their primary key, and
not deleted. Its code (``milvus_lite.search.executor_indexed`` and ``milvus_lite.search.bitmap``) does it with a
Python loop over every row of every segment, which at 100k chunks costs ten times the HNSW search itself
(docs/milvus-lite-proposal.md has the measurements).

Keys are unique inside a segment (its ``pk_to_row`` map says so) and inside the memtable, so a row can only be dead
when its key is also in another source, or has a tombstone. This module finds those keys with set intersections,
which run in C over the smaller side, and marks every other row live. Where a source holds a key twice, it hands the
call to Milvus Lite's own code. The engine's other steps (filter masks, the per-segment index search, the merge and
the projection) are kept as they are: ``execute_search_with_index`` follows the engine's function step for step,
except for the live masks. Queries skip two more walks: before filtering, the engine copies every vector of the
collection into one array that queries never read, and builds one tuple per row to find the passing rows' records
by (here, only the passing rows' are computed). ``tests/stores/test_milvus_lite_speedups.py`` checks that the
results equal the engine's own, on data with upserts, deletes, flushes and filters.

One more patch: a flush returns once the compaction and index builds it starts in the background are done, as the
engine's own snapshots wait for them. Until then the flushed rows are searched by brute force and the background
work holds the engine's GIL, so searches right after a bulk load are several times slower.
``MilvusStore.seal`` flushes after an ingest.

``install()`` patches the engine in this process (the embedded server's child process calls it,
``stores/milvus_lite_server.py``; ``KB_MILVUS_LITE_SPEEDUPS=false`` leaves it out). It does nothing for Milvus Lite
versions other than those in ``SUPPORTED``, whose internals it has been checked against; pyproject.toml pins the
version and the equivalence test fails on any other. docs/milvus-lite-proposal.md is the upstream proposal.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

SUPPORTED = ("3.2.2",)  # the versions whose internals this was written for and tested against
_installed = False
_install_lock = threading.Lock()
_originals: dict[str, Callable[..., Any]] = {}


def install() -> bool:
    """Patch Milvus Lite's live-row masks in this process (once). Returns whether the patch is in place."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        try:
            import milvus_lite
            import milvus_lite.engine.collection as collection
            import milvus_lite.search.bitmap as bitmap
        except ImportError:
            return False
        version = getattr(milvus_lite, "__version__", "")
        if version not in SUPPORTED:
            log.info("Milvus Lite %s: its row-by-row live masks are left as they are", version)
            return False
        _originals.update(
            search=collection.execute_search_with_index,
            assemble=collection.assemble_candidates,
            mask=bitmap.build_valid_mask,
            query=collection.Collection.query,
        )
        _point(execute_search_with_index, assemble_candidates, build_valid_mask, query)
        collection.Collection.flush = _flush_then_wait(collection.Collection.flush)
        _installed = True
        return True


def installed() -> bool:
    return _installed


@contextmanager
def disabled() -> Iterator[None]:
    """Run Milvus Lite's own code in this process while inside (for side-by-side comparisons); not thread-safe."""
    if not _installed:
        yield
        return
    _point(_originals["search"], _originals["assemble"], _originals["mask"], _originals["query"])
    try:
        yield
    finally:
        _point(execute_search_with_index, assemble_candidates, build_valid_mask, query)


def _flush_then_wait(flush: Callable[[Any], None]) -> Callable[[Any], None]:
    """``Collection.flush``, then wait for the engine's background compaction and index builds to finish."""

    @functools.wraps(flush)
    def flush_then_wait(self: Any) -> None:
        flush(self)
        self._wait_for_bg()

    return flush_then_wait


def _point(
    search: Callable[..., Any], assemble: Callable[..., Any], mask: Callable[..., Any], query: Callable[..., Any]
) -> None:
    """Set the engine's names for the four functions, wherever it looks them up."""
    import milvus_lite.engine.collection as collection
    import milvus_lite.search.bitmap as bitmap
    import milvus_lite.search.executor as executor
    import milvus_lite.search.executor_indexed as executor_indexed

    collection.execute_search_with_index = executor_indexed.execute_search_with_index = search  # by name there
    collection.assemble_candidates = assemble  # only Collection.query calls it
    bitmap.build_valid_mask = executor.build_valid_mask = mask  # Collection.query imports it at each call
    collection.Collection.query = query


# -- live masks ----------------------------------------------------------------------------------------------------


def _row_index(pks: Sequence[Any], known: Mapping[Any, int] | None = None) -> dict[Any, int] | Mapping[Any, int]:
    """Key -> row. ``known`` is a segment's own map, reused when it covers every row."""
    if known is not None and len(known) == len(pks):
        return known
    return dict(zip(pks, range(len(pks)), strict=True))


_SharedEntry = tuple["weakref.ref[np.ndarray]", "weakref.ref[np.ndarray]", frozenset[Any]]
_shared_keys: dict[tuple[int, int], _SharedEntry] = {}
_shared_lock = threading.Lock()


def _shared_segment_keys(
    seqs: np.ndarray, index: Mapping[Any, int], other_seqs: np.ndarray, other: Mapping[Any, int]
) -> frozenset[Any]:
    """The keys two flushed segments share, computed once per pair. A segment is known by its sequence-number
    array, which lives as long as the segment does (held weakly here: a segment that compaction replaced takes
    its entries along)."""
    key = (id(seqs), id(other_seqs))
    entry = _shared_keys.get(key)
    if entry is not None and entry[0]() is seqs and entry[1]() is other_seqs:
        return entry[2]
    shared = frozenset(index.keys() & other.keys())

    def forget(_: object, key: tuple[int, int] = key) -> None:
        with _shared_lock:
            _shared_keys.pop(key, None)

    with _shared_lock:
        _shared_keys[key] = (weakref.ref(seqs, forget), weakref.ref(other_seqs, forget), shared)
    return shared


def live_masks(
    sources: Sequence[tuple[Sequence[Any], np.ndarray, Mapping[Any, int]]],
    tombstones: Mapping[Any, int],
    memtable_tombstones: Mapping[Any, Any],
    *,
    segments: int = 0,
) -> list[np.ndarray] | None:
    """For each source (its keys, their sequence numbers, key -> row), which rows are live: the row holds the
    highest sequence number of its key among all sources, and no tombstone of its key has a higher one.
    ``tombstones`` maps key -> delete sequence; ``memtable_tombstones`` key -> (delete sequence, partition).
    The first ``segments`` sources are flushed segments, which never change: the keys two of them share are
    remembered. None when a source holds a key twice (the caller then uses the engine's own code)."""
    if any(len(index) != len(pks) for pks, _, index in sources):
        return None
    masks = [np.ones(len(pks), dtype=bool) for pks, _, _ in sources]
    shared: set[Any] = set()
    for i, (_, seqs, index) in enumerate(sources):
        for j in range(i + 1, len(sources)):
            other_seqs, other = sources[j][1], sources[j][2]
            if j < segments:
                shared.update(_shared_segment_keys(seqs, index, other_seqs, other))
            else:
                shared.update(index.keys() & other.keys())
    for key in shared:
        rows = [(int(seqs[index[key]]), s, index[key]) for s, (_, seqs, index) in enumerate(sources) if key in index]
        newest = max(seq for seq, _, _ in rows)
        for seq, s, row in rows:
            if seq != newest:
                masks[s][row] = False
    for deleted, sequence_of in ((tombstones, int), (memtable_tombstones, lambda entry: int(entry[0]))):
        if not deleted:
            continue
        for s, (_, seqs, index) in enumerate(sources):
            for key in deleted.keys() & index.keys():
                row = index[key]
                if sequence_of(deleted[key]) > int(seqs[row]):
                    masks[s][row] = False
    return masks


def build_valid_mask(
    all_pks: list[Any],
    all_seqs: np.ndarray,
    delta_index: Any,
    filter_mask: np.ndarray | None = None,
    memtable: Any = None,
) -> np.ndarray:
    """``milvus_lite.search.bitmap.build_valid_mask``, same arguments and result (used by queries)."""
    n = len(all_pks)
    if n == 0 or all_seqs.shape[0] != n or (filter_mask is not None and filter_mask.shape[0] != n):
        return cast(
            np.ndarray, _originals["mask"](all_pks, all_seqs, delta_index, filter_mask=filter_mask, memtable=memtable)
        )
    mt_deletes = memtable.delete_index_snapshot() if memtable is not None else {}
    if isinstance(all_pks, _Keys):
        sources, segments = all_pks.sources, all_pks.segments
    else:
        sources, segments = [(all_pks, all_seqs, _row_index(all_pks))], 0
    masks = live_masks(sources, delta_index._map, mt_deletes, segments=segments)
    if masks is None:
        return cast(
            np.ndarray, _originals["mask"](all_pks, all_seqs, delta_index, filter_mask=filter_mask, memtable=memtable)
        )
    mask = np.concatenate(masks)
    if filter_mask is not None:
        mask &= filter_mask.astype(bool)
    return mask


# -- query ----------------------------------------------------------------------------------------------------------


class _Keys(list[Any]):
    """A query's candidate keys, concatenated, which remember each source's keys, sequence numbers and key -> row
    map for ``build_valid_mask``."""

    sources: list[tuple[Sequence[Any], np.ndarray, Mapping[Any, int]]]
    segments: int  # the first sources that are flushed segments (the memtable's keys come last)


class _RowRefs(Sequence[Any]):
    """(segment, row) or (memtable, row reference) of each candidate, computed when asked for. The engine builds a
    list of one tuple per row of every segment, and queries read only the few that pass the filter."""

    def __init__(self, parts: list[tuple[Any, Sequence[Any]]]) -> None:
        self._parts = parts  # (source, its row references), in candidate order
        self._starts = np.cumsum([0] + [len(refs) for _, refs in parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: Any) -> Any:  # an int: the engine reads one reference at a time
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        source, refs = self._parts[part]
        return source, refs[i - int(self._starts[part])]


def assemble_candidates(
    segments: Any,
    memtable: Any,
    vector_field: str | None,
    partition_names: list[str] | None = None,
    filter_compiled: Any = None,
    indexed_filter_plan: Any = None,
) -> tuple[list[Any], np.ndarray, np.ndarray, Sequence[Any], np.ndarray | None]:
    """``milvus_lite.search.assembler.assemble_candidates`` for ``Collection.query``, which reads neither the
    vectors (an empty array here, where the engine copies every vector of the collection) nor more than the
    passing rows' references."""
    from milvus_lite.search.filter import evaluate_mask
    from milvus_lite.search.indexed_filter import evaluate_segment_filter

    partition_filter = set(partition_names) if partition_names else None
    keys = _Keys()
    keys.sources = []
    parts: list[tuple[Any, Sequence[Any]]] = []
    filters: list[np.ndarray] = []
    for seg in segments:
        if (partition_filter is not None and seg.partition not in partition_filter) or seg.num_rows == 0:
            continue
        keys.extend(seg.pks)
        keys.sources.append((seg.pks, seg.seqs, _row_index(seg.pks, seg.pk_to_row)))
        parts.append((seg, range(seg.num_rows)))
        if filter_compiled is not None:
            filters.append(evaluate_segment_filter(seg, filter_compiled, indexed_filter_plan))
    keys.segments = len(keys.sources)
    mt_pks, mt_seqs, _, mt_row_refs, mt_table = memtable.to_search_snapshot(
        vector_field=None, partition_names=partition_names, include_table=filter_compiled is not None
    )
    if mt_pks:
        keys.extend(mt_pks)
        keys.sources.append((mt_pks, mt_seqs, _row_index(mt_pks)))
        parts.append((memtable, mt_row_refs))
        if filter_compiled is not None and mt_table is not None:
            filters.append(evaluate_mask(filter_compiled, mt_table))
    seqs = np.concatenate([seqs for _, seqs, _ in keys.sources]) if keys.sources else np.zeros(0, dtype=np.uint64)
    mask = None
    if filter_compiled is not None:
        mask = np.concatenate(filters) if filters else np.zeros(0, dtype=bool)
    if not keys:
        return [], np.zeros(0, dtype=np.uint64), np.zeros((0, 0), dtype=np.float32), [], mask
    return keys, seqs, np.zeros((len(keys), 0), dtype=np.float32), _RowRefs(parts), mask


# -- search ----------------------------------------------------------------------------------------------------------


def execute_search_with_index(
    query_vectors: np.ndarray,
    segments: Any,
    memtable: Any,
    delta_index: Any,
    top_k: int,
    metric_type: str,
    pk_field: str,
    vector_field: str,
    partition_names: list[str] | None = None,
    compiled_filter: Any = None,
    output_fields: list[str] | None = None,
    indexed_filter_plan: Any = None,
    project_record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    search_params: dict[str, Any] | None = None,
) -> list[list[dict[str, Any]]]:
    """``milvus_lite.search.executor_indexed.execute_search_with_index``, same arguments and result."""
    from milvus_lite.index.brute_force import BruteForceIndex

    segments = list(segments)
    args = dict(
        query_vectors=query_vectors,
        segments=segments,
        memtable=memtable,
        delta_index=delta_index,
        top_k=top_k,
        metric_type=metric_type,
        pk_field=pk_field,
        vector_field=vector_field,
        partition_names=partition_names,
        compiled_filter=compiled_filter,
        output_fields=output_fields,
        indexed_filter_plan=indexed_filter_plan,
        project_record_fn=project_record_fn,
        search_params=search_params,
    )
    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    if query_vectors.dtype != np.float32:
        query_vectors = query_vectors.astype(np.float32, copy=False)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]

    partition_filter = set(partition_names) if partition_names else None
    in_scope = [s for s in segments if s.num_rows > 0 and (partition_filter is None or s.partition in partition_filter)]
    mt_pks, mt_seqs, mt_vecs, mt_row_refs, mt_table = memtable.to_search_snapshot(
        vector_field=vector_field, partition_names=partition_names, include_table=compiled_filter is not None
    )
    if not in_scope and not mt_pks:
        return [[] for _ in range(nq)]

    sources = [(seg.pks, seg.seqs, _row_index(seg.pks, seg.pk_to_row)) for seg in in_scope]
    if mt_pks:
        sources.append((mt_pks, mt_seqs, _row_index(mt_pks)))
    masks = live_masks(sources, delta_index._map, memtable.delete_index_snapshot(), segments=len(in_scope))
    if masks is None:
        return cast(list[list[dict[str, Any]]], _originals["search"](**args))

    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask
        from milvus_lite.search.indexed_filter import evaluate_segment_filter

        for i, seg in enumerate(in_scope):
            masks[i] &= evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan).astype(bool)
        if mt_pks and mt_table is not None:
            masks[-1] &= evaluate_mask(compiled_filter, mt_table).astype(bool)

    candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(nq)]

    def recall(source: int, vectors: np.ndarray, mask: np.ndarray, index: Any) -> None:
        if not mask.any():
            return
        if index is None:
            index = BruteForceIndex.build(vectors, metric_type)
        # valid_mask=None means every row: the engine skips its ID selector then, which bounds ANN traversal.
        local_ids, dists = index.search(
            query_vectors, top_k, valid_mask=None if mask.all() else mask, params=search_params
        )
        for q in range(nq):
            for j in range(top_k):
                lid = int(local_ids[q, j])
                if lid < 0:
                    break
                candidates[q].append((float(dists[q, j]), source, lid))

    for i, seg in enumerate(in_scope):
        vectors, vector_present = seg.vector_data(vector_field)
        if vector_present is not None:
            masks[i] &= vector_present
        recall(i, vectors, masks[i], seg.indexes.get(vector_field))
    if mt_pks:
        recall(len(in_scope), mt_vecs, masks[-1], None)

    if project_record_fn is not None:
        project = project_record_fn
    elif output_fields is None:

        def project(record: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in record.items() if k != pk_field and k != vector_field}

    else:
        keep = set(output_fields) - {pk_field}

        def project(record: dict[str, Any]) -> dict[str, Any]:
            return {k: record[k] for k in keep if k in record}

    winners = []
    for found in candidates:
        found.sort()  # (distance, source, local id): ties resolved as the engine does
        winners.append(found[:top_k])
    # The searched vector is left out of the records unless asked for: the projection would drop it anyway.
    wants_vector = output_fields is None or "*" in output_fields or vector_field in output_fields
    records = _records(
        [(source, local_id) for found in winners for _, source, local_id in found],
        in_scope,
        lambda ref: memtable.materialize_row(*mt_row_refs[ref]),
        skip=() if wants_vector else (vector_field,),
    )
    results: list[list[dict[str, Any]]] = []
    for found in winners:
        hits = []
        for dist, source, local_id in found:
            record = records[source, local_id]
            pk = record[pk_field] if pk_field in record else sources[source][0][local_id]
            hits.append({"id": pk, "distance": dist, "entity": project(record)})
        results.append(hits)
    return results


# -- query -----------------------------------------------------------------------------------------------------------


def query(
    self: Any,
    expr: str | None = None,
    output_fields: list[str] | None = None,
    partition_names: list[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    timezone: str | None = None,
    order_by_pk: bool = False,
) -> list[dict[str, Any]]:
    """``milvus_lite.engine.collection.Collection.query``, same arguments and result. Two steps differ: the engine
    builds each returned row one cell at a time, its vector included (384 Python floats, dropped by the projection
    unless asked for), where here each segment's rows come with one ``take``; and it orders the live rows by key (a
    query iterator's pages) with a Python sort over all of them, here one ``argsort``. Reading 100k chunks for the
    lexical index, 2,000 a page, took 9.5 s."""
    from milvus_lite.engine.projection import build_projection_plan, project_record
    from milvus_lite.search.assembler import materialize_record

    if expr is not None and not isinstance(expr, str):
        raise TypeError("query() expr must be a string or None")
    self._require_loaded()
    compiled_filter = self._compile_filter(expr, timezone=timezone) if expr else None
    projection_plan = build_projection_plan(output_fields, self._schema, api_kind="query")
    indexed_filter_plan = self._indexed_filter_plan(compiled_filter)
    seg_snap, delta_snap = self._read_snapshot()
    all_pks, all_seqs, _, all_rec_sources, filter_mask = assemble_candidates(
        segments=seg_snap,
        memtable=self._memtable,
        vector_field=self._vector_name,
        partition_names=partition_names,
        filter_compiled=compiled_filter,
        indexed_filter_plan=indexed_filter_plan,
    )
    if not all_pks:
        return []
    mask = build_valid_mask(all_pks, all_seqs, delta_snap, filter_mask=filter_mask, memtable=self._memtable)
    live = np.flatnonzero(mask)
    if order_by_pk and len(live):
        keys = np.asarray([all_pks[i] for i in live])  # unique among live rows
        live = live[np.argsort(keys, kind="stable")]
    end = None if limit is None else max(offset + limit, 1)  # the engine stops after its first row at limit 0
    chosen = [all_rec_sources[int(i)] for i in live[:end][offset:]]

    positions: dict[int, int] = {}  # id(segment) -> its position in ``segments``
    segments: list[Any] = []
    for source, ref in chosen:
        if isinstance(ref, int) and id(source) not in positions:  # a segment's row (the memtable's: (batch, row))
            positions[id(source)] = len(segments)
            segments.append(source)
    wants_vector = output_fields is None or "*" in output_fields or self._vector_name in output_fields
    records = _records(
        [(positions[id(source)], ref) for source, ref in chosen if isinstance(ref, int)],
        segments,
        _no_memtable_row,
        skip=() if wants_vector else (self._vector_name,),
    )
    return [
        project_record(
            records[positions[id(source)], ref] if isinstance(ref, int) else materialize_record((source, ref)),
            self._schema,
            projection_plan,
        )
        for source, ref in chosen
    ]


def _no_memtable_row(row: int) -> dict[str, Any]:
    raise AssertionError("memtable rows are materialised by the engine")


def _records(
    refs: Sequence[tuple[int, int]],
    segments: Sequence[Any],
    memtable_row: Callable[[int], dict[str, Any]],
    *,
    skip: Sequence[str],
) -> dict[tuple[int, int], dict[str, Any]]:
    """The rows at ``refs`` ((source, row); sources past ``segments`` are the memtable's), as
    ``Segment.row_to_dict`` gives them, less the columns in ``skip``. The engine reads a row one cell at a time,
    its vector as a list of Python floats; here each segment's rows come with one ``take``."""
    by_source: dict[int, list[int]] = {}
    for source, row in refs:
        by_source.setdefault(source, []).append(row)
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for source, rows in by_source.items():
        rows = list(dict.fromkeys(rows))
        if source >= len(segments):
            records.update(((source, row), memtable_row(row)) for row in rows)
            continue
        table = segments[source].table
        names = [name for name in table.schema.names if name != "_seq" and name not in skip]
        taken = table.select(names).take(pa.array(rows, type=pa.int64())).to_pylist()
        records.update(((source, row), _with_dynamic_fields(record)) for row, record in zip(rows, taken, strict=True))
    return records


def _with_dynamic_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Unpack the ``$meta`` column into the record, as ``Segment.row_to_dict`` does."""
    meta = record.get("$meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return record
    if isinstance(meta, dict):
        record.update(meta)
    return record
