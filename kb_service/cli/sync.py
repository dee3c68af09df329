"""``kb sync``: keep a knowledge base in step with a folder, once or (``--watch``) until stopped."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from kb_service.api.schemas import SyncReportPublic
from kb_service.cli.runtime import EXIT_SOME_FAILED, JsonOpt, emit_json, ensure_kb, fail, out_console, reported, rt_from
from kb_service.core.errors import SyncSourceNotFound
from kb_service.sync import configured_source, open_source


def sync(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="Knowledge base (created with the default model if missing).")],
    source: Annotated[
        str | None,
        typer.Argument(help="A folder or s3://bucket/prefix to mirror (default: the one KB_SYNC_SOURCES names)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would change.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep syncing until stopped (Ctrl-C).")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between syncs with --watch.")] = 5.0,
    embedding_model: Annotated[str | None, typer.Option(help="Model for a KB created by this command.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mirror a folder or an S3 prefix: new files are added, changed ones replaced, deleted ones deleted (with the
    residue check), unchanged ones skipped without being read again. What each file was is remembered between runs.

    Exit status 3 when some files failed (tried again at the next sync)."""
    rt = rt_from(ctx, as_json)
    try:  # the source is checked before a knowledge base is created for it
        folder = source if source is not None else configured_source(rt.settings.ingest.sync_sources, kb)
        open_source(folder)
    except SyncSourceNotFound as exc:
        fail(str(exc), as_json=as_json)
    with reported(as_json=as_json):
        if not dry_run:
            ensure_kb(rt.client, kb, embedding_model=embedding_model)
        report = rt.client.sync(kb, folder, dry_run=dry_run)
        _show(report, as_json=as_json, first=True)
        if watch:
            try:
                while True:
                    time.sleep(interval)
                    report = rt.client.sync(kb, folder, dry_run=dry_run)
                    _show(report, as_json=as_json, first=False)
            except KeyboardInterrupt:
                return
    if report.failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _show(report: SyncReportPublic, *, as_json: bool, first: bool) -> None:
    """The whole report once; while watching, only syncs that changed something (a JSON line each)."""
    changed = report.added or report.changed or report.deleted or report.failed
    if not first and not changed:
        return
    if as_json:
        emit_json(report.model_dump())
        return
    verbs = ("would add", "would replace", "would delete") if report.dry_run else ("added", "replaced", "deleted")
    for sign, verb, paths in zip("+~-", verbs, (report.added, report.changed, report.deleted), strict=True):
        for path in paths:
            out_console.print(escape(f"{sign} {verb} {path}"), highlight=False)
    for f in report.failed:
        out_console.print(escape(f"! failed {f.path}: [{f.reason}] {f.error}"), highlight=False)
    residue = "" if report.dry_run or not report.deleted else (" (clean)" if report.clean else " (NOT clean)")
    out_console.print(
        f"{report.source}: {len(report.added)} new, {len(report.changed)} changed, "
        f"{len(report.deleted)} deleted{residue}, {report.unchanged} unchanged, "
        f"{len(report.failed)} failed in {report.seconds:.1f}s"
        + (" (dry run: nothing changed)" if report.dry_run else ""),
        highlight=False,
    )
