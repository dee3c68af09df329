"""Request and response bodies (pydantic at the edge; records inside)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.records import KnowledgeBase


class KnowledgeBaseCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=2000)
    embedding_model: str | None = Field(default=None, description="Name or path; default: the service's model.")


class KnowledgeBasePublic(BaseModel):
    name: str
    description: str
    embedding_model: str
    dimension: int
    created_at: float
    documents: int | None = None
    chunks: int | None = None

    @classmethod
    def of(cls, kb: KnowledgeBase, *, documents: int | None = None, chunks: int | None = None) -> KnowledgeBasePublic:
        return cls(
            name=kb.name,
            description=kb.description,
            embedding_model=kb.embedding.name,
            dimension=kb.embedding.dimension,
            created_at=kb.created_at,
            documents=documents,
            chunks=chunks,
        )


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="Text or texts to embed.")
    model: str | None = Field(default=None, description="Model name; default: the service's embedding model.")
    encoding_format: str = Field(default="float", pattern="^float$")


class EmbeddingItem(BaseModel):
    object: str = "embedding"
    index: int
    embedding: list[float]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: str = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
