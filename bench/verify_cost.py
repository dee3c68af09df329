"""What the one-version check of hybrid search costs: its stage time (``timings_ms.verify``) against the whole
search, per store, side by side in one run. Prints JSON.

    python bench/verify_cost.py            # 100 hybrid searches per store over examples/sample-beir
    python bench/verify_cost.py --quick    # 20 (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from kb_service.client.local import LocalClient

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample-beir"


def measure(backend: str, rounds: int) -> dict[str, float]:
    corpus = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (SAMPLE / "queries.jsonl").open()]
    settings = {"backend": backend, "rerank_backend": "none", "llm_backend": "none"}
    with tempfile.TemporaryDirectory() as data, LocalClient(data_dir=Path(data), **settings) as client:
        client.create_kb("bench")
        client.add_texts("bench", {d["_id"]: f"{d.get('title', '')}\n\n{d['text']}" for d in corpus})
        total, verify = [], []
        for _ in range(rounds):
            for query in queries:
                timings = client.search("bench", query, top_k=10, trace=True).trace.timings_ms
                total.append(timings["total"])
                verify.append(timings["verify"])
    p50_total, p50_verify = statistics.median(total), statistics.median(verify)
    return {
        "searches": len(total),
        "p50_total_ms": round(p50_total, 2),
        "p50_verify_ms": round(p50_verify, 2),
        "verify_share": round(p50_verify / p50_total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of the 20 queries")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: the report is always JSON")
    rounds = 1 if parser.parse_args().quick else 5
    print(json.dumps({backend: measure(backend, rounds) for backend in ("pgvector", "milvus")}, indent=1))


if __name__ == "__main__":
    main()
