"""``kb reindex``: move a knowledge base to another embedding model (or chunking) while it keeps serving."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kb_service.api.schemas import ReindexStatusPublic
from kb_service.cli.runtime import JsonOpt, emit_json, err_console, fail, out_console, reported, rt_from

EXIT_NOT_READY = 3  # the re-index ended failed, cancelled or interrupted: the knowledge base is as it was


def reindex(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge base to re-index.")],
    embedding_model: Annotated[
        str | None, typer.Option(help="Model of the new index (default: the knowledge base's own, to re-chunk).")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(min=16, help="Re-chunk from the kept original files with this many tokens.")
    ] = None,
    chunk_overlap: Annotated[int | None, typer.Option(min=0, help="Re-chunk with this overlap (tokens).")] = None,
    no_switch: Annotated[
        bool, typer.Option("--no-switch", help="Build the new index and keep it beside the serving one, to compare.")
    ] = False,
    status: Annotated[bool, typer.Option("--status", help="Only show the recorded re-index.")] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Discard the recorded re-index.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a new index of KB with another embedding model (and, with --chunk-size/--chunk-overlap, re-chunked from
    the original files) beside the one serving, then switch to it in one step. Searches go on meanwhile; uploads and
    deletes made meanwhile reach the new index. Interrupted, it resumes when run again (or when the service starts);
    --cancel leaves the knowledge base as it was.

    Exit status 3 when the re-index did not finish (failed, cancelled or interrupted)."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        if status or cancel:
            result = rt.client.cancel_reindex(kb) if cancel else rt.client.reindex_status(kb)
            _show(result, as_json=as_json)
            return
        model = embedding_model or rt.client.get_kb(kb).embedding_model
        if embedding_model is None and chunk_size is None and chunk_overlap is None:
            fail("give --embedding-model, or --chunk-size/--chunk-overlap to re-chunk", as_json=as_json)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=as_json or not err_console.is_terminal,  # piped: no bar, and no blank line where it was
        ) as bar:
            task = bar.add_task(f"re-index {escape(kb)} → {escape(model)}", total=None)

            def progress(s: ReindexStatusPublic) -> None:
                bar.update(task, total=max(s.documents, 1), completed=s.copied + s.kept, description=s.state)

            result = rt.client.reindex(
                kb,
                model,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
                switch=not no_switch,
                on_progress=progress,
            )
    _show(result, as_json=as_json)
    if result.state not in ("ready", "built"):
        raise typer.Exit(EXIT_NOT_READY)


def _show(s: ReindexStatusPublic, *, as_json: bool) -> None:
    if as_json:
        emit_json(s.model_dump())
        return
    chunking = (
        f", chunks of {s.chunk_size or 'default'}/{s.chunk_overlap or 'default'} tokens"
        if (s.chunk_size or s.chunk_overlap)
        else ""
    )
    line = (
        f"{s.knowledge_base}: {s.state} — {s.embedding_model} ({s.dimension}-d){chunking}; "
        f"{s.copied} documents embedded now, {s.kept} kept from before, {s.removed} removed, "
        f"{s.chunks} chunks, {s.passes} passes in {s.seconds:.1f}s"
    )
    out_console.print(escape(line), highlight=False)
    if s.error:
        out_console.print(escape(s.error), highlight=False)
