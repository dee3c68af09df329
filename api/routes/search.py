from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api.deps import CatalogDep, RetrieverDep, SettingsDep
from api.schemas import ChunkHit, GatedDocument, SearchRequest, SearchResponse, SearchTracePublic
from retrieval.pipeline import SearchOptions

router = APIRouter(prefix="/v1/knowledge-bases", tags=["search"])


@router.post("/{kb}/search")
async def search(
    kb: str, body: SearchRequest, catalog: CatalogDep, retriever: RetrieverDep, settings: SettingsDep
) -> SearchResponse:
    """Ranked chunks with scores and provenance; ``trace`` adds the gate, the candidates and timings per stage."""

    def run() -> SearchResponse:
        knowledge_base, embedder = catalog.open(kb)
        options = SearchOptions.from_settings(
            settings,
            top_k=body.top_k,
            mode=body.mode,
            gate=body.gate,
            rerank=body.rerank,
            filters=body.filters,
            trace=body.trace,
        )
        result = retriever.search(knowledge_base, embedder, body.query, options)
        trace = None
        if body.trace:
            t = result.trace
            trace = SearchTracePublic(
                gated=[
                    GatedDocument(doc_id=d.document.id, source=d.document.source, title=d.document.title, score=d.score)
                    for d in t.gated
                ],
                candidates=[ChunkHit.of(h) for h in t.candidates],
                reranked=[ChunkHit.of(h) for h in t.reranked],
                timings_ms=t.timings_ms,
            )
        return SearchResponse(query=result.query, hits=[ChunkHit.of(h) for h in result.hits], trace=trace)

    return await run_in_threadpool(run)
