"""POST /v1/knowledge-bases/{kb}/sync: mirror the source (a folder or an S3 prefix) configured for the knowledge
base in ``KB_SYNC_SOURCES``: new files added, changed ones replaced, deleted ones deleted, unchanged ones skipped
unread. It answers when the sync is done, with what changed; a second sync of the same knowledge base while one
runs is a 409."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from kb_service.api.deps import SettingsDep
from kb_service.api.schemas import SyncReportPublic, SyncRequest
from kb_service.sync import Syncer, configured_source

router = APIRouter(prefix="/v1/knowledge-bases", tags=["sync"])


@router.post("/{kb}/sync")
async def sync(kb: str, request: Request, settings: SettingsDep, body: SyncRequest | None = None) -> SyncReportPublic:
    folder = configured_source(settings.ingest.sync_sources, kb)
    syncer: Syncer = request.app.state.sync
    dry_run = body.dry_run if body is not None else False
    return SyncReportPublic.of(await run_in_threadpool(syncer.run, kb, folder, dry_run=dry_run))
