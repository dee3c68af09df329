"""The one settings object of the service. Every configurable value is read here and nowhere else.

``Settings`` is nested by subsystem (``settings.store.backend``, ``settings.search.top_k`` …). Each value keeps its
flat environment name (``KB_BACKEND``, ``KB_SEARCH_TOP_K`` …; ``Group.flat_names`` maps one to the other), and the
same flat names work as keyword arguments: ``Settings(backend="pgvector", chunk_size=128)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kb_service.core import limits

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_LLM_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ENV_PREFIX = "KB_"


def default_model_cache() -> Path:
    """``$XDG_CACHE_HOME/kb-models`` (``~/.cache/kb-models``): where models built or converted here are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "kb-models"


class ApiKey(BaseModel):
    """An API key; ``kbs`` scopes it to those knowledge bases (None: all of them, and creating new ones)."""

    key: SecretStr
    name: str = "key"
    kbs: list[str] | None = None

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("API keys must be at least 16 characters long")
        return value


class Group(BaseModel):
    """One subsystem's settings. A field's environment name is ``KB_`` + its flat name: ``env_prefix`` + the field's
    name, unless ``env_names`` says otherwise."""

    model_config = ConfigDict(extra="forbid")
    env_prefix: ClassVar[str] = ""
    env_names: ClassVar[Mapping[str, str]] = {}
    env_aliases: ClassVar[Mapping[str, tuple[str, ...]]] = {}  # further whole environment names (no prefix)

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """Field name → flat name (the environment name without ``KB_``, lower case)."""
        return {name: cls.env_names.get(name, cls.env_prefix + name) for name in cls.model_fields}


class StoreSettings(Group):
    """Where knowledge bases are stored (``KB_BACKEND``, ``KB_MILVUS_*``, ``KB_PG_*``)."""

    backend: Literal["milvus", "pgvector"] = "milvus"
    milvus_uri: str | None = Field(
        default=None, description="Milvus server URI; default: a Milvus Lite file under data_dir."
    )
    milvus_token: SecretStr | None = None
    milvus_index_type: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = "HNSW"
    milvus_lite_process: bool = Field(
        default=True,
        description="Run the embedded Milvus Lite in a child process (true) or in this process's threads, where its "
        "pure-Python engine competes for the GIL with the API and the models.",
    )
    milvus_lite_speedups: bool = Field(
        default=True,
        description="Let the embedded Milvus Lite find live rows by key-set intersections instead of its walk over "
        "every row in Python, read result rows column-wise, and finish a flush once its indexes are built "
        "(kb_service/stores/milvus_lite_speedups.py; same results; 100k chunks: a search in 0.09x the time).",
    )
    pg_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN; default: an embedded PostgreSQL (pgserver) in data_dir."
    )
    pg_hnsw_min_rows: int = Field(
        default=5_000,
        ge=0,
        description="A KB's vectors are searched exactly until a table holds this many rows; then an HNSW index is "
        "built in one go at the end of an ingest.",
    )


class EmbeddingSettings(Group):
    """The embedding models (``KB_EMBEDDING_*``, ``KB_MODEL_CACHE``)."""

    env_prefix = "embedding_"
    env_names = {"model_cache": "model_cache"}

    backend: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="Model name or local path for new knowledge bases (existing ones keep their own).",
    )
    device: str = Field(default="auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0'…")
    fp16: bool = Field(default=True, description="Half precision when running on CUDA.")
    cpu_bf16: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="bfloat16 on the CPU (embedding and reranking models): 'auto' when the CPU has native bf16 units "
        "(AMX or AVX512-BF16; measured 2.2-2.6x faster on 2 cores, cosine to fp32 >= 0.996), else fp32.",
    )
    query_runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="What embeds search queries on the CPU: 'onnx' (ONNX Runtime, the model's transformer exported "
        "once into the model cache; a third faster than bf16 PyTorch for one short query, docs/BENCHMARKS.md), "
        "'torch', or 'auto' (onnx where the model allows it, torch on a GPU). Documents always go through PyTorch.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Texts per model call; unset: 32 on the CPU, 256 on CUDA (64 for an OpenAI-compatible server).",
    )
    api_base: str | None = Field(default=None, description="Base URL of an OpenAI-compatible /v1/embeddings server.")
    api_key: SecretStr | None = None
    allowed_models: list[str] = Field(
        default_factory=lambda: [DEFAULT_EMBEDDING_MODEL, "intfloat/multilingual-e5-small"],
        description="JSON list of the models a request (a new knowledge base, /v1/embeddings) may load, besides the "
        'configured model, the reranker\'s and those of existing knowledge bases; names or local paths; ["*"]: any.',
    )
    model_cache: Path = Field(
        default_factory=default_model_cache,
        description="Where models built or converted here (offline e5, SmolLM2, ONNX query encoders) are kept.",
    )

    @model_validator(mode="after")
    def _openai_needs_base(self) -> EmbeddingSettings:
        if self.backend == "openai" and not self.api_base:
            raise ValueError("KB_EMBEDDING_BACKEND=openai needs KB_EMBEDDING_API_BASE (e.g. http://host:8000/v1)")
        return self


class IngestSettings(Group):
    """Parsing, chunking and summarising documents (``KB_CHUNK_*``, ``KB_SUMMARY_*``, ``KB_MAX_FILE_BYTES`` …)."""

    env_names = {"batch_chunks": "ingest_batch_chunks"}

    chunk_size: int = Field(default=256, ge=16, description="Maximum tokens per chunk (model tokenizer).")
    chunk_overlap: int = Field(default=32, ge=0)
    chunk_context: Literal["none", "document"] = Field(
        default="none",
        description="What a chunk is indexed with besides its text (dense and lexical): 'document', its document's "
        "title and telling file name, so a chunk that does not name its document (a table row, a later paragraph) "
        "still matches a question that does; the stored text and citations are unchanged.",
    )
    summary_tokens: int = Field(default=200, ge=16, description="Token budget of an extractive summary.")
    summary_vector: Literal["embed", "chunk-mean"] = Field(
        default="embed",
        description="How a document's summary vector (the gate's dense side) is made: 'embed' the summary text, "
        "or 'chunk-mean', the normalised mean of its chunk vectors (no extra model work).",
    )
    summary_backend: Literal["extractive", "llm"] = Field(
        default="extractive", description="'llm': summaries written by the LLM (extractive when it fails)."
    )
    summary_input_tokens: int = Field(default=1024, ge=64, description="Per-document input cap for LLM summaries.")
    summary_concurrency: int = Field(default=4, ge=1, le=64, description="LLM summary requests in flight.")
    batch_chunks: int = Field(default=512, ge=1, description="Chunks embedded and written together across documents.")
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    ocr: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="OCR (RapidOCR, models from PyPI): 'auto' reads scanned PDF pages and image files, 'on' every "
        "PDF page, 'off' none (a scan is then refused).",
    )
    ocr_min_confidence: float = Field(
        default=0.6, ge=0, le=1, description="A page OCR reads with a lower mean confidence is reported, not kept."
    )
    parse_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Processes that parse files (PDF, office, images) side by side: 0 = auto (three cores or more: "
        "one per core but one, at most 4; else in-process), 1 = in the ingesting process.",
    )
    keep_originals: bool = Field(
        default=True,
        description="Keep each document's original file (downloadable, pages rendered) in <data_dir>/originals.",
    )
    sync_sources: dict[str, str] = Field(
        default_factory=dict,
        description="Knowledge base -> folder or s3://bucket/prefix that POST /v1/knowledge-bases/{kb}/sync "
        'mirrors, as JSON: {"manuals": "/srv/manuals"} (the kb sync command takes any source).',
    )
    reindex_retire_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="After a re-index switches a knowledge base to its new index, the old one keeps answering the "
        "searches that had started on it for this long, then it is removed.",
    )
    queue_url: str | None = Field(
        default=None,
        description="A job queue's broker (amqp://user:password@host:5672//, RabbitMQ): uploads are ingested by "
        "`kb worker` processes on any machine instead of in the API process. Needs KB_BACKEND=pgvector (job state is "
        "kept in PostgreSQL) and KB_DATA_DIR on a volume the API replicas and workers share (uploads, originals).",
    )
    queue_batch_docs: int = Field(
        default=16,
        ge=1,
        le=1_000,
        description="With a job queue: the documents of an upload sent as one message, ingested together by one "
        "worker (batched model and store calls); an upload of more is spread over the workers.",
    )
    recovery_grace_s: float = Field(
        default=0.0,
        ge=0,
        description="At start-up, documents left unfinished by a crash are removed when untouched for this long; "
        "with several API replicas on one store set it above the longest store write (e.g. 600).",
    )

    @field_validator("queue_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # KB_QUEUE_URL= (a compose file's empty default): no queue

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class SearchSettings(Group):
    """Retrieval defaults (``KB_SEARCH_*``, ``KB_GATE*``, ``KB_RRF_K``); a request may override each."""

    env_prefix = "search_"
    env_names = {"rrf_k": "rrf_k", "gate": "gate", "gate_docs": "gate_docs", "gate_fallback": "gate_fallback"}

    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    top_k: int = Field(default=10, ge=1, le=limits.MAX_TOP_K)
    candidates: int = Field(
        default=50, ge=1, le=limits.MAX_CANDIDATES, description="Chunks per retriever before fusion."
    )
    rrf_k: int = Field(default=20, ge=1, le=1000, description="Reciprocal rank fusion constant k.")
    gate: bool = Field(default=True, description="Two-stage: pick documents by their summaries first.")
    gate_docs: int = Field(default=20, ge=1, le=limits.MAX_CANDIDATES, description="Documents the gate keeps (N).")
    gate_fallback: bool = Field(default=True, description="Also search all chunks, so a wrong gate hides nothing.")
    hops: int = Field(
        default=1,
        ge=1,
        le=limits.MAX_HOPS,
        description="> 1: iterative multi-hop retrieval, following the entities the best passages name (no LLM).",
    )
    hop_budget_ms: float = Field(default=2000.0, gt=0, le=60_000, description="No new hop starts after this long.")
    hop_strategy: Literal["entities", "llm"] = Field(
        default="entities",
        description="What a later hop looks up: the names the best passages give (no LLM), or the queries the "
        "configured LLM writes for what the question still needs.",
    )
    expand: int = Field(
        default=0,
        ge=0,
        le=limits.MAX_EXPAND,
        description="Widen each hit to this many neighbouring chunks on either side, within its section, before an "
        "answer's prompt (0: the chunk alone).",
    )
    refine: list[Literal["keywords", "multi_query", "hyde", "decompose"]] = Field(
        default_factory=list,
        description='JSON list of query refinements, each searched and fused with the question\'s ranking: "keywords" '
        '(terms of the first search\'s best passages, no LLM), "multi_query", "hyde", "decompose" (written by '
        "the configured LLM).",
    )
    route: bool = Field(
        default=True,
        description="Over several knowledge bases: rank them by their best document summaries and search only the "
        "best (false: search every one named).",
    )
    route_kbs: int = Field(
        default=3, ge=1, le=limits.MAX_KNOWLEDGE_BASES, description="At most this many knowledge bases searched."
    )
    route_margin: float = Field(
        default=0.05,
        ge=0,
        le=2,
        description="Knowledge bases whose router score is within this much of the best one's are searched too.",
    )


class RerankSettings(Group):
    """The reranker (``KB_RERANK_*``)."""

    env_prefix = "rerank_"

    backend: Literal["auto", "none", "embedding", "cross-encoder"] = Field(
        default="auto",
        description="'embedding': re-score with a second bi-encoder; 'cross-encoder': any CrossEncoder; "
        "'auto': 'embedding' on CUDA or on a CPU with native bf16 units (see embedding_cpu_bf16), else 'none' "
        "(measured on SciFact dev: +1.9 nDCG@10 points; on 2 bf16 CPU cores ≈ 0.7 s/query while the passage "
        "cache is cold).",
    )
    model: str = Field(
        default="intfloat/multilingual-e5-small",
        description="Reranker model name or path (e.g. BAAI/bge-reranker-v2-m3).",
    )
    candidates: int = Field(
        default=30, ge=1, le=limits.MAX_CANDIDATES, description="Fused candidates the reranker re-scores (M)."
    )
    fusion: bool = Field(
        default=True,
        description="Add the reranker's RRF term to the first-stage fused score (false: rank by the reranker alone).",
    )
    weight: float = Field(
        default=2.0, gt=0, le=100, description="Weight of the reranker's RRF term; each first-stage signal weighs 1."
    )
    batch_size: int = Field(default=32, ge=1, le=1024)
    precompute: bool = Field(
        default=True,
        description="With the 'embedding' reranker: embed every chunk with it in the background while the models are "
        "idle, and store those vectors beside the chunks (as does any rerank that meets a chunk without one), so a "
        "rerank embeds only its query (a tenth of the rerank stage's time on a CPU; docs/BENCHMARKS.md).",
    )


class LlmSettings(Group):
    """The language model (``KB_LLM_*``)."""

    env_prefix = "llm_"
    env_aliases = {"api_key": ("OPENAI_API_KEY",)}

    backend: Literal["auto", "transformers", "openai", "none"] = Field(
        default="auto",
        description="'auto': the OpenAI-compatible server when KB_LLM_API_BASE is set, else the local model; "
        "'none': answers are extractive (the retrieved passages, flagged).",
    )
    model: str = Field(
        default=DEFAULT_LLM_MODEL,
        description="Local model name or path (transformers; a .gguf file works too), or the server's model name.",
    )
    api_base: str | None = Field(default=None, description="e.g. http://localhost:8000/v1 (vLLM, Ollama …).")
    api_key: SecretStr | None = Field(
        default=None, description="API key of the LLM server (KB_LLM_API_KEY, or OPENAI_API_KEY)."
    )
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    context_window: int | None = Field(
        default=None, ge=256, description="Override the model's context window (remote default: 8192)."
    )
    tokenizer: str | None = Field(
        default=None, description="Tokenizer (name or path) to count a remote model's tokens; default: estimate."
    )
    device: str = Field(default="auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0'…")
    fp16: bool = True
    fallback: bool = Field(
        default=True, description="When the LLM cannot answer, return the retrieved passages as an extractive answer."
    )

    @model_validator(mode="after")
    def _openai_needs_base(self) -> LlmSettings:
        if self.backend == "openai" and not self.api_base:
            raise ValueError("KB_LLM_BACKEND=openai needs KB_LLM_API_BASE (e.g. http://host:8000/v1)")
        return self


class GenerationSettings(Group):
    """Default sampling (``KB_MAX_TOKENS``, ``KB_TEMPERATURE``, ``KB_TOP_P``, ``KB_TOP_K``,
    ``KB_REPETITION_PENALTY``); a request may override each, within the same limits."""

    max_tokens: int = Field(
        default=limits.DEFAULT_MAX_TOKENS, ge=1, le=limits.MAX_TOKENS, description="Default answer length cap (tokens)."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=limits.MAX_TEMPERATURE, description="0: greedy, reproducible.")
    top_p: float | None = Field(default=None, gt=0.0, le=limits.MAX_TOP_P)
    top_k: int | None = Field(default=None, ge=1, le=limits.MAX_SAMPLING_TOP_K)
    repetition_penalty: float | None = Field(
        default=None,
        gt=0.0,
        le=limits.MAX_REPETITION_PENALTY,
        description="Measured: 1.1 derails SmolLM2-135M into rambling; unset.",
    )


class AnswerSettings(Group):
    """Grounded answers (``KB_ANSWER_*``, ``KB_ASK_TOP_K``, ``KB_CONTEXT_TOKENS``, ``KB_PROMPT_*`` …)."""

    env_names = {"top_k": "ask_top_k", "mode": "answer_mode", "unsupported": "answer_unsupported"}
    env_names |= {"verify": "answer_verify", "compress": "answer_compress", "synthesis": "answer_synthesis"}

    top_k: int = Field(default=5, ge=1, le=50, description="Retrieved chunks offered to the model.")
    context_tokens: int = Field(
        default=1536, ge=64, description="Token budget for sources and history in a prompt (model tokenizer)."
    )
    mode: Literal["auto", "generated", "extractive"] = Field(
        default="auto",
        description="'generated': the LLM writes answers; 'extractive': answers quote the best-supported source "
        "sentences, each cited (no LLM); 'auto': generated when a capable LLM is configured (an OpenAI-compatible "
        "server, or a local model other than the packaged 135M one), else extractive. Measured in docs/BENCHMARKS.md.",
    )
    unsupported: Literal["mark", "drop"] = Field(
        default="mark",
        description="A claim that no source supports: shown and listed in unsupported_claims ('mark'), or left out.",
    )
    verify: bool = Field(
        default=True,
        description="Verify every claim's citations and stop repeating answers; false only to measure without it.",
    )
    query_rewrite: bool = Field(
        default=True, description="Rewrite a follow-up question into a standalone query (needs an LLM)."
    )
    compress: bool = Field(
        default=False,
        description="Each source keeps only the sentences that bear on the question (and their neighbours), "
        "scored with the configured embedding model, so more distinct sources fit the budget.",
    )
    synthesis: Literal["compact", "refine", "map_reduce"] = Field(
        default="compact",
        description="How a model's answer is put together: one prompt with every source (compact); an answer "
        "refined group of sources by group (refine); a partial answer per group, then combined (map_reduce).",
    )
    prompt_system: str | None = Field(default=None, description="Override the system instruction.")
    prompt_user: str | None = Field(
        default=None, description="Override the user prompt; must contain {sources} and {question}."
    )

    @model_validator(mode="after")
    def _prompt_placeholders(self) -> AnswerSettings:
        if self.prompt_user is not None:
            missing = [p for p in ("{sources}", "{question}") if p not in self.prompt_user]
            if missing:
                raise ValueError(f"KB_PROMPT_USER must contain {' and '.join(missing)}")
        return self


class ApiSettings(Group):
    """The REST API (``KB_API_KEYS``)."""

    env_prefix = "api_"

    keys: list[ApiKey] = Field(
        default_factory=list,
        description='JSON list, e.g. [{"key": "...", "name": "ops", "kbs": ["manuals"]}]; empty: no authentication.',
    )
    public_docs: bool = Field(
        default=False,
        description="Serve /docs and /openapi.json without a key when keys are set (default: they need one too).",
    )
    ui: bool = Field(
        default=True,
        description="Serve the web page at /ui/ (static files; its calls to the API need a key when keys are set).",
    )
    max_json_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest JSON body (search, ask, chat, embeddings) in bytes; a document upload's limit is "
        "KB_MAX_FILE_BYTES. Refused with 413 before it is read or parsed.",
    )


GROUPS: dict[str, type[Group]] = {
    "store": StoreSettings,
    "embedding": EmbeddingSettings,
    "ingest": IngestSettings,
    "search": SearchSettings,
    "rerank": RerankSettings,
    "llm": LlmSettings,
    "generation": GenerationSettings,
    "answer": AnswerSettings,
    "api": ApiSettings,
}


class Settings(BaseSettings):
    """Service configuration, nested by subsystem; environment variables use the ``KB_`` prefix and each value's flat
    name (``KB_BACKEND=pgvector``, ``KB_SEARCH_TOP_K=20``), also read from a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="forbid")

    data_dir: Path = Field(default=Path("data"), description="Where Milvus Lite, embedded PostgreSQL live.")
    store: StoreSettings = Field(default_factory=StoreSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then the flat ``KB_…`` names from the environment and ``.env``."""
        return init_settings, _FlatEnvironment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        return nest(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _queue_needs_postgres(self) -> Settings:
        if self.ingest.queue_url is not None and self.store.backend != "pgvector":
            raise ValueError(
                "KB_QUEUE_URL needs KB_BACKEND=pgvector: the job state that API replicas and workers share is kept "
                "in PostgreSQL"
            )
        return self

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable the settings read."""
        return {ENV_PREFIX + name.upper() for name in _flat_fields()}

    def with_changes(self, **flat: Any) -> Settings:
        """A copy with some values changed, by flat name (``with_changes(rerank_backend="none")``), validated."""
        return type(self).model_validate({**self.model_dump(), **flat})

    @property
    def milvus_lite_path(self) -> Path:
        return self.data_dir / "milvus.db"

    @property
    def pgserver_dir(self) -> Path:
        return self.data_dir / "pg"


def nest(data: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names (``chunk_size``) moved into their groups (``{"ingest": {"chunk_size": …}}``); flat names win over
    the same value given nested."""
    out = dict(data)
    for group, cls in GROUPS.items():
        flat = {field: out.pop(name) for field, name in cls.flat_names().items() if name in out}
        if not flat:
            continue
        current = out.get(group)
        if isinstance(current, BaseModel):
            current = current.model_dump()
        out[group] = {**(current or {}), **flat}
    return out


@lru_cache
def _flat_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """Every value under its flat name, typed and constrained as in its group, for reading the environment."""
    fields: dict[str, tuple[Any, FieldInfo]] = {"data_dir": (Path | None, _unset())}
    for cls in GROUPS.values():
        for field, name in cls.flat_names().items():
            info = cls.model_fields[field]
            aliases = cls.env_aliases.get(field, ())
            alias = AliasChoices(ENV_PREFIX + name.upper(), *aliases) if aliases else None
            typed: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            fields[name] = (Optional[typed], _unset(alias))  # noqa: UP045 (a runtime type, not an annotation)
    return fields


def _unset(alias: AliasChoices | None = None) -> FieldInfo:
    """A default that is never validated: a value absent from the environment is simply not set."""
    return FieldInfo(default=None, validation_alias=alias)


@lru_cache
def _flat_model() -> type[BaseSettings]:
    config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", populate_by_name=True)
    model: type[BaseSettings] = create_model(  # type: ignore[call-overload]
        "EnvironmentSettings", __base__=BaseSettings, __config__=None, **_flat_fields()
    )
    model.model_config.update(config)
    model.model_rebuild(force=True)
    return model


class _FlatEnvironment(PydanticBaseSettingsSource):
    """The flat ``KB_…`` environment variables (and ``.env``), validated by name and type, nested into groups."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # values come from __call__ all at once

    def __call__(self) -> dict[str, Any]:
        read = _flat_model()()
        return nest({name: getattr(read, name) for name in read.model_fields_set})


def describe_errors(exc: ValidationError) -> str:
    """A settings validation error in one line, each problem under its environment name (``KB_CHUNK_SIZE: …``)."""
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if len(loc) > 1 and loc[0] in GROUPS and loc[1] in GROUPS[loc[0]].model_fields:
            loc = [ENV_PREFIX + GROUPS[loc[0]].flat_names()[loc[1]].upper(), *loc[2:]]
        elif loc and (loc[0] == "data_dir" or loc[0] in _flat_fields()):
            loc = [ENV_PREFIX + loc[0].upper(), *loc[1:]]
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    return Settings()
