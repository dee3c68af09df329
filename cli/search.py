"""``kb search`` and ``kb eval``: query a knowledge base; measure retrieval quality on a labelled dataset."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.runtime import JsonOpt, Runtime, emit_json, err_console, fail, out_console, rt_from, table
from core.errors import KBError
from ingest.pipeline import Ingestor, Outcome
from retrieval.evaluate import (
    EvalDataset,
    EvalReport,
    cached_kb_ready,
    default_configs,
    eval_kb_name,
    evaluate,
    load_dataset,
)
from retrieval.pipeline import SearchOptions, SearchResult
from retrieval.rerank import EmbeddingReranker


def search(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge base.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Results to return.")] = None,
    mode: Annotated[str | None, typer.Option(help="dense, lexical or hybrid.")] = None,
    gate: Annotated[bool | None, typer.Option("--gate/--no-gate", help="Two-stage document gate.")] = None,
    rerank: Annotated[bool | None, typer.Option("--rerank/--no-rerank", help="Rerank the top candidates.")] = None,
    filters: Annotated[str | None, typer.Option(help='JSON object, e.g. \'{"source": "a.pdf"}\'.')] = None,
    trace: Annotated[bool, typer.Option("--trace", help="Show gated documents, candidates and timings.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search a knowledge base: ranked chunks with scores and provenance."""
    rt = rt_from(ctx, as_json)
    try:
        parsed = json.loads(filters) if filters else None
    except json.JSONDecodeError as exc:
        fail(f"--filters is not valid JSON: {exc}", as_json=as_json)
    try:
        knowledge_base, embedder = rt.catalog.open(kb)
        options = SearchOptions.from_settings(
            rt.settings, top_k=top_k, mode=mode, gate=gate, rerank=rerank, filters=parsed, trace=trace
        )
        result = rt.retriever.search(knowledge_base, embedder, query, options)
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(result_json(result, trace=trace))
        return
    table(
        f"{len(result.hits)} results for {query!r}",
        ["#", "score", "source", "page", "section", "text"],
        [
            [
                i,
                f"{h.score:.4f}",
                escape(h.chunk.metadata.get("source", "")),
                h.chunk.page or "",
                escape(h.chunk.section or ""),
                escape(_snippet(h.chunk.text)),
            ]
            for i, h in enumerate(result.hits, start=1)
        ],
    )
    if trace:
        t = result.trace
        table(
            "gate",
            ["#", "score", "source", "title"],
            [
                [i, f"{d.score:.4f}", escape(d.document.source), escape(d.document.title)]
                for i, d in enumerate(t.gated, start=1)
            ],
        )
        out_console.print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.timings_ms.items()))


def _snippet(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_json(result: SearchResult, *, trace: bool) -> dict[str, Any]:
    def hit(h: Any) -> dict[str, Any]:
        c = h.chunk
        return {
            "score": h.score,
            "stages": h.stages,
            "doc_id": c.doc_id,
            "chunk_id": c.id,
            "source": c.metadata.get("source", ""),
            "title": c.metadata.get("title", ""),
            "page": c.page,
            "section": c.section,
            "start": c.start,
            "end": c.end,
            "text": c.text,
        }

    out: dict[str, Any] = {"query": result.query, "hits": [hit(h) for h in result.hits]}
    if trace:
        t = result.trace
        out["trace"] = {
            "gated": [{"doc_id": d.document.id, "source": d.document.source, "score": d.score} for d in t.gated],
            "candidates": [hit(h) for h in t.candidates],
            "reranked": [hit(h) for h in t.reranked],
            "timings_ms": t.timings_ms,
        }
    return out


def evaluate_cmd(
    ctx: typer.Context,
    dataset_path: Annotated[Path, typer.Argument(help="BEIR folder or SQuAD-style JSON (CMRC 2018).")],
    split: Annotated[str, typer.Option(help="qrels split of a BEIR folder.")] = "test",
    output: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    max_queries: Annotated[int | None, typer.Option(help="Evaluate only the first N queries.")] = None,
    embedding_model: Annotated[str | None, typer.Option(help="Model of the evaluation knowledge base.")] = None,
    configs: Annotated[str | None, typer.Option(help="Comma-separated configurations (default: all).")] = None,
) -> None:
    """Ingest a labelled corpus (cached) and report nDCG@10, recall@k, MRR@10, gate recall and latency per
    configuration: dense, lexical, hybrid, two-stage, two-stage + rerank, the default pipeline."""
    rt = rt_from(ctx, False)
    if not dataset_path.exists():
        fail(f"no such dataset: {dataset_path}", as_json=False)
    try:
        dataset = load_dataset(dataset_path, split).limit(max_queries)
        kb, embedder, ingest_seconds = _eval_kb(rt, dataset, embedding_model)
        retriever = rt.retriever
        _warm_reranker(rt, kb)
        chosen = default_configs(SearchOptions.from_settings(rt.settings), has_reranker=retriever.reranker is not None)
        if configs:
            names = [c.strip() for c in configs.split(",")]
            unknown = [n for n in names if n not in chosen]
            if unknown:
                fail(f"unknown configuration(s) {unknown}; choose from {list(chosen)}", as_json=False)
            chosen = {n: chosen[n] for n in names}
        report = evaluate(retriever, kb, embedder, dataset, chosen, backend=rt.settings.backend, progress=_progress)
    except KBError as exc:
        fail(str(exc), as_json=False)
    report.ingest_seconds = ingest_seconds
    report.info.update(
        {
            "embedding_model": kb.embedding.name,
            "reranker": getattr(retriever.reranker, "name", None),
            "split": split,
        }
    )
    _print_report(report)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        out_console.print(f"report written to {output}")


def _eval_kb(rt: Runtime, dataset: EvalDataset, embedding_model: str | None) -> tuple[Any, Any, float]:
    model = embedding_model or rt.settings.embedding_model
    name = eval_kb_name(dataset, model, f"{rt.settings.chunk_size}/{rt.settings.chunk_overlap}")
    kb = cached_kb_ready(rt.store, name, dataset.unique_documents)
    if kb is not None:
        err_console.print(f"using cached knowledge base {name!r}")
        return kb, rt.catalog.open(name)[1], 0.0
    kb, _ = rt.catalog.get_or_create(name, embedding_model=model)
    _, embedder = rt.catalog.open(name)
    ingestor = Ingestor.from_settings(rt.settings, store=rt.store, kb=kb, embedder=embedder)
    items = list(dataset.corpus.values())
    started = time.perf_counter()
    with _bar("ingest", len(items)) as (progress, task):
        results = ingestor.ingest(items, on_result=lambda _r: progress.advance(task))
    failed = [r for r in results if r.outcome == Outcome.FAILED]
    if failed:
        err_console.print(
            f"{len(failed)} corpus documents failed to ingest, e.g. {failed[0].source}: {failed[0].error}"
        )
    return kb, embedder, time.perf_counter() - started


def _warm_reranker(rt: Runtime, kb: Any) -> None:
    """Embed every chunk with the reranking model once, in large batches, and keep the vectors on disk: the
    evaluation then measures reranking on warm caches, as a long-running service would see them."""
    reranker = rt.retriever.reranker
    if not isinstance(reranker, EmbeddingReranker):
        return
    cache = rt.settings.data_dir / "cache" / "rerank" / f"{reranker.embedder.info.fingerprint}-{kb.key}.npz"
    reranker.load_cache(cache)
    texts = [c.text for batch in rt.store.iter_chunks(kb) for c in batch]
    missing = [t for t in texts if not reranker.has(t)]
    if not missing:
        return
    with _bar("rerank cache", len(missing)) as (progress, task):
        for i in range(0, len(missing), 256):
            reranker.passage_vectors(missing[i : i + 256])
            progress.advance(task, len(missing[i : i + 256]))
    reranker.save_cache(cache)


def _bar(label: str, total: int) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def cm() -> Any:
        with Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            yield progress, progress.add_task(label, total=total)

    return cm()


def _progress(name: str) -> Callable[[Iterable[Any]], Iterable[Any]]:
    def wrap(items: Iterable[Any]) -> Iterable[Any]:
        items = list(items)
        with _bar(name, len(items)) as (progress, task):
            for item in items:
                yield item
                progress.advance(task)

    return wrap


def _print_report(report: EvalReport) -> None:
    summary = report.summary
    table(
        f"{report.dataset}: {report.n_queries} queries, {report.n_documents} documents, {report.n_chunks} chunks "
        f"({report.backend})",
        ["config", *summary.columns],
        [[name, *(f"{v:.4f}" if v == v else "-" for v in row)] for name, row in summary.iterrows()],
    )
    lat = report.latency
    totals = lat[lat.stage == "total"].set_index("config")
    table("latency (ms)", ["config", "p50", "p95"], [[c, f"{r.p50:.1f}", f"{r.p95:.1f}"] for c, r in totals.iterrows()])
