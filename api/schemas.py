"""Request and response bodies (pydantic at the edge; records inside)."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kb_service.core import limits
from kb_service.core.config import Settings
from kb_service.core.records import MAX_KB_NAME_CHARS, DocStatus, Document, KnowledgeBase, ScoredChunk
from kb_service.generation.answer import Answer
from kb_service.generation.llm import Usage
from kb_service.generation.synthesis import Synthesis
from kb_service.jobs import Job
from kb_service.reindex import ReindexPlan, ReindexStatus
from kb_service.retrieval.options import RefineKind
from kb_service.retrieval.pipeline import SearchOptions, SearchResult
from kb_service.stores.base import Reindexable, VectorStore
from kb_service.sync import SyncReport

# AskRequest's sampling fields
SAMPLING = {
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
    "seed",
}


class KnowledgeBaseCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=2000)
    embedding_model: str | None = Field(default=None, description="Name or path; default: the service's model.")


class KnowledgeBasePublic(BaseModel):
    name: str
    description: str
    embedding_model: str
    dimension: int
    fingerprint: str = Field(default="", description="Of the embedding model's weights.")
    index: str = Field(default="", description="Which index serves: a re-index switches to a new one.")
    created_at: float
    documents: int | None = None
    chunks: int | None = None
    reindexing: bool = Field(
        default=False, description="A re-index is recorded: running, built beside, or interrupted (GET …/reindex)."
    )

    @classmethod
    def of(cls, kb: KnowledgeBase, *, documents: int | None = None, chunks: int | None = None) -> KnowledgeBasePublic:
        return cls(
            name=kb.name,
            description=kb.description,
            embedding_model=kb.embedding.name,
            dimension=kb.embedding.dimension,
            fingerprint=kb.embedding.fingerprint,
            index=kb.index,
            created_at=kb.created_at,
            documents=documents,
            chunks=chunks,
        )

    @classmethod
    def counted(cls, kb: KnowledgeBase, store: VectorStore) -> KnowledgeBasePublic:
        """With its document and chunk counts (all statuses), and whether a re-index of it is recorded."""
        public = cls.of(kb, documents=store.count_documents(kb), chunks=store.count_chunks(kb))
        public.reindexing = isinstance(store, Reindexable) and store.reindex_of(kb) is not None
        return public


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="Text or texts to embed.")
    model: str | None = Field(default=None, description="Model name; default: the service's embedding model.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="'base64': little-endian float32 bytes, what the OpenAI SDK asks for by default."
    )


class EmbeddingItem(BaseModel):
    object: str = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: str = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


Scalar = str | int | float | bool


EXPAND = "Widen each hit to this many neighbouring chunks on either side, within its section (KB_SEARCH_EXPAND)."
REFINE = (
    "Query refinements, each searched and fused with the question's ranking (default KB_SEARCH_REFINE): 'keywords' "
    "(terms of the first search's best passages, no LLM), 'multi_query', 'hyde', 'decompose' (the configured LLM)."
)
SYNTHESIS = (
    "How the model's answer is put together (default KB_ANSWER_SYNTHESIS): 'compact' (one prompt), 'refine' (an "
    "answer refined source group by group), 'map_reduce' (a partial answer per group, then combined)."
)
RefineList = list[RefineKind]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(default=None, ge=1, le=limits.MAX_TOP_K)
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    gate: bool | None = Field(default=None, description="Two-stage document gate; default from settings.")
    rerank: bool | None = None
    hops: int | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_HOPS,
        description="> 1: multi-hop: search again for the entities the best passages name (default KB_SEARCH_HOPS).",
    )
    hop_strategy: Literal["entities", "llm"] | None = Field(
        default=None,
        description="What a later hop looks up: 'entities' (the names its passages give, no LLM) or 'llm' (the "
        "configured LLM's queries for what the question still needs); default KB_SEARCH_HOP_STRATEGY.",
    )
    filters: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None, description='Field -> value or list of values, e.g. {"source": "a.pdf", "lang": ["en", "de"]}.'
    )
    expand: int | None = Field(default=None, ge=0, le=limits.MAX_EXPAND, description=EXPAND)
    refine: RefineList | None = Field(default=None, max_length=4, description=REFINE)
    trace: bool = False

    def options(self, settings: Settings) -> SearchOptions:
        """The configured defaults with this request's fields on top."""
        return SearchOptions.from_settings(
            settings,
            top_k=self.top_k,
            mode=self.mode,
            gate=self.gate,
            rerank=self.rerank,
            hops=self.hops,
            hop_strategy=self.hop_strategy,
            filters=self.filters,
            expand=self.expand,
            refine=tuple(self.refine) if self.refine is not None else None,
            trace=self.trace,
        )


class ChunkHit(BaseModel):
    score: float
    stages: dict[str, float]
    knowledge_base: str = Field(default="", description="The knowledge base it was found in.")
    window: list[str] = Field(
        default_factory=list,
        description="With expand: the chunk ids of the hit and its neighbours (document order) that an answer shows.",
    )
    doc_id: str
    chunk_id: str
    source: str
    title: str
    page: int | None
    bbox: list[float] | None = Field(
        default=None, description="Where the text is on the page: x0, top, x1, bottom as fractions of the page."
    )
    section: str | None
    start: int
    end: int
    text: str

    @classmethod
    def of(cls, hit: ScoredChunk) -> ChunkHit:
        return cls(**hit.provenance())


class RoutePublic(BaseModel):
    knowledge_base: str
    score: float | None = Field(
        description="The router's score: its best document summary's, against the query (null: no document)."
    )
    searched: bool
    documents: list[str] = Field(description="The documents whose summaries were scored, best first.")


class GatedDocument(BaseModel):
    doc_id: str
    source: str
    title: str
    score: float


class HopPublic(BaseModel):
    queries: list[str] = Field(description="The question (first hop), then the entities each later hop looked up.")
    hits: list[list[ChunkHit]] = Field(description="Each query's hits, best first.")
    ms: float


class RefinementPublic(BaseModel):
    kind: str
    queries: list[str] = Field(description="The queries this refinement searched besides the question.")
    hits: list[list[ChunkHit]] = Field(description="Each query's hits, best first.")
    ms: float


class SearchTracePublic(BaseModel):
    gated: list[GatedDocument]
    candidates: list[ChunkHit]
    reranked: list[ChunkHit]
    timings_ms: dict[str, float]
    hops: list[HopPublic] = Field(default_factory=list, description="A multi-hop search's rounds (hops > 1).")
    routes: list[RoutePublic] = Field(
        default_factory=list, description="A search over several knowledge bases: each one's router score, best first."
    )
    refinements: list[RefinementPublic] = Field(default_factory=list, description="A refined search's queries.")


class SearchResponse(BaseModel):
    query: str
    hits: list[ChunkHit]
    trace: SearchTracePublic | None = None

    @classmethod
    def of(cls, result: SearchResult, *, trace: bool) -> SearchResponse:
        t = result.trace
        public = None
        if trace:
            public = SearchTracePublic(
                gated=[
                    GatedDocument(doc_id=d.document.id, source=d.document.source, title=d.document.title, score=d.score)
                    for d in t.gated
                ],
                candidates=[ChunkHit.of(h) for h in t.candidates],
                reranked=[ChunkHit.of(h) for h in t.reranked],
                timings_ms=t.timings_ms,
                hops=[
                    HopPublic(queries=h.queries, hits=[[ChunkHit.of(c) for c in found] for found in h.hits], ms=h.ms)
                    for h in t.hops
                ],
                routes=[RoutePublic(**asdict(r)) for r in t.routes],
                refinements=[
                    RefinementPublic(
                        kind=r.kind, queries=r.queries, hits=[[ChunkHit.of(c) for c in f] for f in r.hits], ms=r.ms
                    )
                    for r in t.refinements
                ],
            )
        return cls(query=result.query, hits=[ChunkHit.of(h) for h in result.hits], trace=public)


class KnowledgeBasesFields(BaseModel):
    """A search or question over several knowledge bases at once."""

    knowledge_bases: list[Annotated[str, Field(min_length=1, max_length=MAX_KB_NAME_CHARS)]] | None = Field(
        default=None,
        min_length=1,
        max_length=limits.MAX_KNOWLEDGE_BASES,
        description="The knowledge bases to search (default: every one the API key may use).",
    )
    route: bool | None = Field(
        default=None,
        description="Rank the knowledge bases by their document summaries and search only the best (KB_SEARCH_ROUTE).",
    )
    route_kbs: int | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_KNOWLEDGE_BASES,
        description="At most this many knowledge bases searched (KB_SEARCH_ROUTE_KBS).",
    )

    def routing(self) -> dict[str, Any]:
        return {"route": self.route, "route_kbs": self.route_kbs}


class MultiSearchRequest(SearchRequest, KnowledgeBasesFields):
    def options(self, settings: Settings) -> SearchOptions:
        return replace(super().options(settings), **{k: v for k, v in self.routing().items() if v is not None})


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class SamplingFields(BaseModel):
    """Sampling parameters shared by ``/ask`` and ``/v1/chat/completions``; unset ones take the configured defaults."""

    temperature: float | None = Field(default=None, ge=0.0, le=limits.MAX_TEMPERATURE)
    top_p: float | None = Field(default=None, gt=0.0, le=limits.MAX_TOP_P)
    top_k: int | None = Field(
        default=None, ge=1, le=limits.MAX_SAMPLING_TOP_K, description="Sampling top-k (not the number of sources)."
    )
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=limits.MAX_REPETITION_PENALTY)
    presence_penalty: float | None = Field(
        default=None, ge=-limits.MAX_PENALTY, le=limits.MAX_PENALTY, description="OpenAI's: once per token used."
    )
    frequency_penalty: float | None = Field(
        default=None, ge=-limits.MAX_PENALTY, le=limits.MAX_PENALTY, description="OpenAI's: per use of a token."
    )
    max_tokens: int | None = Field(default=None, ge=1, le=limits.MAX_TOKENS)
    seed: int | None = None


class AskRequest(SamplingFields):
    question: str = Field(min_length=1, max_length=4000)
    history: list[ChatMessage] = Field(default_factory=list, max_length=50)
    stream: bool = False
    sources: int | None = Field(default=None, ge=1, le=50, description="Retrieved chunks offered to the model.")
    filters: dict[str, Scalar | list[Scalar]] | None = None
    stop: list[str] | None = Field(default=None, max_length=limits.MAX_STOP_SEQUENCES)
    rewrite: bool | None = Field(default=None, description="Rewrite a follow-up into a standalone query.")
    answer_mode: Literal["auto", "generated", "extractive"] | None = Field(
        default=None, description="Who writes the answer (default KB_ANSWER_MODE): the LLM, or quoted sentences."
    )
    expand: int | None = Field(default=None, ge=0, le=limits.MAX_EXPAND, description=EXPAND)
    refine: RefineList | None = Field(default=None, max_length=4, description=REFINE)
    compress: bool | None = Field(
        default=None,
        description="Each source keeps only the sentences that bear on the question (default KB_ANSWER_COMPRESS).",
    )
    synthesis: Synthesis | None = Field(default=None, description=SYNTHESIS)

    def search_options(self, settings: Settings) -> SearchOptions:
        """How the sources are retrieved: the configured defaults with this request's fields on top."""
        return SearchOptions.from_settings(settings, **self._search_fields())

    def _search_fields(self) -> dict[str, Any]:
        refine = tuple(self.refine) if self.refine is not None else None
        return {"filters": self.filters, "expand": self.expand, "refine": refine}


class MultiAskRequest(AskRequest, KnowledgeBasesFields):
    def search_options(self, settings: Settings) -> SearchOptions:
        return SearchOptions.from_settings(settings, **self._search_fields(), **self.routing())


class ChunkRefPublic(BaseModel):
    number: int = Field(description="The number the answer cites it by, as in [1].")
    doc_id: str
    chunk_id: str
    source: str
    title: str
    page: int | None
    bbox: list[float] | None = Field(
        default=None, description="Where the text is on the page: x0, top, x1, bottom as fractions of the page."
    )
    section: str | None
    knowledge_base: str = Field(default="", description="The knowledge base the chunk is in.")


class CitationPublic(ChunkRefPublic):
    snippet: str = Field(description="The evidence: chunk text[evidence_start:evidence_end], which supports the claim.")
    inferred: bool = Field(description="Attributed by textual support because the model cited nothing.")
    status: Literal["verified", "corrected", "inferred"] = Field(
        description="verified: cited by the model and supported; corrected: moved here from a source that does not "
        "support the claim; inferred: the model cited nothing, this source supports the claim strongly."
    )
    support: float = Field(
        description="Share of the claim's content in the evidence span (0..1); 0 if a fact is missing."
    )
    evidence_start: int = Field(description="Offset of the evidence span in the chunk's text.")
    evidence_end: int
    claim: str = Field(description="The claim of the answer that cites this source.")


class UnsupportedClaimPublic(BaseModel):
    text: str
    start: int = Field(description="Offset in the answer text.")
    end: int


class RemovedCitationPublic(BaseModel):
    number: int
    claim: str
    support: float
    reason: str


class SourcePublic(ChunkRefPublic):
    rank: int = Field(description="Retrieval rank (the prompt orders sources strongest-at-the-edges).")
    score: float
    text: str
    trimmed: bool


class UsagePublic(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> UsagePublic:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


class AnswerPublic(BaseModel):
    question: str
    answer: str
    mode: Literal["generated", "extractive", "no_sources"]
    refused: bool
    citations: list[CitationPublic]
    sources: list[SourcePublic]
    query: str
    model: str
    reasoning: str
    usage: UsagePublic
    finish_reason: str = Field(description="stop, length, or repetition (the degeneration guard cut the answer).")
    unsupported_claims: list[UnsupportedClaimPublic]
    removed_citations: list[RemovedCitationPublic]
    invalid_citations: list[int]
    citations_inferred: bool
    verified: bool
    llm_error: str
    timings_ms: dict[str, float]
    synthesis: str = Field(default="compact", description="How the model's answer was put together.")
    synthesis_steps: list[str] = Field(
        default_factory=list, description="refine / map_reduce: what each step before the last wrote."
    )

    @classmethod
    def of(cls, answer: Answer) -> AnswerPublic:
        fields = asdict(answer)
        fields["answer"] = fields.pop("text")
        fields["usage"] = UsagePublic.of(answer.usage)
        return cls(**fields)


class DocumentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=500, description="The document's name (its identity for replacement).")
    text: str = Field(min_length=1)
    metadata: dict[str, Scalar] = Field(default_factory=dict)


class JobPublic(BaseModel):
    id: str
    kb: str
    source: str
    status: Literal["queued", "parsing", "chunking", "embedding", "storing", "ready", "failed"]
    outcome: str
    doc_id: str | None
    replaced: str | None
    chunks: int
    reason: str
    error: str
    worker: str = Field(description="The `kb worker` that ran it (host:pid) with a job queue; empty without one.")
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(**asdict(job))


class JobList(BaseModel):
    jobs: list[JobPublic]


class DocumentPublic(BaseModel):
    id: str = Field(description="SHA-256 of the normalised text: the content hash.")
    source: str
    title: str
    format: str
    status: str
    error: str
    summary: str
    chunk_count: int
    n_chars: int
    metadata: dict[str, Any]
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, doc: Document) -> DocumentPublic:
        fields = asdict(doc)
        fields.pop("summary_vector", None)
        return cls(**fields)


MAX_DOCUMENT_OFFSET = 10_000_000
MAX_DOCUMENT_PAGE = 1000


class DocumentQuery(BaseModel):
    """Which page of a knowledge base's documents (the query of ``GET …/documents``)."""

    status: DocStatus | None = None
    offset: int = Field(default=0, ge=0, le=MAX_DOCUMENT_OFFSET)
    limit: int = Field(default=100, ge=1, le=MAX_DOCUMENT_PAGE)


class PageQuery(BaseModel):
    """Which page of a document to render, and how wide (``GET …/documents/{id}/pages/{n}.png``)."""

    page: int = Field(ge=1, le=limits.MAX_PAGE_NUMBER)
    width: int = Field(default=limits.DEFAULT_PAGE_WIDTH, ge=limits.MIN_PAGE_WIDTH, le=limits.MAX_PAGE_WIDTH)


class DocumentPage(BaseModel):
    documents: list[DocumentPublic]
    total: int
    offset: int
    limit: int


class ResiduePublic(BaseModel):
    """What is left of a document in the store and the lexical index; ``clean`` once it is completely gone."""

    doc_id: str
    document: str | None = Field(description="Status of a remaining document row, null when there is none.")
    chunks: int
    lexical_entries: int
    original_files: int = Field(description="The document's original file, 1 while it is kept.")
    clean: bool


class AuditPublic(BaseModel):
    """Documents by status and chunk counts; ``leftover_chunks`` belong to no ready document,
    ``incomplete_documents`` are ready documents without all the chunks they declare and ``orphan_originals`` are
    original files without their document (all 0 when healthy)."""

    documents: dict[str, int]
    chunks: int
    chunks_of_ready: int
    leftover_chunks: int
    incomplete_documents: int
    originals: int = Field(description="Original files kept.")
    orphan_originals: int = Field(description="Original files whose document is gone (0 when healthy).")
    clean: bool


class SyncRequest(BaseModel):
    dry_run: bool = Field(default=False, description="Only report what would change.")


class SyncFailurePublic(BaseModel):
    path: str
    reason: str
    error: str


class SyncReportPublic(BaseModel):
    """One sync of a knowledge base from its source: paths inside the source, by what happened to them."""

    knowledge_base: str
    source: str = Field(description="The folder, as an absolute path, or s3://bucket/prefix/.")
    dry_run: bool
    added: list[str] = Field(description="New at the source (or gone from the knowledge base): ingested.")
    changed: list[str] = Field(description="Other bytes than at the last sync: their documents replaced.")
    deleted: list[str] = Field(description="Gone from the source: their documents deleted.")
    unchanged: int = Field(description="Files skipped: the same as at the last sync (not parsed).")
    failed: list[SyncFailurePublic] = Field(description="Files that could not be ingested; tried again next time.")
    clean: bool = Field(description="Every deleted document left nothing behind (its residue check).")
    seconds: float

    @classmethod
    def of(cls, report: SyncReport) -> SyncReportPublic:
        return cls(**asdict(report))


class ReindexRequest(BaseModel):
    """A re-index: the embedding model to build the new index with and, to re-chunk the documents from their kept
    original files, the chunking (without it, the stored chunks are embedded again as they are)."""

    model_config = ConfigDict(extra="forbid")

    embedding_model: str = Field(min_length=1, max_length=1000, description="A model name or path.")
    chunk_size: int | None = Field(default=None, ge=16, le=8192, description="Tokens per chunk: re-chunk.")
    chunk_overlap: int | None = Field(default=None, ge=0, le=8192, description="Tokens of overlap: re-chunk.")
    switch: bool = Field(default=True, description="false: build the new index and keep it beside, to compare.")

    def plan(self) -> ReindexPlan:
        return ReindexPlan(self.embedding_model, self.chunk_size, self.chunk_overlap)


class ReindexStatusPublic(BaseModel):
    """Where a re-index is. ``state``: building (copying documents into the new index), switching, ready (the new
    index serves), failed or cancelled (the knowledge base is as it was), built (asked not to switch: kept beside the
    serving index, to compare; starting it again switches), interrupted (recorded by a process that stopped: start it
    again to resume)."""

    knowledge_base: str
    embedding_model: str
    chunk_size: int | None
    chunk_overlap: int | None
    state: Literal["building", "switching", "ready", "failed", "cancelled", "built", "interrupted"]
    documents: int = Field(description="Ready documents of the serving index, at the last pass.")
    copied: int = Field(description="Documents written into the new index by this run.")
    kept: int = Field(description="Documents the new index held already when this run started (resumed).")
    removed: int = Field(description="Documents removed from the new index: deleted or replaced meanwhile.")
    chunks: int = Field(description="Chunks embedded by this run.")
    passes: int
    started_at: float
    updated_at: float
    seconds: float
    error: str
    index: str = Field(description="The new index's id.")
    dimension: int = Field(description="The new model's vector dimension.")

    @classmethod
    def of(cls, status: ReindexStatus) -> ReindexStatusPublic:
        return cls(**asdict(status))
