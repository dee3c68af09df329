"""Bodies of OpenAI's Files and Vector Stores APIs, in OpenAI's shapes (what its SDK sends and parses)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kb_service.filesearch.registry import StoredFile
from kb_service.filesearch.service import FileHit, StoreFile

MAX_PAGE = 100
FileId = Annotated[str, Field(min_length=1, max_length=128)]
Purpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None

    @classmethod
    def of(cls, f: StoredFile) -> FileObject:
        return cls(id=f.id, bytes=f.bytes, created_at=int(f.created_at), filename=f.filename, purpose=f.purpose)


class Page(BaseModel):
    object: Literal["list"] = "list"
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileList(Page):
    data: list[FileObject]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class FileCounts(BaseModel):
    in_progress: int
    completed: int
    failed: int
    cancelled: int
    total: int


class ExpiresAfter(BaseModel):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


class ChunkingStrategy(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["auto", "static"]


class VectorStoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    description: str = Field(default="", max_length=2000)
    file_ids: list[FileId] = Field(default_factory=list, max_length=500)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    expires_after: ExpiresAfter | None = None


class VectorStoreObject(BaseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    description: str = ""
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["in_progress", "completed"]
    last_active_at: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    expires_after: ExpiresAfter | None = None
    expires_at: int | None = None


class VectorStoreList(Page):
    data: list[VectorStoreObject]


class FileAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_id: FileId
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_ids: list[FileId] | None = Field(default=None, min_length=1, max_length=500)
    files: list[FileAttach] | None = Field(default=None, min_length=1, max_length=500)
    attributes: dict[str, str | int | float | bool] | None = None
    chunking_strategy: ChunkingStrategy | None = None


class LastError(BaseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class VectorStoreFileObject(BaseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "failed", "cancelled"]
    usage_bytes: int
    last_error: LastError | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    chunking_strategy: dict[str, Any] = Field(default_factory=lambda: {"type": "other"})
    filename: str = Field(description="Not OpenAI's: the file's name.")

    @classmethod
    def of(cls, f: StoreFile, vector_store_id: str) -> VectorStoreFileObject:
        error = LastError(code=f.error_code or "server_error", message=f.error) if f.status == "failed" else None  # type: ignore[arg-type]
        return cls(
            id=f.id,
            created_at=int(f.created_at),
            vector_store_id=vector_store_id,
            status=f.status,
            usage_bytes=f.usage_bytes,
            last_error=error,
            attributes=f.attributes,
            filename=f.filename,
        )


class VectorStoreFileList(Page):
    data: list[VectorStoreFileObject]


class BatchObject(BaseModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "failed", "cancelled"]
    file_counts: FileCounts


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ranker: Literal["auto", "default-2024-11-15", "none"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class VectorStoreSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | list[str] = Field(description="One query, or several whose results are fused (reciprocal rank).")
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = Field(default=False, description="Accepted; the query is searched as given.")

    def queries(self) -> list[str]:
        queries = [self.query] if isinstance(self.query, str) else self.query
        return [q for q in queries if q.strip()]


class ContentPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    content: list[ContentPart]
    chunk_id: str = Field(description="Not OpenAI's: the chunk, for GET …/documents/{doc_id} and citations.")
    page: int | None = None

    @classmethod
    def of(cls, h: FileHit) -> SearchResult:
        return cls(
            file_id=h.file_id,
            filename=h.filename,
            score=h.hit.score,
            attributes=h.attributes,
            content=[ContentPart(text=h.hit.chunk.text)],
            chunk_id=h.hit.chunk.id,
            page=h.hit.chunk.page,
        )


class SearchResultPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


def page_of(
    items: list[Any], *, after: str | None, before: str | None, limit: int, order: str
) -> tuple[list[Any], bool]:
    """OpenAI's cursor paging over ``items`` (oldest first, each with an ``id``): the page and whether more follow."""
    ordered = items if order == "asc" else items[::-1]
    ids = [item.id for item in ordered]
    start, end = 0, len(ordered)
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(ordered)
    if before is not None:
        end = ids.index(before) if before in ids else 0
    window = ordered[start:end]
    return window[:limit], len(window) > limit
