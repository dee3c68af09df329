"""The one settings object of the service. Every configurable value is read here and nowhere else."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kb_service.core import limits

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_LLM_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


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


class Settings(BaseSettings):
    """Service configuration; environment variables use the ``KB_`` prefix (e.g. ``KB_BACKEND=pgvector``)."""

    model_config = SettingsConfigDict(env_prefix="KB_", env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=Path("data"), description="Where Milvus Lite, embedded PostgreSQL live.")

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

    embedding_backend: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    embedding_model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="Model name or local path for new knowledge bases (existing ones keep their own).",
    )
    embedding_device: str = Field(default="auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0'…")
    embedding_fp16: bool = Field(default=True, description="Half precision when running on CUDA.")
    embedding_cpu_bf16: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="bfloat16 on the CPU (embedding and reranking models): 'auto' when the CPU has native bf16 units "
        "(AMX or AVX512-BF16; measured 2.2-2.6x faster on 2 cores, cosine to fp32 >= 0.996), else fp32.",
    )
    embedding_query_runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="What embeds search queries on the CPU: 'onnx' (ONNX Runtime, the model's transformer exported "
        "once into the model cache; a third faster than bf16 PyTorch for one short query, docs/BENCHMARKS.md), "
        "'torch', or 'auto' (onnx where the model allows it, torch on a GPU). Documents always go through PyTorch.",
    )
    embedding_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Texts per model call; unset: 32 on the CPU, 256 on CUDA (64 for an OpenAI-compatible server).",
    )
    embedding_api_base: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible /v1/embeddings server."
    )
    embedding_api_key: SecretStr | None = None

    chunk_size: int = Field(default=256, ge=16, description="Maximum tokens per chunk (model tokenizer).")
    chunk_overlap: int = Field(default=32, ge=0)
    summary_tokens: int = Field(default=200, ge=16, description="Token budget of an extractive summary.")
    summary_vector: Literal["embed", "chunk-mean"] = Field(
        default="embed",
        description="How a document's summary vector (the gate's dense side) is made: 'embed' the summary text, "
        "or 'chunk-mean', the normalised mean of its chunk vectors (no extra model work).",
    )
    ingest_batch_chunks: int = Field(
        default=512, ge=1, description="Chunks embedded and written together across documents."
    )
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    recovery_grace_s: float = Field(
        default=0.0,
        ge=0,
        description="At start-up, documents left unfinished by a crash are removed when untouched for this long; "
        "with several API replicas on one store set it above the longest store write (e.g. 600).",
    )

    search_mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    search_top_k: int = Field(default=10, ge=1, le=limits.MAX_TOP_K)
    search_candidates: int = Field(default=50, ge=1, le=1000, description="Chunks per retriever before fusion.")
    rrf_k: int = Field(default=20, ge=1, le=1000, description="Reciprocal rank fusion constant k.")
    gate: bool = Field(default=True, description="Two-stage: pick documents by their summaries first.")
    gate_docs: int = Field(default=20, ge=1, le=1000, description="Documents the gate keeps (N).")
    gate_fallback: bool = Field(default=True, description="Also search all chunks, so a wrong gate hides nothing.")
    rerank_backend: Literal["auto", "none", "embedding", "cross-encoder"] = Field(
        default="auto",
        description="'embedding': re-score with a second bi-encoder; 'cross-encoder': any CrossEncoder; "
        "'auto': 'embedding' on CUDA or on a CPU with native bf16 units (see embedding_cpu_bf16), else 'none' "
        "(measured on SciFact dev: +1.9 nDCG@10 points; on 2 bf16 CPU cores ≈ 0.7 s/query while the passage "
        "cache is cold).",
    )
    rerank_model: str = Field(
        default="intfloat/multilingual-e5-small",
        description="Reranker model name or path (e.g. BAAI/bge-reranker-v2-m3).",
    )
    rerank_candidates: int = Field(
        default=30, ge=1, le=1000, description="Fused candidates the reranker re-scores (M)."
    )
    rerank_fusion: bool = Field(
        default=True,
        description="Add the reranker's RRF term to the first-stage fused score (false: rank by the reranker alone).",
    )
    rerank_weight: float = Field(
        default=2.0, gt=0, le=100, description="Weight of the reranker's RRF term; each first-stage signal weighs 1."
    )
    rerank_batch_size: int = Field(default=32, ge=1, le=1024)
    rerank_precompute: bool = Field(
        default=True,
        description="With the 'embedding' reranker: embed every chunk with it in the background while the models are "
        "idle, and store those vectors beside the chunks (as does any rerank that meets a chunk without one), so a "
        "rerank embeds only its query (a tenth of the rerank stage's time on a CPU; docs/BENCHMARKS.md).",
    )

    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description='JSON list, e.g. [{"key": "...", "name": "ops", "kbs": ["manuals"]}]; empty: no authentication.',
    )

    llm_backend: Literal["auto", "transformers", "openai", "none"] = Field(
        default="auto",
        description="'auto': the OpenAI-compatible server when KB_LLM_API_BASE is set, else the local model; "
        "'none': answers are extractive (the retrieved passages, flagged).",
    )
    llm_model: str = Field(
        default=DEFAULT_LLM_MODEL,
        description="Local model name or path (transformers; a .gguf file works too), or the server's model name.",
    )
    llm_api_base: str | None = Field(default=None, description="e.g. http://localhost:8000/v1 (vLLM, Ollama …).")
    llm_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("KB_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key of the LLM server (KB_LLM_API_KEY, or OPENAI_API_KEY).",
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    llm_context_window: int | None = Field(
        default=None, ge=256, description="Override the model's context window (remote default: 8192)."
    )
    llm_tokenizer: str | None = Field(
        default=None, description="Tokenizer (name or path) to count a remote model's tokens; default: estimate."
    )
    llm_device: str = Field(default="auto", description="'auto' (CUDA when available), 'cpu', 'cuda:0'…")
    llm_fp16: bool = True
    llm_fallback: bool = Field(
        default=True, description="When the LLM cannot answer, return the retrieved passages as an extractive answer."
    )
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
    context_tokens: int = Field(
        default=1536, ge=64, description="Token budget for sources and history in a prompt (model tokenizer)."
    )
    ask_top_k: int = Field(default=5, ge=1, le=50, description="Retrieved chunks offered to the model.")
    answer_mode: Literal["auto", "generated", "extractive"] = Field(
        default="auto",
        description="'generated': the LLM writes answers; 'extractive': answers quote the best-supported source "
        "sentences, each cited (no LLM); 'auto': generated when a capable LLM is configured (an OpenAI-compatible "
        "server, or a local model other than the packaged 135M one), else extractive. Measured in docs/BENCHMARKS.md.",
    )
    answer_unsupported: Literal["mark", "drop"] = Field(
        default="mark",
        description="A claim that no source supports: shown and listed in unsupported_claims ('mark'), or left out.",
    )
    answer_verify: bool = Field(
        default=True,
        description="Verify every claim's citations and stop repeating answers; false only to measure without it.",
    )
    query_rewrite: bool = Field(
        default=True, description="Rewrite a follow-up question into a standalone query (needs an LLM)."
    )
    prompt_system: str | None = Field(default=None, description="Override the system instruction.")
    prompt_user: str | None = Field(
        default=None, description="Override the user prompt; must contain {sources} and {question}."
    )
    summary_backend: Literal["extractive", "llm"] = Field(
        default="extractive", description="'llm': summaries written by the LLM (extractive when it fails)."
    )
    summary_input_tokens: int = Field(default=1024, ge=64, description="Per-document input cap for LLM summaries.")
    summary_concurrency: int = Field(default=4, ge=1, le=64, description="LLM summary requests in flight.")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info) -> int:  # type: ignore[no-untyped-def]
        size = info.data.get("chunk_size", 256)
        if value >= size:
            raise ValueError(f"chunk_overlap ({value}) must be smaller than chunk_size ({size})")
        return value

    @model_validator(mode="after")
    def _openai_needs_base(self) -> Settings:
        if self.embedding_backend == "openai" and not self.embedding_api_base:
            raise ValueError("KB_EMBEDDING_BACKEND=openai needs KB_EMBEDDING_API_BASE (e.g. http://host:8000/v1)")
        return self

    @model_validator(mode="after")
    def _prompt_placeholders(self) -> Settings:
        if self.prompt_user is not None:
            missing = [p for p in ("{sources}", "{question}") if p not in self.prompt_user]
            if missing:
                raise ValueError(f"KB_PROMPT_USER must contain {' and '.join(missing)}")
        if self.llm_backend == "openai" and not self.llm_api_base:
            raise ValueError("KB_LLM_BACKEND=openai needs KB_LLM_API_BASE (e.g. http://host:8000/v1)")
        return self

    @property
    def milvus_lite_path(self) -> Path:
        return self.data_dir / "milvus.db"

    @property
    def pgserver_dir(self) -> Path:
        return self.data_dir / "pg"


@lru_cache
def get_settings() -> Settings:
    return Settings()
