"""Embedding backends behind one ``Embedder`` protocol, and the pool that hands each KB its own model."""

from kb_service.embeddings.base import Embedder
from kb_service.embeddings.pool import EmbedderPool

__all__ = ["Embedder", "EmbedderPool"]
