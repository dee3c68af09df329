"""Re-indexing a knowledge base with another embedding model or chunking while it serves:
POST …/reindex starts it (202; it runs in the background), GET …/reindex says where it is, DELETE …/reindex cancels
it (the knowledge base stays as it was). Searches go on meanwhile, on the old index until the switch, then on the new
one; uploads and deletes made meanwhile reach the new index."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool

from kb_service.api.schemas import ReindexRequest, ReindexStatusPublic
from kb_service.embeddings import EmbedderPool
from kb_service.reindex import ReindexJobs

router = APIRouter(prefix="/v1/knowledge-bases", tags=["reindex"])


def _jobs(request: Request) -> ReindexJobs:
    return request.app.state.reindex  # type: ignore[no-any-return]


@router.post("/{kb}/reindex", status_code=status.HTTP_202_ACCEPTED)
async def start(kb: str, body: ReindexRequest, request: Request) -> ReindexStatusPublic:
    """Start re-indexing ``kb`` (or resume the recorded re-index of the same plan); 409 while one runs."""
    embedders: EmbedderPool = request.app.state.embedders
    embedders.check_allowed(body.embedding_model)
    # prepare() loads the model (seconds, the first time): off the event loop
    started = await run_in_threadpool(lambda: _jobs(request).start(kb, body.plan(), switch=body.switch))
    return ReindexStatusPublic.of(started)


@router.get("/{kb}/reindex")
def progress(kb: str, request: Request) -> ReindexStatusPublic:
    """The running or last re-index of ``kb``; 404 when there is none."""
    return ReindexStatusPublic.of(_jobs(request).status(kb))


@router.delete("/{kb}/reindex")
async def cancel(kb: str, request: Request) -> ReindexStatusPublic:
    """Cancel the running re-index of ``kb``, or discard a recorded one: ``kb`` stays as it was."""
    return ReindexStatusPublic.of(await run_in_threadpool(_jobs(request).cancel, kb))
