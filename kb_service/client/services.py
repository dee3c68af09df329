"""The service's components, built lazily from settings: what the CLI and the in-process client share."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.embeddings import EmbedderPool
from kb_service.embeddings.base import Embedder
from kb_service.generation.answer import Answerer
from kb_service.generation.factory import build_answerer, build_llm, build_summarizer
from kb_service.ingest.summarize import Summarizer
from kb_service.retrieval.factory import build_retriever
from kb_service.retrieval.pipeline import Retriever
from kb_service.stores.base import VectorStore
from kb_service.stores.factory import open_store


class Services:
    """Each component is built on first use (models load only when needed) and kept for later calls."""

    def __init__(self, overrides: dict[str, Any] | None = None, *, settings: Settings | None = None) -> None:
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        if settings is not None:
            self.__dict__["settings"] = settings

    def close(self) -> None:
        """Close the store if it was opened (its connection pool's threads must not outlive it)."""
        store = self.__dict__.get("store")
        if store is not None:
            store.close()

    @cached_property
    def settings(self) -> Settings:
        return Settings(**self.overrides)

    @cached_property
    def store(self) -> VectorStore:
        return open_store(self.settings)

    @cached_property
    def embedders(self) -> EmbedderPool:
        return EmbedderPool(self.settings)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.store, self.embedders)

    @cached_property
    def retriever(self) -> Retriever:
        return build_retriever(self.settings, self.store, self.embedders)

    def summarizer(self, embedder: Embedder) -> Summarizer | None:
        """The LLM summarizer when configured (loading the LLM), else None: the extractive default."""
        if self.settings.summary_backend != "llm":
            return None
        return build_summarizer(self.settings, self.answerer.llm, embedder)

    @cached_property
    def answerer(self) -> Answerer:
        llm, why = build_llm(self.settings)
        return build_answerer(self.settings, self.retriever, llm, why)
