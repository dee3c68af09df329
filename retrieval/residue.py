"""Proof that a deleted document is gone: no document row, no chunk in the store, no entry in the lexical index
(rebuilt at the store's current revision), no original file."""

from __future__ import annotations

from dataclasses import dataclass

from kb_service.core.records import KnowledgeBase, possible_doc_id
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.stores.base import VectorStore
from kb_service.stores.originals import Originals


@dataclass
class Residue:
    doc_id: str
    document: str | None  # the row's status when a row remains, else None
    chunks: int
    lexical_entries: int
    original_files: int = 0

    @property
    def clean(self) -> bool:
        return self.document is None and self.chunks == 0 and self.lexical_entries == 0 and self.original_files == 0


def residue(
    store: VectorStore,
    lexical: LexicalIndexes,
    kb: KnowledgeBase,
    doc_id: str,
    originals: Originals | None = None,
) -> Residue:
    if not possible_doc_id(doc_id):  # no document ever had it
        return Residue(doc_id=doc_id, document=None, chunks=0, lexical_entries=0)
    doc = store.get_document(kb, doc_id)
    return Residue(
        doc_id=doc_id,
        document=None if doc is None else str(doc.status),
        chunks=store.count_chunks(kb, doc_id=doc_id),
        lexical_entries=lexical.get(kb).entries(doc_id),
        original_files=int(originals is not None and originals.get(kb, doc_id) is not None),
    )
