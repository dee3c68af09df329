"""Re-indexing against a fresh ingest: moving a knowledge base from all-MiniLM-L6-v2 to multilingual-e5-small while
it serves, measured side by side in one run on the same corpus (SciFact abstracts from the shared data; ``--quick``:
the repository's sample corpus).

- ``ingest_minilm_s``: the corpus ingested fresh with MiniLM (the knowledge base to re-index);
- ``ingest_e5_s``: the same corpus ingested fresh with e5 into another knowledge base (what re-indexing replaces:
  dropping the knowledge base and uploading everything again, with the downtime that has);
- ``reindex_s``: the MiniLM knowledge base re-indexed to e5 (stored chunks embedded again, no parsing or chunking)
  until the switch (``reindex_with_retire_s`` adds the second the old index keeps answering), while a thread
  searches it without pause: ``searches`` counts them, with those that failed or came back empty, and their latency
  before and during the re-index.

    python bench/reindex.py --json [--quick] [--docs 1000] [--backend milvus|pgvector]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("KB_RERANK_BACKEND", "none")  # searches measure the indexes, not a second model

from kb_service.client import LocalClient  # noqa: E402
from kb_service.core.config import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact-dev"
SAMPLE = ROOT / "examples" / "sample-beir"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
E5 = "intfloat/multilingual-e5-small"


def load(folder: Path, docs: int) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if len(texts) >= docs:
                break
            d = json.loads(line)
            texts[f"{d['_id']}.txt"] = f"{d.get('title', '')}\n\n{d['text']}".strip()
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][:50]
    return texts, queries


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - started, 2)


def ms(values: list[float], q: float) -> float | None:
    return round(statistics.quantiles(values, n=100)[int(q) - 1], 1) if len(values) >= 2 else None


def run(texts: dict[str, str], queries: list[str], backend: str, work: Path) -> dict[str, Any]:
    settings = Settings(data_dir=work / "data", backend=backend, reindex_retire_s=1)
    if backend == "pgvector":
        import pgserver

        server = pgserver.get_server(work / "pg", cleanup_mode="stop")
        settings = Settings(data_dir=work / "data", backend=backend, pg_dsn=server.get_uri(), reindex_retire_s=1)
    with LocalClient(settings) as client:
        client.create_kb("minilm", embedding_model=MINILM)
        _, ingest_minilm_s = timed(lambda: client.add_texts("minilm", texts))
        client.create_kb("e5", embedding_model=E5)
        _, ingest_e5_s = timed(lambda: client.add_texts("e5", texts))
        chunks = client.audit("minilm").chunks

        def search(i: int) -> tuple[str, float]:
            started = time.perf_counter()
            try:
                hits = client.search("minilm", queries[i % len(queries)], top_k=10).hits
                outcome = "ok" if hits else "empty"
            except Exception:  # noqa: BLE001 - a failed search is the finding
                outcome = "failed"
            return outcome, (time.perf_counter() - started) * 1000

        before = [search(i)[1] for i in range(len(queries))]
        during: list[tuple[str, float]] = []
        stop = threading.Event()

        def loop() -> None:
            i = 0
            while not stop.is_set():
                during.append(search(i))
                i += 1

        searcher = threading.Thread(target=loop)
        searcher.start()
        try:
            status, with_retire_s = timed(lambda: client.reindex("minilm", E5))
            reindex_s = round(status.seconds, 2)  # built and switched (then the old index answers 1 s more)
        finally:
            stop.set()
            searcher.join()
        after = client.get_kb("minilm")
        latencies = [t for outcome, t in during if outcome == "ok"]
        return {
            "backend": backend,
            "documents": len(texts),
            "chunks": chunks,
            "ingest_minilm_s": ingest_minilm_s,
            "ingest_e5_s": ingest_e5_s,
            "reindex_s": reindex_s,
            "reindex_with_retire_s": with_retire_s,
            "reindex_state": status.state,
            "reindex_over_fresh_e5_ingest": round(reindex_s / ingest_e5_s, 2),
            "reindex_chunks_per_s": round(chunks / reindex_s, 1),
            "switched_to": after.embedding_model,
            "searches": {
                "during_reindex": len(during),
                "failed": sum(1 for o, _ in during if o == "failed"),
                "empty": sum(1 for o, _ in during if o == "empty"),
                "p50_ms_before": ms(before, 50),
                "p50_ms_during": ms(latencies, 50),
                "p95_ms_during": ms(latencies, 95),
            },
            "audit_clean": client.audit("minilm").clean,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the repository's sample corpus instead of SciFact")
    parser.add_argument("--docs", type=int, default=1000, help="SciFact abstracts to use")
    parser.add_argument("--backend", default="milvus", choices=["milvus", "pgvector"])
    parser.add_argument("--json", action="store_true", help="JSON only")
    args = parser.parse_args()
    folder = SAMPLE if args.quick or not SCIFACT.is_dir() else SCIFACT
    texts, queries = load(folder, args.docs)
    with tempfile.TemporaryDirectory(prefix="kb-reindex-bench-") as work:
        report = run(texts, queries, args.backend, Path(work))
    report["corpus"] = folder.name
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    s = report["searches"]
    print(f"{report['documents']} documents, {report['chunks']} chunks ({report['corpus']}, {report['backend']})")
    print(f"  fresh ingest MiniLM {report['ingest_minilm_s']}s, e5 {report['ingest_e5_s']}s")
    print(f"  re-index MiniLM → e5 {report['reindex_s']}s ({report['reindex_over_fresh_e5_ingest']}x the e5 ingest)")
    print(f"  {s['during_reindex']} searches meanwhile: {s['failed']} failed, {s['empty']} empty")


if __name__ == "__main__":
    main()
