"""The lexical index after a one-document upload: caught up by what changed (``LexicalIndex.updated``) against built
again from every chunk, as every upload did before (tokenising all chunks, then bm25s over chunks and documents),
at growing sizes, in one run; with query latency (ours against bm25s over the same rows) and memory.

The chunks are real text, SciFact and MS MARCO sentences and passages (``bench/query.py``'s corpus, 100k at most);
past that size the corpus is repeated under new document ids, so the vocabulary stops growing while the postings
do. The store's part of a catch-up (reading the new document's chunks by id) is not in these numbers.

    python bench/lexical.py --json                       # 100k chunks
    python bench/lexical.py --quick --json               # 5k chunks: a smoke test
    python bench/lexical.py --sizes 100000 1000000 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query import SHARED, real_texts  # noqa: E402

from kb_service.core.records import Chunk, text_hash  # noqa: E402
from kb_service.retrieval.lexical import LexicalIndex, _rows, lexical_tokens  # noqa: E402
from kb_service.stores.changes import Changes  # noqa: E402


def corpus(size: int) -> list[Chunk]:
    pairs = real_texts(min(size, 100_000))
    chunks: list[Chunk] = []
    ords: dict[str, int] = {}
    copy = 0
    while len(chunks) < size:
        for doc, text in pairs[: size - len(chunks)]:
            doc_id = f"{doc}#{copy}"
            ords[doc_id] = ords.get(doc_id, -1) + 1
            cid = f"{doc_id}:{ords[doc_id]}"
            chunks.append(Chunk(id=cid, doc_id=doc_id, ord=ords[doc_id], text=text, hash=text_hash(cid)))
        copy += 1
    return chunks


def rebuild_before(chunks: list[Chunk]) -> tuple[Any, Any]:
    """What every upload cost before: tokenise every chunk, then bm25s over chunks and over documents."""
    tokens, _, doc_tokens = _rows(chunks, None)
    chunk_bm25, doc_bm25 = bm25s.BM25(), bm25s.BM25()
    chunk_bm25.index(tokens, show_progress=False)
    doc_bm25.index(doc_tokens, show_progress=False)
    return chunk_bm25, doc_bm25


def upload(n: int, size: int = 8) -> list[Chunk]:
    """A new document of ``size`` chunks of real text."""
    texts = [t for _, t in real_texts(2_000)[n * size : (n + 1) * size]]
    doc_id = f"upload-{n}"
    return [Chunk(id=f"{doc_id}:{i}", doc_id=doc_id, ord=i, text=t, hash=text_hash(t)) for i, t in enumerate(texts)]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values) * 1000, 2), "max": round(max(values) * 1000, 2)}


def measure(size: int, queries: list[str], updates: int) -> dict[str, Any]:
    chunks = corpus(size)
    process = psutil.Process()
    gc.collect()
    rss0 = process.memory_info().rss
    start = time.perf_counter()
    index = LexicalIndex.build(chunks, "r0")
    build_s = time.perf_counter() - start
    gc.collect()
    rss_index = process.memory_info().rss - rss0
    start = time.perf_counter()
    before, _ = rebuild_before(chunks)
    before_s = time.perf_counter() - start

    steps: dict[str, list[float]] = {"upload": [], "replace": [], "delete": []}
    for n in range(updates):
        new = upload(n)
        start = time.perf_counter()
        index = index.updated(Changes(f"u{n}", frozenset({new[0].doc_id}), frozenset()), new)
        steps["upload"].append(time.perf_counter() - start)
        again = [Chunk(id=f"{c.id}b", doc_id=f"{c.doc_id}b", ord=c.ord, text=c.text, hash=c.hash) for c in new]
        start = time.perf_counter()
        index = index.updated(Changes(f"v{n}", frozenset({again[0].doc_id}), frozenset({new[0].doc_id})), again)
        steps["replace"].append(time.perf_counter() - start)
        start = time.perf_counter()
        index = index.updated(Changes(f"w{n}", frozenset(), frozenset({chunks[n * 97].doc_id})), [])
        steps["delete"].append(time.perf_counter() - start)

    ours, theirs = [], []
    for query in queries:
        tokens = lexical_tokens(query)
        start = time.perf_counter()
        index.search(query + " ", top_k=50)  # a new string: the last query's scores are not reused
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        scores = before.get_scores_from_ids(before.get_tokens_ids(tokens))
        np.argpartition(-scores, 50)
        theirs.append(time.perf_counter() - start)
    assert index.bm25 is not None
    postings = sum(s.rows.nbytes + s.tf.nbytes + s.indptr.nbytes for s in index.bm25.segments)
    return {
        "chunks": size,
        "rebuild_before_s": round(before_s, 2),
        "build_s": round(build_s, 2),
        "refresh_ms": {name: ms(values) for name, values in steps.items()},
        "refresh_over_rebuild": round(statistics.median(steps["upload"]) / before_s, 5),
        "segments_after": [s.n_rows for s in index.bm25.segments],
        "query_ms": {"ours": ms(ours), "bm25s": ms(theirs)},
        "index_rss_mib": round(rss_index / 2**20),
        "postings_mib": round(postings / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--updates", type=int, default=20, help="uploads, replaces and deletes, one document each")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="5k chunks, 3 updates, 20 queries: a smoke test")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.updates, args.queries = [5_000], 3, 20
    if not (SHARED / "scifact-dev").exists():
        sys.exit(f"shared data not found under {SHARED}")
    lines = (SHARED / "scifact-dev" / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["text"] for line in lines][: args.queries]
    report = {"sizes": []}
    for size in args.sizes:
        report["sizes"].append(measure(size, queries, args.updates))
        if not args.json:
            print(json.dumps(report["sizes"][-1]), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
