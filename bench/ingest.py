"""Ingestion throughput: the full pipeline (parse → chunk → summarise → embed → store) on each store, next to
the raw ``SentenceTransformer.encode`` rate on the same chunk texts, measured in the same run:
- ``ratio_to_raw``: pipeline chunks/s ÷ raw encode chunks/s (same model object, device and precision);
- ``model_time_share``: raw encode time of every text the pipeline embeds (chunks and summaries) ÷ pipeline time,
  i.e. 1 − the pipeline's overhead beyond the model;
- ``ratio_to_raw_fp32`` (when the pipeline runs in bf16/fp16): against a plainly loaded fp32 SentenceTransformer;
- ``rerank_vectors`` (``--rerank-vectors``): the background warmer storing the e5 reranker's vector of every
  ingested chunk, against that model's raw encode of the same texts.

    python bench/ingest.py --json              # SciFact dev corpus (5,183 abstracts), both stores
    python bench/ingest.py --quick --json      # first 300 abstracts: a smoke test
    python bench/ingest.py --documents --json  # real files: pages/s for text PDFs and scans, parse in processes

``--documents`` ingests the SEC filings of the shared data (text PDFs) and image-only copies of two of them (scans,
read by OCR) through the whole pipeline, once with parsing in the ingesting process and once in worker processes
(``KB_PARSE_WORKERS``), and reports pages/s next to the parse stage alone and the embedding model alone on the same
chunks: which stage bounds ingestion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kb_service.catalog import Catalog  # noqa: E402
from kb_service.core.config import Settings  # noqa: E402
from kb_service.core.records import KnowledgeBase, text_hash  # noqa: E402
from kb_service.embeddings import EmbedderPool  # noqa: E402
from kb_service.embeddings.runner import MODEL_THREAD  # noqa: E402
from kb_service.embeddings.sentence import embedding_dimension, resolve_model_path  # noqa: E402
from kb_service.ingest.parse_pool import shared_pool  # noqa: E402
from kb_service.ingest.pipeline import Ingestor, Outcome  # noqa: E402
from kb_service.ingest.sources import SourceItem  # noqa: E402
from kb_service.retrieval.rerank import EmbeddingReranker  # noqa: E402
from kb_service.retrieval.rerank_warmer import RerankWarmer  # noqa: E402
from kb_service.stores.base import VectorStore  # noqa: E402
from kb_service.stores.factory import open_store  # noqa: E402
from kb_service.stores.originals import Originals  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_CORPUS = SHARED_DATA / "scifact-dev" / "corpus.jsonl"
FILINGS = SHARED_DATA / "filings"
SCANNED = ["MCDONALDS_2023Q1_EARNINGS.pdf", "EBAY_2023Q1_EARNINGS.pdf"]
QUICK_FILES = ["MCDONALDS_2023Q1_EARNINGS.pdf"]


def load_corpus(path: Path, limit: int | None) -> list[SourceItem]:
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text = f"{row.get('title', '')}\n\n{row['text']}".strip()
            items.append(SourceItem(name=str(row["_id"]), text=text, title=row.get("title") or None))
            if limit and len(items) >= limit:
                break
    return items


def run_pipeline(
    backend: str, items: list[SourceItem], settings_kw: dict, *, rerank_vectors: bool = False, parse_again: bool = True
) -> dict:
    """One timed ingest into a fresh store (originals kept, as the service does). After it, the chunk texts and
    what the model embedded are recomputed by parsing again (``parse_again``), else read back from the store."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), backend=backend, **settings_kw)
        store = open_store(settings)
        pool = EmbedderPool(settings)
        catalog = Catalog(store, pool, Originals(Path(tmp) / "originals"))
        kb = catalog.create("bench")
        _, embedder = catalog.open("bench")
        ingestor = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder, originals=catalog.originals)
        start = time.perf_counter()
        results = ingestor.ingest(items)
        seconds = time.perf_counter() - start
        chunks = store.count_chunks(kb)
        ready = sum(r.outcome == Outcome.ADDED for r in results)
        if parse_again:
            texts, model_texts = model_work(ingestor, items, settings.ingest.summary_vector)
        else:
            texts = model_texts = [c.text for batch in store.iter_chunks(kb) for c in batch]
        warmed = warm_rerank_vectors(store, kb, pool.get(settings.rerank.model)) if rerank_vectors else None
        store.close()
    return {
        **({"rerank_vectors": warmed} if warmed else {}),
        "backend": backend,
        "seconds": seconds,
        "docs": ready,
        "chunks": chunks,
        "docs_per_s": ready / seconds,
        "chunks_per_s": chunks / seconds,
        "_texts": texts,
        "_model_texts": model_texts,
    }


def warm_rerank_vectors(store: VectorStore, kb: KnowledgeBase, reranker_model: Any) -> dict:
    """After the ingest: the time the service's background warmer needs to store the embedding reranker's vector
    of every chunk (without waiting for idle models), against that model's raw encode of the same texts."""
    warmer = RerankWarmer(store, EmbeddingReranker(reranker_model))
    start = time.perf_counter()
    stored = warmer.warm(kb, wait_idle=False)
    seconds = time.perf_counter() - start
    texts = [c.text for batch in store.iter_chunks(kb) for c in batch]
    model = reranker_model.model
    prompt = reranker_model.document_prompt
    start = time.perf_counter()
    MODEL_THREAD.call(
        lambda: model.encode(texts, batch_size=warmer.batch_size, prompt_name=prompt, show_progress_bar=False)
    )
    raw = time.perf_counter() - start
    return {
        "model": reranker_model.info.name,
        "chunks": stored,
        "seconds": seconds,
        "chunks_per_s": stored / seconds,
        "raw_chunks_per_s": len(texts) / raw,
        "ratio_to_raw": raw / seconds,
    }


def model_work(ingestor: Ingestor, items: list[SourceItem], summary_vector: str) -> tuple[list[str], list[str]]:
    """The chunk texts, and every distinct text the pipeline gave the model (chunks, plus each summary that is
    embedded: a one-chunk document's summary is its chunk), recomputed after the timed run."""
    texts: list[str] = []
    embedded: dict[str, str] = {}
    for item in items:
        parsed = item.parse()
        chunks = ingestor.chunker.split(parsed, "x")
        texts += [c.text for c in chunks]
        summaries = [ingestor.summarizer.summarize(parsed, chunks)] if summary_vector == "embed" or not chunks else []
        embedded.update((text_hash(t), t) for t in [c.text for c in chunks] + summaries)
    return texts, list(embedded.values())


def raw_encode(texts: list[str], model: Any, batch_size: int) -> dict:
    """``SentenceTransformer.encode`` alone on ``texts``, in one call (on the process's model thread, where the
    pipeline's own calls run: a second thread calling torch would slow both down)."""
    start = time.perf_counter()
    MODEL_THREAD.call(
        lambda: model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "chunks": len(texts), "chunks_per_s": len(texts) / seconds, "dtype": str(model.dtype)}


def plain_model(settings: Settings) -> Any:
    """The model as sentence-transformers loads it by default (fp32 on the CPU): what a user calling the library
    directly gets."""
    from sentence_transformers import SentenceTransformer

    return MODEL_THREAD.call(lambda: SentenceTransformer(resolve_model_path(settings.embedding.model), device="cpu"))


def llamaindex_ingest(items: list[SourceItem], settings: Settings, backend: str, batch_size: int | None) -> dict:
    """The same corpus through LlamaIndex: SentenceSplitter (same chunk size and overlap, same tokenizer),
    HuggingFaceEmbedding on the same local model (``batch_size``; None: LlamaIndex's default), into the same kind of
    store as ours: a Milvus Lite ``MilvusVectorStore``, or a ``PGVectorStore`` on its own embedded PostgreSQL (the
    same pgserver build)."""
    from llama_index.core import Document as LIDocument
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    path = resolve_model_path(settings.embedding.model)
    extra = {} if batch_size is None else {"embed_batch_size": batch_size}
    embed = HuggingFaceEmbedding(model_name=path, device="cpu", **extra)
    tokenizer = embed._model.tokenizer
    splitter = SentenceSplitter(
        chunk_size=settings.ingest.chunk_size,
        chunk_overlap=settings.ingest.chunk_overlap,
        tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False),
    )
    docs = [LIDocument(text=item.text or "", doc_id=item.name) for item in items]
    dim = embedding_dimension(embed._model)
    with tempfile.TemporaryDirectory() as tmp, llamaindex_store(backend, Path(tmp), dim) as (store, count):
        start = time.perf_counter()
        VectorStoreIndex.from_documents(
            docs,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed,
            transformations=[splitter],
        )
        seconds = time.perf_counter() - start
        chunks = count()
    return {
        "backend": backend,
        "embed_batch_size": embed.embed_batch_size,
        "seconds": seconds,
        "docs": len(docs),
        "chunks": chunks,
        "docs_per_s": len(docs) / seconds,
    }


@contextmanager
def llamaindex_store(backend: str, tmp: Path, dim: int) -> Iterator[tuple[Any, Callable[[], int]]]:
    """A LlamaIndex vector store of ``backend``'s kind under ``tmp``, and a function counting its rows."""
    if backend == "milvus":
        from llama_index.vector_stores.milvus import MilvusVectorStore

        store = MilvusVectorStore(uri=str(tmp / "li.db"), dim=dim, overwrite=True)

        def count() -> int:
            return len(store.client.query(store.collection_name, filter='id != ""', output_fields=["id"], limit=16_384))

        try:
            yield store, count
        finally:
            store.client.close()
        return
    import pgserver
    import psycopg
    from llama_index.vector_stores.postgres import PGVectorStore

    server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    try:
        socket_dir = str(tmp / "pg")
        store = PGVectorStore.from_params(
            connection_string=f"postgresql+psycopg2://postgres@/postgres?host={socket_dir}",
            async_connection_string=f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}",
            table_name="bench",
            embed_dim=dim,
        )

        def count() -> int:
            with psycopg.connect(server.get_uri()) as conn:
                return int(conn.execute("SELECT count(*) FROM data_bench").fetchone()[0])  # type: ignore[index]

        yield store, count
    finally:
        server.cleanup()


def documents(workers: list[int], *, quick: bool) -> dict:
    """Text PDFs and their scanned copies through the pipeline (Milvus Lite), for each parse-worker count, beside
    the parse stage alone (in this process) and the model alone on the same chunk texts."""
    from kb_service.evaluation.scans import image_pdf
    from kb_service.ingest.parsers import parse_bytes

    names = QUICK_FILES if quick else sorted(p.name for p in FILINGS.glob("*.pdf"))
    sets = {
        "text_pdf": [(name, (FILINGS / name).read_bytes()) for name in names],
        "scanned_pdf": [(name, image_pdf(FILINGS / name)) for name in (QUICK_FILES if quick else SCANNED)],
    }
    report: dict = {}
    for label, files in sets.items():
        started = time.perf_counter()
        parsed = [parse_bytes(data, name) for name, data in files]
        parse_s = time.perf_counter() - started
        pages = sum(int(p.metadata.get("pages", 1)) for p in parsed)
        entry: dict = {"files": len(files), "pages": pages, "parse_pages_per_s": round(pages / parse_s, 3)}
        for count in workers:
            if (pool := shared_pool(count)) is not None:
                pool.start()  # process start-up is paid once per service, not per upload: not timed
            items = [SourceItem(name, data=data) for name, data in files]
            run = run_pipeline("milvus", items, {"parse_workers": count, "rerank_backend": "none"}, parse_again=False)
            texts = run.pop("_texts")
            run.pop("_model_texts")
            entry[f"parse_workers_{count}"] = {
                "seconds": round(run["seconds"], 1),
                "pages_per_s": round(pages / run["seconds"], 3),
                "chunks": run["chunks"],
                "chunks_per_s": round(run["chunks_per_s"], 1),
            }
        embedder = EmbedderPool(Settings()).get()
        model = embedder.model  # type: ignore[attr-defined]
        raw = raw_encode(texts, model, embedder.batch_size)  # type: ignore[attr-defined]
        entry["embed_chunks_per_s"] = round(raw["chunks_per_s"], 1)
        entry["embed_pages_per_s"] = round(pages / raw["seconds"], 3)
        report[label] = entry
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl")
    parser.add_argument("--quick", action="store_true", help="first 300 documents only (unless --limit)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--backends", nargs="+", default=["milvus", "pgvector"])
    parser.add_argument("--summary-vector", choices=["embed", "chunk-mean"], default=None)
    parser.add_argument("--llamaindex", action="store_true", help="also ingest through LlamaIndex (same run)")
    parser.add_argument(
        "--rerank-vectors", action="store_true", help="also time the warmer storing the e5 reranker's vectors"
    )
    parser.add_argument("--documents", action="store_true", help="real files: text PDFs and scans (see above)")
    parser.add_argument("--parse-workers", type=int, nargs="+", default=[1, 2], help="with --documents")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    args = parser.parse_args()
    if args.documents:
        if not FILINGS.is_dir():
            sys.exit(f"filings not found: {FILINGS} (the shared evaluation data)")
        print(json.dumps({"threads": os.cpu_count(), **documents(args.parse_workers, quick=args.quick)}, indent=2))
        return
    if not args.corpus.is_file():
        sys.exit(f"corpus not found: {args.corpus} (the shared evaluation data)")
    items = load_corpus(args.corpus, args.limit if args.limit is not None else 300 if args.quick else None)
    settings = Settings()
    import torch

    report: dict = {
        "corpus": str(args.corpus),
        "documents": len(items),
        "device": settings.embedding.device,
        "cuda": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "model": settings.embedding.model,
        "cpu_bf16": settings.embedding.cpu_bf16,
        "runs": [],
    }
    texts: list[str] = []
    raws = []
    # The pipeline's own model object (same device and precision, so the ratio is the pipeline's overhead), and,
    # when that runs in reduced precision, a plainly loaded fp32 one; each loaded once for every backend.
    embedder = EmbedderPool(settings).get()
    model = embedder.model  # type: ignore[attr-defined]
    fp32 = plain_model(settings) if str(model.dtype) != "torch.float32" else None
    batch = report["batch_size"] = embedder.batch_size  # type: ignore[attr-defined]
    # Warm-up, untimed, so that the first store's run does not also pay for the process's first large forward
    # passes (memory the allocator has not handed out yet); the raw encodes and LlamaIndex all run after one.
    embedder.embed_documents([item.text or "" for item in items[:256]])
    for backend in args.backends:
        options = {"summary_vector": args.summary_vector} if args.summary_vector else {}
        run = run_pipeline(backend, items, options, rerank_vectors=args.rerank_vectors)
        texts, model_texts = run.pop("_texts"), run.pop("_model_texts")
        raw = raw_encode(texts, model, batch)  # measured right after, on the same chunk texts
        run["raw_encode_chunks_per_s"] = raw["chunks_per_s"]
        run["ratio_to_raw"] = run["chunks_per_s"] / raw["chunks_per_s"]
        # Model time for everything the pipeline embeds (summaries too) ÷ pipeline time: 1 - overhead share.
        work = raw_encode(model_texts, model, batch)
        run["model_texts"] = len(model_texts)
        run["model_seconds"] = work["seconds"]
        run["model_time_share"] = work["seconds"] / run["seconds"]
        raws.append(raw)
        if fp32 is not None:  # the pipeline runs in reduced precision: also against plain fp32
            plain = raw_encode(texts, fp32, batch)
            run["raw_fp32_chunks_per_s"] = plain["chunks_per_s"]
            run["ratio_to_raw_fp32"] = run["chunks_per_s"] / plain["chunks_per_s"]
            raws.append(plain)
        report["runs"].append(run)
    report["raw_encode"] = raws
    if args.llamaindex:  # LlamaIndex as it comes (its default batch) and with our batch size, on each store kind
        report["llamaindex"] = []
        for ours in report["runs"]:
            for batch_size in (None, batch):
                # On the model thread as well, so that LlamaIndex's torch calls get the same single OpenMP team.
                theirs = MODEL_THREAD.call(
                    lambda b=ours["backend"], size=batch_size: llamaindex_ingest(items, settings, b, size)
                )
                theirs["our_speedup"] = theirs["seconds"] / ours["seconds"]
                report["llamaindex"].append(theirs)
    print(json.dumps(report, indent=2))
    if not args.json:
        columns = ("docs/s", "chunks/s", "raw/s", "ratio", "vs fp32", "model share")
        print(f"\n{'backend':10} " + " ".join(f"{c:>11}" for c in columns))
        for r in report["runs"]:
            print(
                f"{r['backend']:10} {r['docs_per_s']:11.1f} {r['chunks_per_s']:11.1f} "
                f"{r['raw_encode_chunks_per_s']:11.1f} {r['ratio_to_raw']:11.2f} "
                f"{r.get('ratio_to_raw_fp32', 1.0):11.2f} {r['model_time_share']:11.2f}"
            )
        for li in report.get("llamaindex", []):
            print(
                f"LlamaIndex on {li['backend']}, batch {li['embed_batch_size']}: {li['seconds']:.1f} s, "
                f"{li['chunks']} chunks; ours {li['our_speedup']:.2f}× faster"
            )


if __name__ == "__main__":
    main()
