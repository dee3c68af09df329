"""Conversions shared by both backends between records and flat rows."""

from __future__ import annotations

import json
from typing import Any

from kb_service.core.records import DocStatus, Document, EmbeddingModelInfo, KnowledgeBase

NO_PAGE = -1


def kb_to_json(kb: KnowledgeBase) -> str:
    return json.dumps(
        {
            "name": kb.name,
            "description": kb.description,
            "created_at": kb.created_at,
            "uid": kb.uid,
            "index": kb.index,
            "embedding": vars(kb.embedding),
        },
        ensure_ascii=False,
    )


def kb_from_json(raw: str) -> KnowledgeBase:
    data = json.loads(raw)
    return KnowledgeBase(
        name=data["name"],
        description=data.get("description", ""),
        created_at=data["created_at"],
        uid=data.get("uid", ""),  # knowledge bases created before identities have none
        index=data.get("index", ""),
        embedding=EmbeddingModelInfo(**data["embedding"]),
    )


DOC_FIELDS = (
    "doc_id",
    "source",
    "title",
    "format",
    "status",
    "error",
    "summary",
    "chunk_count",
    "n_chars",
    "metadata",
    "created_at",
    "updated_at",
)


def doc_to_row(doc: Document) -> dict[str, Any]:
    return {
        "doc_id": doc.id,
        "source": doc.source,
        "title": doc.title,
        "format": doc.format,
        "status": str(doc.status),
        "error": doc.error,
        "summary": doc.summary,
        "chunk_count": doc.chunk_count,
        "n_chars": doc.n_chars,
        "metadata": doc.metadata,
        "created_at": doc.created_at,
        "updated_at": doc.updated_at,
    }


def doc_from_row(row: dict[str, Any]) -> Document:
    meta = row.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    return Document(
        id=row["doc_id"],
        source=row["source"],
        title=row["title"],
        format=row["format"],
        status=DocStatus(row["status"]),
        error=row["error"],
        summary=row["summary"],
        chunk_count=int(row["chunk_count"]),
        n_chars=int(row["n_chars"]),
        metadata=dict(meta),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def page_in(page: int | None) -> int:
    return NO_PAGE if page is None else page


def page_out(page: int | None) -> int | None:
    return None if page is None or page == NO_PAGE else int(page)


def truncate_utf8(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")
