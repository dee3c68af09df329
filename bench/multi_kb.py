"""Search over several knowledge bases at once (``POST /v1/search``): the router and the merge, measured on four
knowledge bases built from four evaluation sets of the shared data, in one run. Every query of every set is asked of
all four at once; only its own knowledge base holds its relevant documents (a hit from another one counts as not
relevant, and it takes its rank).

- ``own``: the query's own knowledge base alone (what a user who knows where to look gets; the ceiling);
- ``all``: every knowledge base searched, no router, one merged ranking;
- ``routed``: the default router (up to ``route_kbs`` = 3 knowledge bases within ``route_margin`` of the best);
- ``routed_1``: only the router's best knowledge base;
- ``all_weighted``: every knowledge base searched, merged with the router's weights (route_kbs = all, margin 1).

Reported per set: nDCG@10 and R@10, the share of queries whose own knowledge base the router ranked first
(``router_top1``) and searched (``router_searched``), and the latency of each configuration. The CMRC knowledge base
is built with multilingual-e5-small, the English ones with the default MiniLM: each is queried with its own model.
``--rerank``: with the embedding reranker (e5, which also scores the router), slow on CPUs without bf16.

    python bench/multi_kb.py --json [--quick] [--queries 100] [--docs 2000] [--rerank]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
E5 = "intfloat/multilingual-e5-small"
SETS = {  # knowledge base -> (dataset path, split, embedding model)
    "scifact": (DATA / "scifact-dev", "train", None),
    "msmarco": (DATA / "msmarco-5k", "test", None),
    "2wiki": (DATA / "2wikimultihopqa-dev", "test", None),
    "cmrc": (DATA / "cmrc2018-trial", "dev", E5),
}
CONFIGS = ("own", "all", "routed", "routed_1", "all_weighted")


def p(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 1) if len(values) >= 2 else round(values[0], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100, help="queries per set")
    parser.add_argument("--docs", type=int, default=2000, help="documents per set (judged ones + distractors)")
    parser.add_argument("--rerank", action="store_true", help="with the embedding reranker (e5)")
    parser.add_argument("--quick", action="store_true", help="10 queries and 200 documents per set, a fresh folder")
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "kb-bench" / "multi-kb")
    parser.add_argument("--json", action="store_true", help="JSON only")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"the shared evaluation data is not at {DATA}: this benchmark needs it")
    os.environ["KB_RERANK_BACKEND"] = "embedding" if args.rerank else "none"
    if args.quick:
        args.queries, args.docs = 10, 200
        args.data_dir = Path(tempfile.mkdtemp(prefix="kb-multi-kb-bench-"))

    from kb_service.core.config import Settings
    from kb_service.evaluation.harness import EvalDataset, load_dataset, score
    from kb_service.evaluation.runner import EvalRun
    from kb_service.retrieval.federated import Target
    from kb_service.retrieval.options import SearchOptions, SearchResult
    from kb_service.services import Services

    services = Services(settings=Settings(data_dir=args.data_dir, embedding_allowed_models=[E5]))
    run = EvalRun(settings=services.settings, catalog=services.catalog, retriever=services.retriever)
    datasets: dict[str, EvalDataset] = {}
    targets: dict[str, Target] = {}
    ingest_s = {}
    for name, (path, split, model) in SETS.items():
        dataset = load_dataset(path, split).sample(args.queries, args.docs)
        kb, embedder, seconds, _cached = run.prepare_kb(dataset, embedding_model=model)
        datasets[name], targets[name], ingest_s[name] = dataset, Target(kb, embedder), round(seconds, 1)
    everything = list(targets.values())
    base = SearchOptions.from_settings(services.settings, top_k=10)
    options = {
        "own": base,
        "all": replace(base, route=False),
        "routed": base,
        "routed_1": replace(base, route_kbs=1),
        "all_weighted": replace(base, route_kbs=len(SETS), route_margin=1.0),
    }

    def ask(config: str, own: str, query: str) -> tuple[SearchResult, float]:
        started = time.perf_counter()
        if config == "own":
            t = targets[own]
            result = services.retriever.search(t.kb, t.embedder, query, options[config])
        else:
            result = services.federation.search(everything, query, options[config])
        return result, (time.perf_counter() - started) * 1000

    report: dict[str, Any] = {"sets": {}, "latency_ms": {}, "knowledge_bases": {}}
    latencies: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for name, dataset in datasets.items():
        row: dict[str, Any] = {"queries": len(dataset.queries)}
        for config in CONFIGS:
            runs: dict[str, dict[str, float]] = {}
            top1 = searched = 0
            for qid, query in dataset.queries.items():
                result, ms = ask(config, name, query)
                latencies[config].append(ms)
                ranked: dict[str, float] = {}
                for hit in result.hits:  # another knowledge base's hit is never relevant, and it takes its rank
                    cid = str(hit.chunk.metadata.get("source", hit.chunk.doc_id))
                    key = cid if hit.kb == targets[name].kb.name else f"~{hit.kb}:{cid}"
                    ranked.setdefault(key, float(1000 - len(ranked)))
                runs[qid] = ranked
                if result.trace.routes:
                    own_kb = targets[name].kb.name
                    top1 += result.trace.routes[0].knowledge_base == own_kb
                    searched += any(r.searched and r.knowledge_base == own_kb for r in result.trace.routes)
            means, _ = score(dataset, runs)
            row[config] = {m: round(means[m], 3) for m in ("nDCG@10", "R@10")}
            if config not in ("own", "all"):
                row[config] |= {
                    "router_top1": round(top1 / len(dataset.queries), 3),
                    "router_searched": round(searched / len(dataset.queries), 3),
                }
        report["sets"][name] = row
        report["knowledge_bases"][name] = {
            "documents": len(dataset.corpus),
            "embedding_model": targets[name].kb.embedding.name,
            "ingest_s": ingest_s[name],
        }
    report["latency_ms"] = {c: {"p50": p(v, 50), "p95": p(v, 95)} for c, v in latencies.items()}
    report["mean_nDCG@10"] = {
        c: round(statistics.mean(r[c]["nDCG@10"] for r in report["sets"].values()), 3) for c in CONFIGS
    }
    report["reranker"] = services.retriever.reranker.name if services.retriever.reranker else None
    report["router_scorer"] = services.federation.router.scorer_name()
    services.close()
    if args.quick:
        shutil.rmtree(args.data_dir, ignore_errors=True)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for name, row in report["sets"].items():
        line = "  ".join(f"{c} {row[c]['nDCG@10']}" for c in CONFIGS)
        print(f"{name:8} nDCG@10: {line}  router top-1 {row['routed']['router_top1']}")
    print("p50 ms:", {c: v["p50"] for c, v in report["latency_ms"].items()})


if __name__ == "__main__":
    main()
