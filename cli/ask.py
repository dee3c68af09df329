"""``kb ask``: a grounded answer with numbered citations, streamed to the terminal or as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.runtime import JsonOpt, emit_json, err_console, fail, out_console, rt_from, table
from cli.search import progress_bar
from core.errors import KBError
from evaluation.answers import load_rgb, run_rgb
from generation.answer import Answer
from generation.factory import ask_options
from retrieval.pipeline import SearchOptions


def ask(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge base.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as the model writes it.")] = False,
    sources: Annotated[int | None, typer.Option(help="Retrieved chunks offered to the model.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length cap (tokens).")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy.")] = None,
    filters: Annotated[str | None, typer.Option(help='JSON object, e.g. \'{"source": "a.pdf"}\'.')] = None,
    history: Annotated[
        str | None, typer.Option(help='Earlier turns as JSON: [{"role": "user", "content": "..."}, ...].')
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from a knowledge base, citing its sources as [1], [2] …"""
    rt = rt_from(ctx, as_json)
    try:
        parsed_filters = json.loads(filters) if filters else None
        turns = json.loads(history) if history else []
    except json.JSONDecodeError as exc:
        fail(f"--filters / --history is not valid JSON: {exc}", as_json=as_json)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        fail("--history must be a JSON list of {role, content} objects", as_json=as_json)
    answer: Answer | None = None
    try:
        knowledge_base, embedder = rt.catalog.open(kb)
        options = ask_options(
            rt.settings,
            search=SearchOptions.from_settings(rt.settings, filters=parsed_filters),
            sources=sources,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        for event in rt.answerer.stream(knowledge_base, embedder, question, history=turns, options=options):
            if isinstance(event, Answer):
                answer = event
            elif stream and not as_json and event.content:
                sys.stdout.write(event.content)
                sys.stdout.flush()
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    assert answer is not None  # the answer stream always ends with one
    if as_json:
        emit_json(answer)
        return
    if stream:
        sys.stdout.write("\n")
    else:
        out_console.print(escape(answer.text), highlight=False)
    if answer.mode == "extractive":
        err_console.print(f"[yellow]extractive answer[/yellow] (no model answered: {escape(answer.llm_error)})")
    if answer.citations:
        out_console.print("\n[bold]Sources[/bold]")
        for c in answer.citations:
            where = ", ".join(str(p) for p in (c.source, f"p. {c.page}" if c.page else "", c.section) if p)
            out_console.print(f"[{c.number}] {escape(where)}: “{escape(c.snippet)}”", highlight=False)
    if answer.invalid_citations:
        err_console.print(f"dropped citations to sources that do not exist: {answer.invalid_citations}")


def eval_answers(
    ctx: typer.Context,
    dataset_path: Annotated[Path, typer.Argument(help="RGB JSON-lines file (e.g. zh_refine.json) or its folder.")],
    output: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    max_questions: Annotated[int | None, typer.Option(help="Evaluate only the first N questions.")] = None,
    embedding_model: Annotated[
        str, typer.Option(help="Embedding model of the per-question knowledge bases.")
    ] = "intfloat/multilingual-e5-small",
    max_tokens: Annotated[int | None, typer.Option(help="Answer length cap (tokens).")] = None,
) -> None:
    """Answer quality on RGB: accuracy, refusal rate with only negative passages, latency (per-question KBs)."""
    rt = rt_from(ctx, False)
    if not dataset_path.exists():
        fail(f"no such dataset: {dataset_path}", as_json=False)
    try:
        items = load_rgb(dataset_path, max_questions)
        report = run_rgb(
            items,
            settings=rt.settings,
            catalog=rt.catalog,
            answerer=rt.answerer,
            embedding_model=embedding_model,
            max_tokens=max_tokens,
            progress=progress_bar,
        )
    except (KBError, ValueError, KeyError) as exc:
        fail(str(exc), as_json=False)
    table(
        "RGB answers", ["metric", "value"], [[k, "n/a" if v is None else f"{v:.3f}"] for k, v in report.summary.items()]
    )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        out_console.print(f"report written to {output}")
