from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from kb_service.api.deps import EmbeddersDep, StoreDep
from kb_service.core.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(store: StoreDep, embedders: EmbeddersDep) -> JSONResponse:
    """Readiness: the default embedding model is loaded and the store answers."""
    try:
        await run_in_threadpool(store.ping)
    except StoreError as exc:
        return JSONResponse({"status": "unavailable", "store": str(exc)}, status_code=503)
    info = embedders.get().info
    return JSONResponse({"status": "ready", "embedding_model": info.name, "dimension": info.dimension})
