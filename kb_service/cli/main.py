"""``kb``: manage knowledge bases and ingest documents. Every command takes ``--json`` for machine output."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kb_service.api.schemas import DocumentPublic
from kb_service.cli import ask as ask_commands
from kb_service.cli import search as search_commands
from kb_service.cli.runtime import JsonOpt, Runtime, emit_json, err_console, fail, out_console, rt_from, table
from kb_service.client import ClientError, LocalClient
from kb_service.core.errors import KBError
from kb_service.core.records import DocStatus, KnowledgeBase
from kb_service.ingest.pipeline import Ingestor, IngestResult, Outcome
from kb_service.ingest.sources import SourceItem, iter_paths
from kb_service.retrieval.residue import residue
from kb_service.stores.recovery import audit, recover

app = typer.Typer(
    help="RAG knowledge-base service: knowledge bases, ingestion, search, cited answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

EXIT_SOME_FAILED = 3


@app.callback()
def main(
    ctx: typer.Context,
    backend: Annotated[str | None, typer.Option(envvar="KB_BACKEND", help="milvus or pgvector.")] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="KB_DATA_DIR", help="Data directory.")] = None,
    dsn: Annotated[str | None, typer.Option(envvar="KB_PG_DSN", help="PostgreSQL DSN (pgvector backend).")] = None,
    milvus_uri: Annotated[str | None, typer.Option(envvar="KB_MILVUS_URI", help="Milvus server URI.")] = None,
) -> None:
    ctx.obj = Runtime({"backend": backend, "data_dir": data_dir, "pg_dsn": dsn, "milvus_uri": milvus_uri})
    ctx.call_on_close(ctx.obj.close)


def _kb_dict(kb: KnowledgeBase) -> dict[str, object]:
    return {
        "name": kb.name,
        "description": kb.description,
        "embedding_model": kb.embedding.name,
        "dimension": kb.embedding.dimension,
        "fingerprint": kb.embedding.fingerprint,
        "created_at": kb.created_at,
    }


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
    try:
        created = rt.catalog.create(kb, description=description, embedding_model=embedding_model)
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(_kb_dict(created))
    else:
        out_console.print(f"created {created.name!r} with {created.embedding.name} ({created.embedding.dimension}-d)")


@app.command("list")
def list_kbs(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List knowledge bases with document and chunk counts."""
    rt = rt_from(ctx, as_json)
    try:
        rows = [kb.model_dump() for kb in LocalClient(services=rt).list_kbs()]
    except ClientError as exc:
        fail(str(exc), as_json=as_json)
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
    try:
        rt.catalog.drop(kb)
    except KBError as exc:
        fail(str(exc), as_json=as_json)
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
    try:
        knowledge_base, _ = rt.catalog.get_or_create(kb, embedding_model=embedding_model)
        _, embedder = rt.catalog.open(kb)
        ingestor = rt.ingestor(knowledge_base, embedder)
        items = list(iter_paths(paths))
        started = time.perf_counter()
        results = _ingest_with_progress(ingestor, items, quiet=as_json)
        elapsed = time.perf_counter() - started
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    counts = Counter(r.outcome.value for r in results)
    new_chunks = sum(r.chunks for r in results if r.outcome in (Outcome.ADDED, Outcome.REPLACED))
    summary: dict[str, Any] = {
        "knowledge_base": kb,
        "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
        "chunks_added": new_chunks,
        "seconds": round(elapsed, 3),
        "docs_per_s": round(len(results) / elapsed, 2) if elapsed else None,
        "chunks_per_s": round(new_chunks / elapsed, 2) if elapsed else None,
        "failed": [
            {"source": r.source, "reason": r.reason, "error": r.error} for r in results if r.outcome == Outcome.FAILED
        ],
        "results": [
            {
                "source": r.source,
                "outcome": r.outcome.value,
                "doc_id": r.doc_id,
                "chunks": r.chunks,
                "replaced": r.replaced,
            }
            for r in results
        ],
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


def _ingest_with_progress(ingestor: Ingestor, items: list[SourceItem], *, quiet: bool) -> list[IngestResult]:
    if quiet:
        return ingestor.ingest(items)
    started = time.perf_counter()
    chunks = 0
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("ingest", total=len(items), rate="")

        def on_result(result: IngestResult) -> None:
            nonlocal chunks
            if result.outcome in (Outcome.ADDED, Outcome.REPLACED):
                chunks += result.chunks
            elapsed = max(time.perf_counter() - started, 1e-9)
            done = progress.tasks[0].completed + 1
            progress.update(task, advance=1, rate=f"{done / elapsed:.1f} docs/s {chunks / elapsed:.1f} chunks/s")

        return ingestor.ingest(items, on_result=on_result)


@app.command()
def docs(
    ctx: typer.Context,
    kb: str,
    status: Annotated[DocStatus | None, typer.Option(help="Only documents with this status.")] = None,
    offset: int = 0,
    limit: int = 1000,
    as_json: JsonOpt = False,
) -> None:
    """List the documents of a knowledge base."""
    rt = rt_from(ctx, as_json)
    try:
        knowledge_base = rt.catalog.get(kb)
        documents = rt.store.list_documents(knowledge_base, status=status, offset=offset, limit=limit)
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json([DocumentPublic.of(d).model_dump() for d in documents])  # the API's own schema
    else:
        table(
            f"documents in {kb}",
            ["id", "source", "status", "chunks", "title"],
            [[d.id, d.source, d.status.value, d.chunk_count, d.title[:50]] for d in documents],
        )


@app.command()
def delete(ctx: typer.Context, kb: str, doc_id: str, as_json: JsonOpt = False) -> None:
    """Delete a document and every one of its chunks (verified by counting them afterwards)."""
    rt = rt_from(ctx, as_json)
    try:
        knowledge_base = rt.catalog.get(kb)
        before = rt.store.count_chunks(knowledge_base, doc_id=doc_id)
        rt.store.delete_document(knowledge_base, doc_id)
        after = rt.store.count_chunks(knowledge_base, doc_id=doc_id)
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"deleted": doc_id, "chunks_removed": before - after, "chunks_left": after})
    else:
        out_console.print(f"deleted {doc_id}: {before - after} chunks removed, {after} left")


@app.command()
def check(
    ctx: typer.Context,
    kb: str,
    doc_ids: Annotated[list[str] | None, typer.Argument(help="Deleted documents to prove gone.")] = None,
    repair: Annotated[bool, typer.Option(help="Remove documents a crash left unfinished first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit a knowledge base (documents by status, chunks that belong to no ready document) and prove that
    deleted documents left nothing behind: no row, no chunk, no lexical-index entry. Exit status 1 if not clean."""
    rt = rt_from(ctx, as_json)
    try:
        knowledge_base = rt.catalog.get(kb)
        recovered = asdict(recover(rt.store, knowledge_base)) if repair else None
        report = audit(rt.store, knowledge_base)
        residues = [residue(rt.store, rt.retriever.lexical, knowledge_base, d) for d in doc_ids or []]
    except KBError as exc:
        fail(str(exc), as_json=as_json)
    clean = report.clean and all(r.clean for r in residues)
    if as_json:
        emit_json(
            {
                "knowledge_base": kb,
                "clean": clean,
                "recovered": recovered,
                "audit": {**asdict(report), "clean": report.clean},
                "deleted": [{**asdict(r), "clean": r.clean} for r in residues],
            }
        )
    else:
        if recovered:
            removed = recovered["documents_removed"]
            out_console.print(f"repaired: removed {removed} documents, {recovered['chunks_removed']} chunks")
        out_console.print(
            f"{kb}: documents {report.documents}, {report.chunks} chunks ({report.chunks_of_ready} of ready "
            f"documents, {report.leftover_chunks} left over)"
        )
        for r in residues:
            state = "gone" if r.clean else "NOT gone"
            out_console.print(
                f"{r.doc_id}: {state} (row: {r.document or 'none'}, chunks: {r.chunks}, lexical: {r.lexical_entries})"
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
    uvicorn.run(create_app(rt.settings), host=host, port=port)


app.command()(search_commands.search)
app.command("eval")(search_commands.evaluate_cmd)
app.command()(ask_commands.ask)
app.command("eval-answers")(ask_commands.eval_answers)

if __name__ == "__main__":
    app()
