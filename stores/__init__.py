"""Vector stores: one typed interface (``VectorStore``), two real backends (Milvus, pgvector)."""

from stores.base import VectorStore
from stores.factory import open_store

__all__ = ["VectorStore", "open_store"]
