"""Knowledge-base life cycle. A KB records the embedding model it was built with and is always opened with it."""

from __future__ import annotations

from kb_service.core.errors import DocumentNotFound, KnowledgeBaseNotFound
from kb_service.core.records import Document, KnowledgeBase, possible_doc_id, validate_kb_name
from kb_service.embeddings.base import Embedder
from kb_service.embeddings.pool import EmbedderPool
from kb_service.stores.base import VectorStore
from kb_service.stores.originals import Originals


class Catalog:
    def __init__(self, store: VectorStore, embedders: EmbedderPool, originals: Originals | None = None) -> None:
        self.store = store
        self.embedders = embedders
        self.originals = originals

    def create(self, name: str, *, description: str = "", embedding_model: str | None = None) -> KnowledgeBase:
        """Create a KB bound to ``embedding_model`` (default: the configured one); the model is loaded to
        learn its dimension and weight fingerprint."""
        name = validate_kb_name(name)
        embedder = self.embedders.get(embedding_model)
        kb = KnowledgeBase(name=name, description=description, embedding=embedder.info)
        self.store.create_kb(kb)
        return kb

    def get(self, name: str) -> KnowledgeBase:
        return self.store.get_kb(validate_kb_name(name))

    def get_or_create(self, name: str, *, embedding_model: str | None = None) -> tuple[KnowledgeBase, bool]:
        """The KB and whether it was created now."""
        try:
            return self.get(name), False
        except KnowledgeBaseNotFound:
            return self.create(name, embedding_model=embedding_model), True

    def open(self, name: str, *, embedding_model: str | None = None) -> tuple[KnowledgeBase, Embedder]:
        """The KB with its own embedder; asking for another model raises EmbeddingModelMismatch."""
        kb = self.get(name)
        return kb, self.embedders.for_kb(kb, embedding_model)

    def document(self, name: str, doc_id: str) -> tuple[KnowledgeBase, Document]:
        """The KB and its document, or DocumentNotFound."""
        kb = self.get(name)
        doc = self.store.get_document(kb, doc_id) if possible_doc_id(doc_id) else None
        if doc is None:
            raise DocumentNotFound(name, doc_id)
        return kb, doc

    def list(self) -> list[KnowledgeBase]:
        return self.store.list_kbs()

    def drop(self, name: str) -> KnowledgeBase:
        """Drop the knowledge base; returns what it was (its derived indexes are the caller's to forget)."""
        kb = self.get(name)
        self.store.drop_kb(kb.name)
        if self.originals is not None:
            self.originals.drop(kb)
        return kb

    def delete_document(self, name: str, doc_id: str) -> None:
        """Delete a document: its row, its chunks and its original file (DocumentNotFound when absent)."""
        kb, _ = self.document(name, doc_id)
        self.store.delete_document(kb, doc_id)
        if self.originals is not None:
            self.originals.delete(kb, doc_id)
