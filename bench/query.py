"""Query latency per stage and end to end (no LLM), at growing knowledge-base sizes, on both stores, with and
without reranking; Milvus index types side by side; QPS with concurrent clients over HTTP; and the same queries
through LlamaIndex (VectorStoreIndex over Milvus Lite, same model) in the same run.

The knowledge bases are real text: SciFact abstracts split into sentences and two-sentence windows, then MS MARCO
passages and their sentences (100k chunks at most). Their vectors are embedded once and cached under
``--cache`` (the first full run embeds 100k short texts: about 16 minutes on 2 CPU cores).

    python bench/query.py --json                 # 10k chunks, both stores
    python bench/query.py --full --json          # 10k and 100k chunks
    python bench/query.py --quick --json         # 2k chunks: a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from kb_service.api.live import live_server  # noqa: E402
from kb_service.catalog import Catalog  # noqa: E402
from kb_service.core.config import Settings  # noqa: E402
from kb_service.core.records import Chunk, DocStatus, Document, KnowledgeBase, text_hash  # noqa: E402
from kb_service.embeddings import EmbedderPool  # noqa: E402
from kb_service.embeddings.base import Embedder  # noqa: E402
from kb_service.embeddings.runner import MODEL_THREAD  # noqa: E402
from kb_service.embeddings.sentence import SentenceTransformerEmbedder, resolve_model_path  # noqa: E402
from kb_service.retrieval.factory import build_retriever  # noqa: E402
from kb_service.retrieval.pipeline import Retriever, SearchOptions  # noqa: E402
from kb_service.retrieval.rerank import EmbeddingReranker  # noqa: E402
from kb_service.stores.base import VectorStore  # noqa: E402
from kb_service.stores.factory import open_store  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def real_texts(limit: int) -> list[tuple[str, str]]:
    """(document id, chunk text) pairs of real text, deterministic, at most ``limit``."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(doc: str, text: str) -> None:
        if len(text) > 20 and text not in seen:
            seen.add(text)
            out.append((doc, text))

    for name in ("scifact-dev", "msmarco-5k"):
        for line in (SHARED / name / "corpus.jsonl").open(encoding="utf-8"):  # not splitlines(): U+2028 in text
            row = json.loads(line)
            doc = f"{name}/{row['_id']}"
            sentences = [s.strip() for s in SENTENCE.split(row["text"]) if s.strip()]
            if name == "msmarco-5k":
                add(doc, row["text"].strip())
            for i, sentence in enumerate(sentences):
                add(doc, sentence)
                if i + 1 < len(sentences):
                    add(doc, f"{sentence} {sentences[i + 1]}")
            if len(out) >= limit:
                return out[:limit]
    return out


def cached_vectors(texts: list[str], embedder: Embedder, cache: Path) -> np.ndarray:
    key = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = cache / f"{embedder.info.fingerprint}-{len(texts)}-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = np.concatenate([embedder.embed_documents(texts[i : i + 4096]) for i in range(0, len(texts), 4096)])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def bulk_load(
    store: VectorStore, kb: KnowledgeBase, pairs: list[tuple[str, str]], vectors: np.ndarray
) -> tuple[float, list[Chunk]]:
    """Write the chunks with their cached vectors through the store API (documents: each source abstract or
    passage; summary vector: the mean of its chunk vectors), as the pipeline's storing stage does. Returns the
    seconds it took and the chunks, aligned with ``pairs``."""
    by_doc: dict[str, list[int]] = {}
    for i, (doc, _) in enumerate(pairs):
        by_doc.setdefault(doc, []).append(i)
    docs, chunks = [], []
    order: dict[str, int] = {}
    for doc_name, rows in by_doc.items():
        doc_id = hashlib.sha256(doc_name.encode()).hexdigest()
        mean = vectors[rows].mean(axis=0)
        docs.append(
            Document(
                id=doc_id,
                source=doc_name,
                title=doc_name,
                format="text",
                status=DocStatus.PROCESSING,
                summary=pairs[rows[0]][1],
                chunk_count=len(rows),
                summary_vector=mean / np.linalg.norm(mean),
            )
        )
        for ord_, i in enumerate(rows):
            text = pairs[i][1]
            order[f"{doc_id}:{ord_}"] = i
            chunks.append(
                Chunk(
                    id=f"{doc_id}:{ord_}",
                    doc_id=doc_id,
                    ord=ord_,
                    text=text,
                    hash=text_hash(text),
                    end=len(text),
                    metadata={"source": doc_name},
                    vector=vectors[i],
                )
            )
    start = time.perf_counter()
    for i in range(0, len(docs), 2_000):
        store.put_documents(kb, docs[i : i + 2_000])
    for i in range(0, len(chunks), 5_000):
        store.add_chunks(kb, chunks[i : i + 5_000])
    for i in range(0, len(docs), 2_000):
        store.publish_documents(kb, docs[i : i + 2_000])
    store.seal(kb)
    return time.perf_counter() - start, sorted(chunks, key=lambda c: order[c.id])


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2)}


def p50_ratio(ours: dict[str, float], theirs: dict[str, float]) -> float:
    return round(ours["p50"] / theirs["p50"], 2)


def run_queries(
    retriever: Retriever, kb: KnowledgeBase, embedder: Embedder, queries: list[str], options: SearchOptions
) -> dict[str, Any]:
    for q in queries[:5]:  # warm-up (lexical index load, first-call allocations)
        retriever.search(kb, embedder, q, options)
    stages: dict[str, list[float]] = {}
    totals = []
    for q in queries:
        start = time.perf_counter()
        result = retriever.search(kb, embedder, q, options)
        totals.append((time.perf_counter() - start) * 1000)
        for stage, ms in result.trace.timings_ms.items():
            stages.setdefault(stage, []).append(ms)
    return {"end_to_end_ms": percentiles(totals), "stages_ms": {s: percentiles(v) for s, v in stages.items()}}


def rerank_runs(
    retriever: Retriever,
    kb: KnowledgeBase,
    embedder: Embedder,
    queries: list[str],
    base: SearchOptions,
    chunks: list[Chunk],
    vectors: np.ndarray,
) -> dict[str, Any]:
    """Rerank of 20 candidates, three ways:
    - cold: nothing stored and the reranker's memory empty, so each query embeds its unseen candidates (and stores
      their vectors in the background, as the service does);
    - stored: a fresh reranker (a restarted process), every candidate's vector stored beside the chunks (by those
      searches here; the warmer does it for every chunk): a rerank embeds only its query;
    - warm: the cold retriever again, right after it: its memory holds every candidate.
    The warmer would take hours to embed 100k chunks on 2 CPU cores, so the rest of the vector table is filled
    with stand-ins (the chunks' own MiniLM vectors, the same size) to give it its full size; a check confirms that
    every candidate of the stored run read a real vector."""
    reranker = retriever.reranker
    assert isinstance(reranker, EmbeddingReranker)
    options = replace(base, rerank=True, rerank_candidates=20)
    cold = Retriever(retriever.store, retriever.lexical, EmbeddingReranker(reranker.embedder))
    out = {"rerank_20": run_queries(cold, kb, embedder, queries, options)}
    out["rerank_20_warm"] = run_queries(cold, kb, embedder, queries, options)
    cold.close()  # waits until every vector the cold run computed is stored
    store, space = retriever.store, reranker.space
    real: set[str] = set()
    for i in range(0, len(chunks), 5_000):
        real.update(store.rerank_vectors(kb, space, [c.id for c in chunks[i : i + 5_000]]))
    stand_ins = [i for i, c in enumerate(chunks) if c.id not in real]
    for i in range(0, len(stand_ins), 5_000):
        part = stand_ins[i : i + 5_000]
        store.put_rerank_vectors(kb, space, [chunks[j] for j in part], vectors[part])
    fresh = EmbeddingReranker(reranker.embedder)
    stored = Retriever(store, retriever.lexical, fresh)
    out["rerank_20_stored"] = run_queries(stored, kb, embedder, queries, options)
    read = {
        h.chunk.id for q in queries for h in stored.search(kb, embedder, q, replace(options, trace=True)).trace.reranked
    }
    out["rerank_20_stored"]["check"] = {
        "candidates": len(read),
        "read_a_real_vector": len(read & real),
        "embedded_at_query_time": sum(fresh.has(c.text) for c in chunks if c.id in read),
    }
    return out


def http_qps(settings: Settings, kb: str, queries: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads, each posting searches back to back for ``seconds``, to one server on loopback."""
    with live_server(settings) as (url, _app):
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def client(offset: int) -> None:
            nonlocal errors
            with httpx.Client(base_url=url, timeout=60) as http:
                i = offset
                while time.monotonic() < stop:
                    start = time.perf_counter()
                    r = http.post(f"/v1/knowledge-bases/{kb}/search", json={"query": queries[i % len(queries)]})
                    with lock:
                        latencies.append((time.perf_counter() - start) * 1000)
                        errors += r.status_code != 200
                    i += clients

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "qps": round(len(latencies) / elapsed, 1),
        "latency_ms": percentiles(latencies),
    }


def milvus_index_types(pairs: list[tuple[str, str]], vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Dense chunk search alone per Milvus Lite index type, on the same data, loaded once and then reopened twice:
    with Milvus Lite's own code (``KB_MILVUS_LITE_SPEEDUPS=false``), then with our engine speedups (the default)."""
    out: dict[str, Any] = {}
    for index_type in ("FLAT", "IVF_FLAT", "HNSW"):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), backend="milvus", milvus_index_type=index_type)
            row: dict[str, Any] = {}
            try:
                store = open_store(settings)
                try:
                    kb = Catalog(store, EmbedderPool(settings)).create("idx")
                    row["load_s"] = round(bulk_load(store, kb, pairs, vectors)[0], 1)
                finally:
                    store.close()
                engine = settings.with_changes(milvus_lite_speedups=False)
                row["engine_code_search_ms"] = dense_search_ms(engine, queries)
                row["search_ms"] = dense_search_ms(settings, queries)
                row["ours_over_engine_code_p50"] = round(
                    row["search_ms"]["p50"] / row["engine_code_search_ms"]["p50"], 3
                )
            except Exception as exc:  # an index type this Milvus Lite does not support
                row["error"] = str(exc)[:200]
            out[index_type] = row
    return out


def dense_search_ms(settings: Settings, queries: np.ndarray) -> dict[str, float]:
    """Open the store on ``settings`` and time one dense chunk search (top 50) per query in its KB 'idx'."""
    store = open_store(settings)
    try:
        kb = store.get_kb("idx")
        store.search_chunks(kb, queries[:1], top_k=50)
        times = []
        for qv in queries:
            start = time.perf_counter()
            store.search_chunks(kb, qv[None, :], top_k=50)
            times.append((time.perf_counter() - start) * 1000)
        return percentiles(times)
    finally:
        store.close()


def llamaindex_queries(pairs: list[tuple[str, str]], vectors: np.ndarray, queries: list[str], model: Any) -> dict:
    """The same chunks and vectors in a LlamaIndex VectorStoreIndex over Milvus Lite, queried through its
    retriever (query embedding by HuggingFaceEmbedding on the same model + Milvus dense top-10)."""
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.milvus import MilvusVectorStore

    with tempfile.TemporaryDirectory() as tmp:
        embed = HuggingFaceEmbedding(model_name=resolve_model_path(model.name), device="cpu")
        store = MilvusVectorStore(uri=str(Path(tmp) / "li.db"), dim=vectors.shape[1], overwrite=True)
        nodes = [
            TextNode(text=text, embedding=vectors[i].tolist(), metadata={"source": doc})
            for i, (doc, text) in enumerate(pairs)
        ]
        index = VectorStoreIndex(
            nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
        )
        retriever = index.as_retriever(similarity_top_k=10)
        for q in queries[:5]:
            retriever.retrieve(q)
        times = []
        for q in queries:
            start = time.perf_counter()
            retriever.retrieve(q)
            times.append((time.perf_counter() - start) * 1000)
        store.client.close()
    return {"end_to_end_ms": percentiles(times)}


def torch_query_embedder(embedders: EmbedderPool) -> Embedder | None:
    """The configured model with PyTorch embedding its queries, where the default embedder uses ONNX Runtime."""
    if getattr(embedders.get(), "onnx_queries", None) is None:
        return None
    configured = embedders.settings
    return SentenceTransformerEmbedder(
        configured.embedding.model, cpu_bf16=configured.embedding.cpu_bf16, query_runtime="torch"
    )


def bench_size(
    n: int,
    args: argparse.Namespace,
    queries: list[str],
    embedders: EmbedderPool,
    torch_queries: Embedder | None,
) -> dict[str, Any]:
    embedder = embedders.get()
    pairs = real_texts(n)
    started = time.perf_counter()
    vectors = cached_vectors([t for _, t in pairs], embedder, args.cache)
    out: dict[str, Any] = {
        "chunks": len(pairs),
        "documents": len({d for d, _ in pairs}),
        "embed_or_cache_s": round(time.perf_counter() - started, 1),
        "stores": {},
    }
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), backend=backend, rerank_backend="embedding")
            store = open_store(settings)
            try:
                kb = Catalog(store, embedders).create("bench")
                load_s, chunks = bulk_load(store, kb, pairs, vectors)
                retriever = build_retriever(settings, store, embedders)
                start = time.perf_counter()
                retriever.lexical.get(kb)
                lexical_s = time.perf_counter() - start
                base = SearchOptions.from_settings(settings, top_k=10)
                row: dict[str, Any] = {"load_s": round(load_s, 1), "lexical_index_build_s": round(lexical_s, 1)}
                row["no_rerank"] = run_queries(retriever, kb, embedder, queries, replace(base, rerank=False))
                if torch_queries is not None:  # the same searches with PyTorch embedding the queries, right after
                    torch_row = run_queries(retriever, kb, torch_queries, queries, replace(base, rerank=False))
                    row["no_rerank_torch_queries"] = torch_row
                    row["onnx_over_torch_queries_p50"] = {
                        "end_to_end": p50_ratio(row["no_rerank"]["end_to_end_ms"], torch_row["end_to_end_ms"]),
                        "embed_stage": p50_ratio(
                            row["no_rerank"]["stages_ms"]["embed"], torch_row["stages_ms"]["embed"]
                        ),
                    }
                row["dense_only"] = run_queries(
                    retriever, kb, embedder, queries, replace(base, rerank=False, gate=False, mode="dense")
                )
                if not args.no_rerank:
                    row.update(rerank_runs(retriever, kb, embedder, queries, base, chunks, vectors))
                if args.http_seconds > 0:
                    row["http"] = http_qps(
                        settings.with_changes(rerank_backend="none"),
                        "bench",
                        queries,
                        args.clients,
                        args.http_seconds,
                    )
                out["stores"][backend] = row
            finally:
                store.close()
    qvs = embedder.embed_queries(queries)
    if "milvus" in args.backends and args.index_types:
        out["milvus_index_types"] = milvus_index_types(pairs, vectors, qvs)
    if args.llamaindex:
        ours = out["stores"].get("milvus", {}).get("dense_only", {}).get("end_to_end_ms")
        # On the model thread, like our own model calls: LlamaIndex's torch calls get the same single OpenMP team.
        theirs = MODEL_THREAD.call(lambda: llamaindex_queries(pairs, vectors, queries, embedder))
        out["llamaindex"] = theirs
        if ours:
            out["llamaindex"]["our_dense_over_theirs_p50"] = round(ours["p50"] / theirs["end_to_end_ms"]["p50"], 2)
            full = out["stores"]["milvus"]["no_rerank"]["end_to_end_ms"]["p50"]
            out["llamaindex"]["our_full_pipeline_over_theirs_p50"] = round(full / theirs["end_to_end_ms"]["p50"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2k chunks, 50 queries, 3 s of HTTP load")
    size.add_argument("--full", action="store_true", help="10k and 100k chunks")
    parser.add_argument("--sizes", type=int, nargs="+", help="chunk counts (overrides --quick/--full)")
    parser.add_argument("--backends", nargs="+", default=["milvus", "pgvector"])
    parser.add_argument("--queries", type=int, default=200, help="SciFact dev queries per configuration")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--no-rerank", action="store_true")
    parser.add_argument("--no-index-types", dest="index_types", action="store_false")
    parser.add_argument("--no-llamaindex", dest="llamaindex", action="store_false")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "kb-bench")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    if not (SHARED / "scifact-dev" / "corpus.jsonl").is_file():
        sys.exit(f"shared data not found under {SHARED}")
    sizes = args.sizes or ([2_000] if args.quick else [10_000, 100_000] if args.full else [10_000])
    n_queries = 50 if args.quick else args.queries
    if args.quick:
        args.http_seconds = min(args.http_seconds, 3.0)
    queries = [json.loads(line)["text"] for line in (SHARED / "scifact-dev" / "queries.jsonl").open()][:n_queries]
    import torch

    embedders = EmbedderPool(Settings())
    torch_queries = torch_query_embedder(embedders)  # loaded once for every size
    report: dict[str, Any] = {
        "machine": {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "cpus": os.cpu_count()},
        "model": embedders.get().info.name,
        "queries": len(queries),
        "sizes": [bench_size(n, args, queries, embedders, torch_queries) for n in sizes],
    }
    print(json.dumps(report, indent=2))
    if not args.json:
        print(f"\n{'chunks':>8} {'store':9} {'config':16} {'p50 ms':>8} {'p95 ms':>8}")
        for s in report["sizes"]:
            for backend, row in s["stores"].items():
                for config in ("dense_only", "no_rerank", "rerank_20", "rerank_20_stored", "rerank_20_warm"):
                    if config in row:
                        e = row[config]["end_to_end_ms"]
                        print(f"{s['chunks']:8} {backend:9} {config:16} {e['p50']:8.1f} {e['p95']:8.1f}")


if __name__ == "__main__":
    main()
