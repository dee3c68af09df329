"""Builds the configured Retriever (lexical indexes under the data directory, the configured reranker)."""

from __future__ import annotations

import functools

from kb_service.core.config import Settings
from kb_service.embeddings.pool import EmbedderPool
from kb_service.embeddings.sentence import resolve_device, runs_bf16
from kb_service.retrieval.federated import Federation
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.pipeline import Retriever
from kb_service.retrieval.refine import WriterSource
from kb_service.retrieval.rerank import EmbeddingReranker, Reranker, load_reranker
from kb_service.retrieval.rerank_warmer import RerankWarmer
from kb_service.stores.base import RerankVectorStore, Revisioned, VectorStore


def rerank_kind(settings: Settings) -> str:
    """The reranker actually used: 'auto' re-scores only where it is cheap enough: on a GPU, or on a CPU that runs
    the second model in bf16 (twice as fast as fp32 there); on other CPUs it would cost seconds per query."""
    if settings.rerank.backend != "auto":
        return settings.rerank.backend
    device = resolve_device(settings.embedding.device)
    return "embedding" if device.startswith("cuda") or runs_bf16(device, settings.embedding.cpu_bf16) else "none"


def build_reranker(settings: Settings, embedders: EmbedderPool) -> Reranker | None:
    kind = rerank_kind(settings)
    if kind == "none":
        return None
    return load_reranker(
        kind,
        settings.rerank.model,
        embedders=embedders,
        device=settings.embedding.device,
        fp16=settings.embedding.fp16,
        cpu_bf16=settings.embedding.cpu_bf16,
        batch_size=settings.rerank.batch_size,
        cache=settings.embedding.model_cache,
    )


def build_retriever(
    settings: Settings,
    store: VectorStore,
    embedders: EmbedderPool,
    *,
    load_reranker: bool = True,
    writer: WriterSource | None = None,
) -> Retriever:
    """``writer``: the LLM's query writer for the refinements that need one (loaded on first use)."""
    reranker = build_reranker(settings, embedders) if load_reranker else None
    return Retriever(
        store,
        lexical_indexes(settings, store),
        reranker,
        keep_rerank_vectors=settings.rerank.precompute,
        writer=writer,
    )


def build_federation(retriever: Retriever, embedders: EmbedderPool) -> Federation:
    """Search over several knowledge bases; its router scores their summaries with the configured embedding model
    (one model for every knowledge base, whatever each one's own is)."""

    @functools.cache
    def scorer() -> EmbeddingReranker:
        return EmbeddingReranker(embedders.get(), cache_size=20_000)

    return Federation(retriever, scorer)


def lexical_indexes(settings: Settings, store: VectorStore) -> LexicalIndexes:
    """The lexical indexes of ``store``'s knowledge bases, kept under the data directory."""
    return LexicalIndexes(store, settings.data_dir / "lexical", chunk_context=settings.ingest.chunk_context)


def build_rerank_warmer(settings: Settings, retriever: Retriever) -> RerankWarmer | None:
    """The background warmer of an embedding reranker's stored vectors (not started), where configured."""
    store = retriever.store
    if not settings.rerank.precompute or not isinstance(retriever.reranker, EmbeddingReranker):
        return None
    if not isinstance(store, RerankVectorStore) or not isinstance(store, Revisioned):
        return None  # nowhere to keep the vectors
    return RerankWarmer(store, retriever.reranker)
