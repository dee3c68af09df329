"""``kb ask``: a grounded answer with numbered citations, streamed to the terminal or as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kb_service.api.schemas import AnswerPublic
from kb_service.cli.runtime import JsonOpt, emit_json, err_console, fail, out_console, reported, rt_from, table
from kb_service.cli.search import progress_bar
from kb_service.core.errors import KBError
from kb_service.evaluation.answers import load_qa


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
    answer_mode: Annotated[
        str | None, typer.Option(help="auto | generated (the LLM writes) | extractive (quoted source sentences).")
    ] = None,
    synthesis: Annotated[
        str | None,
        typer.Option(help="compact (one prompt) | refine (source group by group) | map_reduce (partial answers)."),
    ] = None,
    refine: Annotated[
        list[str] | None,
        typer.Option("--refine", help="Query refinement (repeatable): keywords, multi_query, hyde, decompose."),
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
    answer: AnswerPublic | None = None
    options = {
        "sources": sources,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "filters": parsed_filters,
        "history": turns,
        "answer_mode": answer_mode,
        "synthesis": synthesis,
        "refine": refine,
    }
    with reported(as_json=as_json):
        for event in rt.client.ask_stream(kb, question, **{k: v for k, v in options.items() if v is not None}):
            if isinstance(event, AnswerPublic):
                answer = event
            elif stream and not as_json:
                sys.stdout.write(event)
                sys.stdout.flush()
    assert answer is not None  # the answer stream always ends with one
    if as_json:
        emit_json(answer.model_dump())  # POST /v1/knowledge-bases/{kb}/ask
        return
    if stream:
        sys.stdout.write("\n")
    else:
        out_console.print(escape(answer.answer), highlight=False)
    if answer.mode == "extractive" and answer.llm_error:
        err_console.print(f"[yellow]extractive answer[/yellow] ({escape(answer.llm_error)})")
    if answer.finish_reason == "repetition":
        err_console.print("[yellow]the answer started repeating itself and was cut at its last good sentence[/yellow]")
    for claim in answer.unsupported_claims:
        err_console.print(f"[yellow]unsupported by the sources:[/yellow] {escape(claim.text)}")
    shown: set[int] = set()
    if answer.citations:
        out_console.print("\n[bold]Sources[/bold]")
    for c in answer.citations:
        if c.number in shown:
            continue
        shown.add(c.number)
        where = ", ".join(str(p) for p in (c.source, f"p. {c.page}" if c.page else "", c.section) if p)
        out_console.print(f"[{c.number}] {escape(where)}: “{escape(c.snippet)}”", highlight=False)


def eval_answers(
    ctx: typer.Context,
    dataset_path: Annotated[
        Path, typer.Argument(help="A BEIR folder with answers.jsonl, SQuAD-style JSON (CMRC) or an RGB file/folder.")
    ],
    output: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    max_questions: Annotated[int | None, typer.Option(help="Evaluate only the first N questions.")] = None,
    modes: Annotated[
        str,
        typer.Option(
            help="Answer modes, comma-separated: extractive, generated, unverified (the old path); each may add "
            "+compress and +expand<N> (extractive+expand1+compress)."
        ),
    ] = "extractive,generated",
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model of the evaluation knowledge bases (RGB: multilingual-e5-small).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length cap (tokens).")] = None,
    negatives: Annotated[
        bool, typer.Option(help="Also ask with only non-gold passages retrievable (where declining is right).")
    ] = True,
) -> None:
    """Answer quality per answer mode: EM, F1, citation precision and recall, unsupported claims, refusals,
    repeated sentences, latency and tokens."""
    rt = rt_from(ctx, False)
    try:
        qa = load_qa(dataset_path, max_questions)
        report = rt.client.evaluate_answers(
            qa,
            modes=[m.strip() for m in modes.split(",") if m.strip()],
            embedding_model=embedding_model,
            max_tokens=max_tokens,
            negatives=negatives,
            progress=progress_bar,
        )
    except (KBError, ValueError, KeyError) as exc:
        fail(str(exc), as_json=False)
    summary = report.summary
    names = list(summary)
    metrics = list(next(iter(summary.values()))) if summary else []
    table(
        f"answers: {report.dataset}",
        ["metric", *names],
        [[m, *("n/a" if summary[n][m] is None else f"{summary[n][m]:.3f}" for n in names)] for m in metrics],
    )
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        out_console.print(f"report written to {output}")
