"""``kb``: manage knowledge bases and ingest documents. Every command takes ``--json`` for machine output."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kb_service.cli import ask as ask_commands
from kb_service.cli import reindex as reindex_commands
from kb_service.cli import search as search_commands
from kb_service.cli import sync as sync_commands
from kb_service.cli.runtime import (
    EXIT_SOME_FAILED,
    JsonOpt,
    Runtime,
    emit_json,
    ensure_kb,
    err_console,
    fail,
    out_console,
    reported,
    rt_from,
    table,
)
from kb_service.client import IngestOutcome, KBClient
from kb_service.core.limits import DEFAULT_PAGE_WIDTH
from kb_service.core.records import DocStatus
from kb_service.ingest.pipeline import Outcome
from kb_service.ingest.sources import iter_paths

app = typer.Typer(
    help="RAG knowledge-base service: knowledge bases, ingestion, search, cited answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    backend: Annotated[str | None, typer.Option(envvar="KB_BACKEND", help="milvus or pgvector.")] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="KB_DATA_DIR", help="Data directory.")] = None,
    dsn: Annotated[str | None, typer.Option(envvar="KB_PG_DSN", help="PostgreSQL DSN (pgvector backend).")] = None,
    milvus_uri: Annotated[str | None, typer.Option(envvar="KB_MILVUS_URI", help="Milvus server URI.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")] = False,
) -> None:
    _debug.append(debug)
    ctx.obj = Runtime({"backend": backend, "data_dir": data_dir, "pg_dsn": dsn, "milvus_uri": milvus_uri})
    ctx.call_on_close(ctx.obj.close)


@app.command()
def create(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge-base name (any Unicode).")],
    embedding_model: Annotated[str | None, typer.Option(help="Model name or local path.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a knowledge base bound to an embedding model."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        created = rt.client.create_kb(kb, description=description, embedding_model=embedding_model)
    if as_json:
        emit_json(created.model_dump())
    else:
        out_console.print(f"created {created.name!r} with {created.embedding_model} ({created.dimension}-d)")


@app.command("list")
def list_kbs(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List knowledge bases with document and chunk counts."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        rows = [kb.model_dump() for kb in rt.client.list_kbs()]
    if as_json:
        emit_json(rows)
    else:
        table(
            "knowledge bases",
            ["name", "model", "documents", "chunks"],
            [[r["name"], r["embedding_model"], r["documents"], r["chunks"]] for r in rows],
        )


@app.command()
def drop(ctx: typer.Context, kb: str, as_json: JsonOpt = False) -> None:
    """Delete a knowledge base with all its documents and chunks."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        rt.client.drop_kb(kb)
    if as_json:
        emit_json({"dropped": kb})
    else:
        out_console.print(f"dropped {kb!r}")


@app.command()
def ingest(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge base (created with the default model if missing).")],
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive).")],
    embedding_model: Annotated[str | None, typer.Option(help="Model for a KB created by this command.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest files and folders; identical content is skipped, changed files replace their old version.

    Exit status 3 when some files failed (the others are ingested)."""
    rt = rt_from(ctx, as_json)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}", as_json=as_json)
    files = {item.name: item.path for item in iter_paths(paths) if item.path is not None}
    with reported(as_json=as_json):
        ensure_kb(rt.client, kb, embedding_model=embedding_model)
        started = time.perf_counter()
        outcomes = _ingest_with_progress(rt.client, kb, files, quiet=as_json)
        elapsed = time.perf_counter() - started
    counts = Counter(o.outcome for o in outcomes)
    new_chunks = sum(o.chunks for o in outcomes if o.outcome in (Outcome.ADDED, Outcome.REPLACED))
    summary: dict[str, Any] = {
        "knowledge_base": kb,
        "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
        "chunks_added": new_chunks,
        "seconds": round(elapsed, 3),
        "docs_per_s": round(len(outcomes) / elapsed, 2) if elapsed else None,
        "chunks_per_s": round(new_chunks / elapsed, 2) if elapsed else None,
        "failed": [
            {"source": o.source, "reason": o.reason, "error": o.error} for o in outcomes if o.outcome == Outcome.FAILED
        ],
        "results": [o.model_dump() for o in outcomes],  # the clients' IngestOutcome
    }
    if as_json:
        emit_json(summary)
    else:
        c = summary["counts"]
        out_console.print(
            f"{c['added']} added, {c['unchanged']} unchanged, {c['replaced']} replaced, {c['failed']} failed; "
            f"{new_chunks} chunks in {elapsed:.1f}s ({summary['chunks_per_s']} chunks/s)"
        )
        for f in summary["failed"]:
            out_console.print(escape(f"  failed {f['source']}: [{f['reason']}] {f['error']}"), highlight=False)
    if counts.get(Outcome.FAILED.value):
        raise typer.Exit(EXIT_SOME_FAILED)


def _ingest_with_progress(client: KBClient, kb: str, files: dict[str, Path], *, quiet: bool) -> list[IngestOutcome]:
    """One bar per stage as documents pass it: parsed, embedded (with their chunks), stored; left on screen."""
    if quiet:
        return client.add_files(kb, files)
    started = time.perf_counter()
    total = len(files)
    with Progress(
        TextColumn("[bold]{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    ) as progress:
        bars = {name: progress.add_task(name, total=total, rate="") for name in ("parsed", "embedded", "stored")}
        passed: dict[str, set[str]] = {name: set() for name in bars}
        chunks = 0

        def advance(name: str, source: str) -> None:
            if source in passed[name]:
                return
            passed[name].add(source)
            elapsed = max(time.perf_counter() - started, 1e-9)
            rate = f"{len(passed[name]) / elapsed:.1f} docs/s"
            if name == "embedded":
                rate += f" {chunks / elapsed:.1f} chunks/s"
            progress.update(bars[name], completed=len(passed[name]), rate=rate)

        def on_stage(source: str, stage: str, n_chunks: int) -> None:
            nonlocal chunks
            if stage in ("chunking", "embedding", "storing"):  # parsed
                advance("parsed", source)
            if stage == "storing":  # embedded
                if source not in passed["embedded"]:
                    chunks += n_chunks
                advance("embedded", source)

        def on_outcome(outcome: IngestOutcome) -> None:
            for name in bars:  # unchanged and failed documents skip stages: they are done with all of them
                advance(name, outcome.source)

        return client.add_files(kb, files, on_outcome=on_outcome, on_stage=on_stage)


@app.command()
def docs(
    ctx: typer.Context,
    kb: str,
    status: Annotated[DocStatus | None, typer.Option(help="Only documents with this status.")] = None,
    offset: int = 0,
    limit: int = 1000,
    as_json: JsonOpt = False,
) -> None:
    """List the documents of a knowledge base (a page of them: --offset, --limit up to 1000)."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        page = rt.client.document_page(kb, status=status.value if status else None, offset=offset, limit=limit)
    if as_json:
        emit_json(page.model_dump())  # GET /v1/knowledge-bases/{kb}/documents
    else:
        table(
            f"documents in {kb} ({offset + 1}-{offset + len(page.documents)} of {page.total})",
            ["id", "source", "status", "chunks", "title"],
            [[d.id, d.source, d.status, d.chunk_count, d.title[:50]] for d in page.documents],
        )


@app.command()
def delete(ctx: typer.Context, kb: str, doc_id: str, as_json: JsonOpt = False) -> None:
    """Delete a document, every one of its chunks and its original file, and prove it: what remains of it afterwards
    (its row, chunks, lexical-index entries and original) must be nothing. Exit status 1 if anything remains."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        document = rt.client.get_document(kb, doc_id)
        rt.client.delete_document(kb, doc_id)
        left = rt.client.residue(kb, doc_id)
    if as_json:
        emit_json({"deleted": document.model_dump(), "residue": left.model_dump()})
    else:
        state = "nothing left"
        if not left.clean:
            state = f"NOT gone: {left.chunks} chunks, {left.lexical_entries} lexical, {left.original_files} original"
        out_console.print(f"deleted {doc_id} ({document.source}, {document.chunk_count} chunks): {state}")
    if not left.clean:
        raise typer.Exit(1)


@app.command()
def download(
    ctx: typer.Context,
    kb: str,
    doc_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: its name).")] = None,
    page: Annotated[
        int | None, typer.Option(help="Write this page as a PNG instead (PDF and image documents).")
    ] = None,
    width: Annotated[int, typer.Option(help="Width of the page image in pixels.")] = DEFAULT_PAGE_WIDTH,
    as_json: JsonOpt = False,
) -> None:
    """Write a document's original file (as it was uploaded), or one of its pages as a PNG (--page N)."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        document = rt.client.get_document(kb, doc_id)
        data = rt.client.download(kb, doc_id) if page is None else rt.client.page_image(kb, doc_id, page, width=width)
    name = PurePosixPath(document.source).name
    target = output or Path(name if page is None else f"{PurePosixPath(name).stem}-p{page}.png")
    try:
        target.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}", as_json=as_json)
    if as_json:
        emit_json({"doc_id": doc_id, "source": document.source, "path": str(target), "bytes": len(data)})
    else:
        out_console.print(f"wrote {target} ({len(data):,} bytes)")


@app.command()
def check(
    ctx: typer.Context,
    kb: str,
    doc_ids: Annotated[list[str] | None, typer.Argument(help="Deleted documents to prove gone.")] = None,
    repair: Annotated[bool, typer.Option(help="Remove documents a crash left unfinished first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit a knowledge base (documents by status, chunks that belong to no ready document, original files without
    their document) and prove that deleted documents left nothing behind: no row, no chunk, no lexical-index entry,
    no original file. Exit status 1 if not clean."""
    rt = rt_from(ctx, as_json)
    with reported(as_json=as_json):
        recovered = rt.client.repair(kb) if repair else None
        report = rt.client.audit(kb)
        residues = [rt.client.residue(kb, d) for d in doc_ids or []]
    clean = report.clean and all(r.clean for r in residues)
    if as_json:
        emit_json(
            {
                "knowledge_base": kb,
                "clean": clean,
                "recovered": recovered,
                "audit": report.model_dump(),
                "deleted": [r.model_dump() for r in residues],
            }
        )
    else:
        if recovered:
            removed = recovered["documents_removed"]
            out_console.print(
                f"repaired: removed {removed} documents, {recovered['chunks_removed']} chunks, "
                f"{recovered['originals_removed']} original files"
            )
        out_console.print(
            f"{kb}: documents {report.documents}, {report.chunks} chunks ({report.chunks_of_ready} of ready "
            f"documents, {report.leftover_chunks} left over), {report.originals} original files "
            f"({report.orphan_originals} without their document)"
        )
        for r in residues:
            state = "gone" if r.clean else "NOT gone"
            out_console.print(
                f"{r.doc_id}: {state} (row: {r.document or 'none'}, chunks: {r.chunks}, lexical: {r.lexical_entries}, "
                f"original: {r.original_files})"
            )
    if not clean:
        raise typer.Exit(1)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Run the REST API (uvicorn)."""
    import uvicorn

    from kb_service.api.app import create_app

    rt = rt_from(ctx, False)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the exit status; with the default
    # handler that kills the process before its exit handlers run (the embedded PostgreSQL stops in one). This one
    # exits normally instead, with the status a SIGTERM gives.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(create_app(rt.settings), host=host, port=port)


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Jobs run at once (threads sharing one loaded model).")
    ] = 1,
    device: Annotated[
        str | None, typer.Option(help="Embedding device: cpu, cuda, cuda:1 … (default KB_EMBEDDING_DEVICE).")
    ] = None,
) -> None:
    """Run ingest jobs from the job queue (KB_QUEUE_URL) until stopped: start one or more on any machine that
    reaches the broker, the PostgreSQL store and the shared data directory. SIGTERM or Ctrl-C finishes the jobs in
    hand first; a worker that dies has its job handed to another."""
    from kb_service.jobs.queue import run_worker

    rt = rt_from(ctx, False)
    url = rt.settings.ingest.queue_url
    if url is None:
        fail("kb worker needs KB_QUEUE_URL: the broker the API sends jobs to (amqp://guest@localhost//)", as_json=False)
    if device is not None:
        rt.__dict__["settings"] = rt.settings.with_changes(embedding_device=device)
    jobs = rt.jobs
    rt.recover()  # what a worker that died left, unless another worker's job holds it
    rt.embedders.get()  # the default model loads now, not with the first job
    try:
        run_worker(url, jobs.run_jobs, concurrency=concurrency)
    finally:
        rt.close()


@app.command("mcp")
def mcp_stdio(ctx: typer.Context) -> None:
    """Serve the knowledge bases as MCP tools over stdio (an agent starts `kb mcp` itself); HTTP clients use the
    service's /mcp instead."""
    from kb_service.mcp_server import build_mcp

    rt = rt_from(ctx, False)
    build_mcp(lambda: rt.client).run("stdio")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


app.command()(search_commands.search)
app.command("eval")(search_commands.evaluate_cmd)
app.command()(ask_commands.ask)
app.command("eval-answers")(ask_commands.eval_answers)
app.command()(sync_commands.sync)
app.command()(reindex_commands.reindex)

_debug: list[bool] = []  # the invocation's --debug, once its options are read


def run() -> None:
    """The ``kb`` command: an unexpected error is one line (its traceback with ``--debug``), never a traceback."""
    try:
        app()
    except Exception as exc:
        if any(_debug):
            raise
        err_console.print(
            f"[red]error:[/red] {escape(type(exc).__name__)}: {escape(str(exc))} (kb --debug … shows the traceback)",
            highlight=False,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    run()
