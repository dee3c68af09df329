"""Search and ask over several knowledge bases at once: ``POST /v1/search`` and ``POST /v1/ask`` with
``knowledge_bases`` (default: every one the API key may use). A router ranks them by their document summaries and
the best are searched, each with its own embedding model; the hits name their knowledge base. A key scoped to some
knowledge bases gets a 403 for any other it names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from kb_service.api import queries
from kb_service.api.auth import PrincipalDep
from kb_service.api.deps import AnswererDep, CatalogDep, FederationDep, SettingsDep
from kb_service.api.routes.ask import respond
from kb_service.api.schemas import AnswerPublic, MultiAskRequest, MultiSearchRequest, SearchResponse
from kb_service.retrieval.pipeline import SearchFn

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search")
async def search_many(
    body: MultiSearchRequest,
    catalog: CatalogDep,
    federation: FederationDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> SearchResponse:
    """One merged ranking from several knowledge bases; ``trace`` adds the router's score for each."""

    def run() -> SearchResponse:
        targets = queries.open_targets(catalog, body.knowledge_bases, principal)
        result = federation.search(targets, body.query, body.options(settings))
        return SearchResponse.of(result, trace=body.trace)

    return await run_in_threadpool(run)


@router.post(
    "/ask",
    response_model=AnswerPublic,
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true."}},
)
async def ask_many(
    body: MultiAskRequest,
    catalog: CatalogDep,
    federation: FederationDep,
    answerer: AnswererDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Any:
    """A cited answer from several knowledge bases; each source and citation names its knowledge base."""

    def searcher() -> SearchFn:
        return federation.on(queries.open_targets(catalog, body.knowledge_bases, principal))

    return await respond(body, searcher, answerer, settings)
