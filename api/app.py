"""Builds the FastAPI app; its components (``kb_service.services``) load once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from mcp.server.transport_security import TransportSecuritySettings

from kb_service.api.auth import KeyRing, authenticate, presented_key
from kb_service.api.errors import install_error_handlers
from kb_service.api.guard import RequestGuard
from kb_service.api.routes import (
    ask,
    chat,
    documents,
    embeddings,
    federated,
    files,
    health,
    knowledge_bases,
    originals,
    reindex,
    responses,
    search,
    sync,
    ui,
    vector_stores,
)
from kb_service.client.local import LocalClient
from kb_service.core.config import Settings, get_settings
from kb_service.mcp_server import build_mcp
from kb_service.services import Services


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything heavy loads now, not on the first request.
        services = Services(settings=settings)
        store = services.store
        services.embedders.get()  # the default embedding model
        app.state.settings = settings
        app.state.keys = keys
        app.state.store = store
        app.state.embedders = services.embedders
        app.state.catalog = services.catalog
        app.state.retriever = services.retriever  # loads the reranker
        app.state.federation = services.federation
        app.state.llm = services.llm[0]  # a local model loads here; None (extractive answers) if it cannot
        app.state.answerer = services.answerer
        app.state.jobs = services.jobs
        app.state.file_search = services.file_search
        app.state.responses = services.responses
        app.state.sync = services.sync  # folder syncs (POST …/sync), after the retriever: they share its index
        # After a crash: remove half-written documents (not what a queue's worker holds a lease on), then resume
        # the jobs that were writing them (with a queue, the broker hands a dead worker's jobs to another).
        services.recover()
        app.state.jobs.resume()
        # Re-indexes a previous process left unfinished, and indexes its switches left retired.
        app.state.reindex = services.reindex
        app.state.reindex.resume_recorded()
        # Passage vectors of the embedding reranker, computed while the models are idle.
        warmer = app.state.rerank_warmer = services.rerank_warmer
        if warmer is not None:
            warmer.start()
        app.state.mcp_client = LocalClient(services=services)
        try:
            async with mcp_http.router.lifespan_context(mcp_http):  # the MCP session manager's task group
                yield
        finally:
            services.close()

    app = FastAPI(title="kb-service", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    keys = KeyRing(settings)
    app.add_middleware(RequestGuard, settings=settings, keys=keys, max_files=documents.MAX_FILES)
    app.include_router(health.router)
    protected = [Depends(authenticate)]  # a no-op unless KB_API_KEYS is set
    for module in (
        knowledge_bases,
        documents,
        originals,
        search,
        ask,
        federated,
        chat,
        embeddings,
        sync,
        reindex,
        files,
        vector_stores,
        responses,
    ):
        app.include_router(module.router, dependencies=protected)
    # MCP over streamable HTTP at /mcp: behind the request guard (keys) like every route; each tool checks the
    # caller's key against the knowledge base it names.
    mcp_http = build_mcp(lambda: app.state.mcp_client, scope=_key_scope(keys)).streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        # The service binds where it is told (0.0.0.0 in a container); API keys guard it, not the Host header.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    app.router.routes.extend(mcp_http.routes)
    if settings.api.ui:
        ui.mount(app)  # the web page: public static files; its API calls carry the user's key
    return app


def _key_scope(keys: KeyRing) -> Callable[[Mapping[str, str] | None], Callable[[str], bool]]:
    """The knowledge bases an MCP request's key may use."""

    def scope(headers: Mapping[str, str] | None) -> Callable[[str], bool]:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        principal = keys.lookup(presented_key(headers.get("authorization", ""), headers.get("x-api-key")))
        return principal.allows

    return scope
