"""Embedding backends behind one ``Embedder`` protocol, and the pool that hands each KB its own model."""

from embeddings.base import Embedder
from embeddings.pool import EmbedderPool

__all__ = ["Embedder", "EmbedderPool"]
