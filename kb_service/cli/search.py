"""``kb search`` and ``kb eval``: query a knowledge base; measure retrieval quality on a labelled dataset."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kb_service.api.schemas import ChunkHit, ReindexStatusPublic
from kb_service.cli.runtime import JsonOpt, emit_json, err_console, fail, out_console, reported, rt_from, table
from kb_service.client import ClientError
from kb_service.core.errors import KBError
from kb_service.evaluation import EvalReport, load_dataset


def search(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge base.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Results to return.")] = None,
    mode: Annotated[str | None, typer.Option(help="dense, lexical or hybrid.")] = None,
    gate: Annotated[bool | None, typer.Option("--gate/--no-gate", help="Two-stage document gate.")] = None,
    rerank: Annotated[bool | None, typer.Option("--rerank/--no-rerank", help="Rerank the top candidates.")] = None,
    hops: Annotated[
        int | None, typer.Option(min=1, help="Multi-hop: rounds that follow the entities the best passages name.")
    ] = None,
    filters: Annotated[str | None, typer.Option(help='JSON object, e.g. \'{"source": "a.pdf"}\'.')] = None,
    refine: Annotated[
        list[str] | None,
        typer.Option(
            "--refine", help="Query refinement (repeatable): keywords (no LLM), multi_query, hyde, decompose."
        ),
    ] = None,
    trace: Annotated[bool, typer.Option("--trace", help="Show gated documents, candidates and timings.")] = False,
    also: Annotated[
        list[str] | None,
        typer.Option("--also", help="Search this knowledge base too (repeatable): one merged ranking, routed."),
    ] = None,
    route: Annotated[
        bool | None, typer.Option("--route/--no-route", help="With --also: search only the best-fitting ones.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a knowledge base (or several, with --also): ranked chunks with scores and provenance."""
    rt = rt_from(ctx, as_json)
    try:
        parsed = json.loads(filters) if filters else None
    except json.JSONDecodeError as exc:
        fail(f"--filters is not valid JSON: {exc}", as_json=as_json)
    options = {
        "top_k": top_k,
        "mode": mode,
        "gate": gate,
        "rerank": rerank,
        "hops": hops,
        "filters": parsed,
        "refine": refine,
        "trace": trace,
        "route": route if also else None,
    }
    with reported(as_json=as_json):
        target = [kb, *also] if also else kb
        result = rt.client.search(target, query, **{k: v for k, v in options.items() if v is not None})
    if as_json:
        emit_json(result.model_dump())  # POST /v1/knowledge-bases/{kb}/search, or /v1/search with --also
        return
    table(
        f"{len(result.hits)} results for {query!r}",
        ["#", "score", "source", "page", "section", "text"]
        if not also
        else ["#", "score", "kb", "source", "page", "section", "text"],
        [
            [
                i,
                f"{h.score:.4f}",
                *([escape(h.knowledge_base)] if also else []),
                escape(h.source),
                h.page or "",
                escape(h.section or ""),
                escape(_snippet(h.text)),
            ]
            for i, h in enumerate(result.hits, start=1)
        ],
    )
    if result.trace is not None:
        t = result.trace
        table(
            "gate",
            ["#", "score", "source", "title"],
            [[i, f"{d.score:.4f}", escape(d.source), escape(d.title)] for i, d in enumerate(t.gated, start=1)],
        )
        if t.routes:
            table(
                "router",
                ["#", "score", "knowledge base", "searched"],
                [
                    [
                        i,
                        "–" if r.score is None else f"{r.score:.4f}",
                        escape(r.knowledge_base),
                        "yes" if r.searched else "",
                    ]
                    for i, r in enumerate(t.routes, start=1)
                ],
            )
        for n, hop in enumerate(t.hops, start=1):
            _print_queries(f"hop {n}", hop.queries, hop.hits)
        for r in t.refinements:
            _print_queries(r.kind, r.queries, r.hits)
        out_console.print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in t.timings_ms.items()))


def _print_queries(label: str, queries: list[str], hits: list[list[ChunkHit]]) -> None:
    """One line: each query searched and the source of its best hit."""
    found = [escape(found[0].source) if found else "–" for found in hits]
    out_console.print(f"{label}: " + "; ".join(f"{escape(q)!r} → {f}" for q, f in zip(queries, found, strict=True)))


def _snippet(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluate_cmd(
    ctx: typer.Context,
    dataset_path: Annotated[Path, typer.Argument(help="BEIR folder or SQuAD-style JSON (CMRC 2018).")],
    split: Annotated[str, typer.Option(help="qrels split of a BEIR folder.")] = "test",
    output: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    max_queries: Annotated[int | None, typer.Option(help="Evaluate only the first N queries.")] = None,
    embedding_model: Annotated[str | None, typer.Option(help="Model of the evaluation knowledge base.")] = None,
    configs: Annotated[str | None, typer.Option(help="Comma-separated configurations (default: all).")] = None,
    warm_rerank: Annotated[
        bool, typer.Option(help="Embed every chunk with an embedding reranker first (cached on disk).")
    ] = True,
    compare_reindex: Annotated[
        str | None,
        typer.Option(
            help="Also re-index the evaluation knowledge base with this model (built beside, not switched to) and "
            "report both indexes side by side."
        ),
    ] = None,
    reindex_chunk_size: Annotated[
        int | None, typer.Option(min=16, help="With --compare-reindex: re-chunk to this many tokens.")
    ] = None,
    reindex_chunk_overlap: Annotated[
        int | None, typer.Option(min=0, help="With --compare-reindex: re-chunk with this overlap.")
    ] = None,
) -> None:
    """Ingest a labelled corpus (cached) and report nDCG@10, recall@k, MRR@10, gate recall and latency per
    configuration: dense, lexical, hybrid, two-stage, two-stage + rerank, the default pipeline. With
    --compare-reindex, the same for a re-index of it with another model, and the difference."""
    rt = rt_from(ctx, False)
    if not dataset_path.exists():
        fail(f"no such dataset: {dataset_path}", as_json=False)
    chosen = [c.strip() for c in configs.split(",")] if configs else None
    if compare_reindex is not None:
        try:
            dataset = load_dataset(dataset_path, split).limit(max_queries)
            current, reindexed, status = rt.client.compare_reindex(
                dataset,
                compare_reindex,
                chunk_size=reindex_chunk_size,
                chunk_overlap=reindex_chunk_overlap,
                configs=chosen,
                embedding_model=embedding_model,
                warm_rerank=warm_rerank,
                progress=progress_bar,
            )
        except ClientError as exc:
            fail(exc.message, as_json=False)
        except (KBError, ValueError, RuntimeError) as exc:
            fail(str(exc), as_json=False)
        _print_comparison(current, reindexed, status)
        if output:
            payload = {"current": current.to_json(), "reindexed": reindexed.to_json(), "reindex": status.model_dump()}
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            out_console.print(f"report written to {output}")
        return
    try:
        dataset = load_dataset(dataset_path, split).limit(max_queries)
        report = rt.client.evaluate(
            dataset,
            embedding_model=embedding_model,
            configs=chosen,
            warm_rerank=warm_rerank,
            progress=progress_bar,
        )
    except (KBError, ValueError, RuntimeError) as exc:
        fail(str(exc), as_json=False)
    report.info["split"] = split
    if report.info["cached_kb"]:
        err_console.print(f"used the cached knowledge base {report.info['knowledge_base']!r}")
    _print_report(report)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        out_console.print(f"report written to {output}")


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # piped or captured: no bars, and no blank lines where they were
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def _print_comparison(current: EvalReport, reindexed: EvalReport, status: ReindexStatusPublic) -> None:
    """Both reports, then each measure's difference (new minus current) per configuration."""
    for title, report in (("current index", current), ("re-indexed", reindexed)):
        out_console.print(f"[bold]{title}[/bold]: {report.info['embedding_model']}")
        _print_report(report)
    delta = reindexed.summary - current.summary
    table(
        f"re-indexed minus current ({current.info['embedding_model']} → {reindexed.info['embedding_model']})",
        ["config", *delta.columns],
        [[name, *(f"{v:+.4f}" if v == v else "-" for v in row)] for name, row in delta.iterrows()],
    )
    out_console.print(
        f"re-index: {status.state} in {status.seconds:.1f}s ({status.copied} documents embedded now, {status.kept} "
        f"built before); the first ingest took {current.ingest_seconds:.1f}s (0 when cached). Switch with "
        f"`kb reindex {current.info['knowledge_base']!r} --embedding-model {status.embedding_model}`"
    )


def _print_report(report: EvalReport) -> None:
    summary = report.summary
    table(
        f"{report.dataset}: {report.n_queries} queries, {report.n_documents} documents, {report.n_chunks} chunks "
        f"({report.backend})",
        ["config", *summary.columns],
        [[name, *(f"{v:.4f}" if v == v else "-" for v in row)] for name, row in summary.iterrows()],
    )
    out_console.print(
        f"query embedding: {report.info.get('query_embedding_ms_per_query', 0):.1f} ms/query (all queries in one "
        "batch; the per-query 'embed' stage below then reads the precomputed vectors)"
    )
    lat = report.latency
    totals = lat[lat.stage == "total"].set_index("config")
    table("latency (ms)", ["config", "p50", "p95"], [[c, f"{r.p50:.1f}", f"{r.p95:.1f}"] for c, r in totals.iterrows()])
