"""Ingestion through the job queue against ingestion in the API process, in one run on the same documents:
``kb serve`` alone (the embedded default), then ``kb serve`` with ``KB_QUEUE_URL`` and one, then two ``kb worker``
processes, on one RabbitMQ node and one PostgreSQL (pgserver) that this script starts. Each mode uploads the same
SciFact abstracts through the REST API into a fresh knowledge base and is timed from the upload to the last job
polled ready (processes started and their models loaded beforehand).

- ``docs_per_s`` per mode; ``speedup_2_vs_1``: two workers against one (bounded by the machine's cores: the API,
  the workers and PostgreSQL share them);
- ``queue_overhead_ms_per_doc``: (one worker − embedded) ÷ documents: what the broker, the PostgreSQL journal and
  the shared payload folder add per document.

    python bench/scale_out.py --json             # 400 abstracts
    python bench/scale_out.py --quick --json     # 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.broker import rabbitmq  # noqa: E402
from tests.live import kb_serve  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "scifact-dev" / "corpus.jsonl"
FINISHED = ("ready", "failed")


def abstracts(limit: int) -> list[tuple[str, bytes]]:
    out = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            out.append((f"{doc['_id']}.txt", f"{doc.get('title', '')}\n\n{doc['text']}".encode()))
            if len(out) == limit:
                break
    return out


@contextmanager
def workers(env: dict[str, str], n: int, folder: Path) -> Iterator[None]:
    procs = []
    try:
        for i in range(n):
            log = (folder / f"worker{i}.log").open("w")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "kb_service.cli.main", "worker"], env=env, stdout=log, stderr=log, cwd=ROOT
                )
            )
        time.sleep(20)  # the model loads and the consumer connects (not timed: uploads wait in the queue anyway)
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(120)


def ingest(url: str, kb: str, docs: list[tuple[str, bytes]]) -> dict:
    with httpx.Client(base_url=url, timeout=120) as client:
        assert client.post("/v1/knowledge-bases", json={"name": kb}).status_code == 201
        start = time.perf_counter()
        ids = []
        for i in range(0, len(docs), 100):
            files = [("files", (name, data)) for name, data in docs[i : i + 100]]
            r = client.post(f"/v1/knowledge-bases/{kb}/documents", files=files)
            r.raise_for_status()
            ids += [j["id"] for j in r.json()["jobs"]]
        pending = set(ids)
        while pending:
            pending = {j for j in pending if client.get(f"/v1/jobs/{j}").json()["status"] not in FINISHED}
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        statuses = [client.get(f"/v1/jobs/{j}").json()["status"] for j in ids]
        audit = client.get(f"/v1/knowledge-bases/{kb}/audit").json()
    return {
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(docs) / seconds, 2),
        "ready": statuses.count("ready"),
        "chunks": audit["chunks"],
        "audit_clean": audit["clean"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 abstracts (unless --limit)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    docs = abstracts(args.limit or (40 if args.quick else 400))
    import pgserver

    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        pg = pgserver.get_server(folder / "pg", cleanup_mode="stop")
        stack.callback(pg.cleanup)
        broker = stack.enter_context(rabbitmq(folder / "rabbitmq"))
        base = {
            **os.environ,
            "KB_BACKEND": "pgvector",
            "KB_PG_DSN": pg.get_uri(),
            "KB_LLM_BACKEND": "none",
            "KB_RERANK_BACKEND": "none",
        }
        modes = [("embedded", None, 0), ("queue, 1 worker", broker, 1), ("queue, 2 workers", broker, 2)]
        for i, (mode, queue, n) in enumerate(modes):
            env = {**base, "KB_DATA_DIR": str(folder / f"data{i}")}
            if queue is not None:
                env["KB_QUEUE_URL"] = queue
            with kb_serve(env, folder / f"serve{i}.log", cwd=ROOT) as url, workers(env, n, folder):
                runs[mode] = {"workers": n, **ingest(url, f"bench-{i}", docs)}
    one, two, alone = runs["queue, 1 worker"], runs["queue, 2 workers"], runs["embedded"]
    report = {
        "docs": len(docs),
        "cores": os.cpu_count(),
        "runs": runs,
        "speedup_2_vs_1": round(one["seconds"] / two["seconds"], 2),
        "queue_overhead_ms_per_doc": round((one["seconds"] - alone["seconds"]) * 1000 / len(docs), 1),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
