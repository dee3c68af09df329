"""Builds the configured Retriever (lexical indexes under the data directory, the configured reranker)."""

from __future__ import annotations

from core.config import Settings
from embeddings.pool import EmbedderPool
from retrieval.lexical import LexicalIndexes
from retrieval.pipeline import Retriever
from retrieval.rerank import Reranker, load_reranker
from stores.base import VectorStore


def build_reranker(settings: Settings, embedders: EmbedderPool) -> Reranker | None:
    if settings.rerank_backend == "none":
        return None
    return load_reranker(
        settings.rerank_backend,
        settings.rerank_model,
        embedders=embedders,
        device=settings.embedding_device,
        fp16=settings.embedding_fp16,
        batch_size=settings.rerank_batch_size,
    )


def build_retriever(
    settings: Settings, store: VectorStore, embedders: EmbedderPool, *, load_reranker: bool = True
) -> Retriever:
    reranker = build_reranker(settings, embedders) if load_reranker else None
    return Retriever(store, LexicalIndexes(store, settings.data_dir / "lexical"), reranker)
