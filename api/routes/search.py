from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from kb_service.api.deps import CatalogDep, RetrieverDep, SettingsDep
from kb_service.api.schemas import SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/knowledge-bases", tags=["search"])


@router.post("/{kb}/search")
async def search(
    kb: str, body: SearchRequest, catalog: CatalogDep, retriever: RetrieverDep, settings: SettingsDep
) -> SearchResponse:
    """Ranked chunks with scores and provenance; ``trace`` adds the gate, the candidates and timings per stage."""

    def run() -> SearchResponse:
        knowledge_base, embedder = catalog.open(kb)
        result = retriever.search(knowledge_base, embedder, body.query, body.options(settings))
        return SearchResponse.of(result, trace=body.trace)

    return await run_in_threadpool(run)
