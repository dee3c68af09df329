"""Builds the FastAPI app; the store, the catalog and the default embedding model load once in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from kb_service.api.auth import KeyRing, authenticate
from kb_service.api.errors import install_error_handlers
from kb_service.api.routes import ask, chat, documents, embeddings, health, knowledge_bases, search
from kb_service.catalog import Catalog
from kb_service.core.config import Settings, get_settings
from kb_service.embeddings import EmbedderPool
from kb_service.generation.factory import build_answerer, build_llm, build_summarizer
from kb_service.jobs import JobJournal, JobManager
from kb_service.retrieval.factory import build_rerank_warmer, build_retriever
from kb_service.stores.factory import open_store
from kb_service.stores.recovery import recover


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings)
        pool = EmbedderPool(settings)
        pool.get()  # load the default model now, not on the first request
        app.state.settings = settings
        app.state.keys = KeyRing(settings)
        app.state.store = store
        app.state.embedders = pool
        app.state.catalog = Catalog(store, pool)
        app.state.retriever = build_retriever(settings, store, pool)  # loads the reranker now
        llm, llm_error = build_llm(settings)  # loads a local model now; None (extractive answers) if it cannot
        app.state.llm = llm
        app.state.answerer = build_answerer(settings, app.state.retriever, llm, llm_error)
        app.state.jobs = JobManager(
            settings,
            app.state.catalog,
            summarizer_for=lambda embedder: build_summarizer(settings, llm, embedder),
            journal=JobJournal(settings.data_dir / "jobs"),
            # The lexical index is rebuilt once the uploads into a knowledge base are done, not by its next search.
            after_ingest=app.state.retriever.lexical.get if settings.search_mode != "dense" else None,
        )
        # After a crash: remove half-written documents, then resume the jobs that were writing them.
        for kb in store.list_kbs():
            recover(store, kb, grace_s=settings.recovery_grace_s)
        app.state.jobs.resume()
        # Passage vectors of the embedding reranker, computed while the models are idle.
        warmer = app.state.rerank_warmer = build_rerank_warmer(settings, app.state.retriever)
        if warmer is not None:
            warmer.start()
        try:
            yield
        finally:
            if warmer is not None:
                warmer.close()
            app.state.jobs.close()
            app.state.retriever.close()
            store.close()

    app = FastAPI(title="kb-service", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health.router)
    protected = [Depends(authenticate)]  # a no-op unless KB_API_KEYS is set
    for module in (knowledge_bases, documents, search, ask, chat, embeddings):
        app.include_router(module.router, dependencies=protected)
    return app
