"""Loads each embedding model once and checks that a knowledge base is opened with the model it was built with."""

from __future__ import annotations

import posixpath
import threading
from pathlib import Path

from kb_service.core.config import Settings
from kb_service.core.errors import EmbeddingModelMismatch, EmbeddingModelUnavailable
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.base import Embedder


class EmbedderPool:
    """Models are kept by canonical name (a local path resolved, a hub name normalised), so every spelling of one
    model shares one copy. Which models a request to the service may name is ``check_allowed``'s (the API calls it;
    in-process callers, the operator's CLI and notebooks, load what they name)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        allowed = [settings.embedding.model, settings.rerank.model, *settings.embedding.allowed_models]
        self._any = "*" in allowed
        self._allowed = {canonical(n) for n in allowed if n != "*"}
        self.offered = list(dict.fromkeys(n for n in allowed if n != "*"))  # as configured: names to choose from

    def get(self, name: str | None = None) -> Embedder:
        """The embedder for ``name`` (default: the configured model), loaded on first use."""
        key = canonical(name or self.settings.embedding.model)
        with self._lock:
            if key not in self._models:
                self._models[key] = self._load(key)
            return self._models[key]

    def check_allowed(self, name: str | None) -> None:
        """Refuse a model a request may not load: not the configured one, the reranker's, one of an existing
        knowledge base or one of ``KB_EMBEDDING_ALLOWED_MODELS``."""
        key = canonical(name or self.settings.embedding.model)
        with self._lock:
            if self._any or key in self._allowed or key in self._models:
                return
        raise EmbeddingModelUnavailable(
            f"embedding model {name!r} is not allowed on this service; allowed: {sorted(self._allowed)} "
            "(an operator adds models with KB_EMBEDDING_ALLOWED_MODELS)"
        )

    def _load(self, name: str) -> Embedder:
        """Loads by canonical name."""
        s = self.settings
        if s.embedding.backend == "openai":
            from kb_service.embeddings.openai_compat import OpenAICompatibleEmbedder

            assert s.embedding.api_base is not None  # enforced by Settings
            return OpenAICompatibleEmbedder(
                name,
                base_url=s.embedding.api_base,
                api_key=s.embedding.api_key.get_secret_value() if s.embedding.api_key else None,
                batch_size=s.embedding.batch_size or 64,
            )
        from kb_service.embeddings.sentence import SentenceTransformerEmbedder

        queries = s.embedding.query_runtime
        if name == s.rerank.model and name != s.embedding.model:
            # A reranker's query vector is computed beside the store searches, off their path, and an ONNX copy of
            # multilingual-e5-small would hold hundreds of MB more for a few ms a query.
            queries = "torch"
        return SentenceTransformerEmbedder(
            name,
            device=s.embedding.device,
            fp16=s.embedding.fp16,
            cpu_bf16=s.embedding.cpu_bf16,
            batch_size=s.embedding.batch_size,
            query_runtime=queries,
            cache=s.embedding.model_cache,
        )

    def for_kb(self, kb: KnowledgeBase, requested: str | None = None) -> Embedder:
        """The knowledge base's own model; refuse another one, or the same name with other weights."""
        recorded = kb.embedding
        with self._lock:
            self._allowed.add(canonical(recorded.name))  # an existing knowledge base's model is always allowed
        if requested is not None and requested != recorded.name:
            raise EmbeddingModelMismatch(
                f"knowledge base {kb.name!r} was built with embedding model {recorded.name!r}, not {requested!r}. "
                f"Query it without choosing a model, or re-index it with that model while it serves: "
                f"`kb reindex {kb.name} --embedding-model {requested}` (or POST /v1/knowledge-bases/{{kb}}/reindex)."
            )
        embedder = self.get(recorded.name)
        info = embedder.info
        if (info.dimension, info.fingerprint) != (recorded.dimension, recorded.fingerprint):
            raise EmbeddingModelMismatch(
                f"knowledge base {kb.name!r} was built with {recorded.name!r} (dimension {recorded.dimension}, "
                f"fingerprint {recorded.fingerprint}), but that name now loads a model with dimension "
                f"{info.dimension}, fingerprint {info.fingerprint}. Restore the original weights, or re-index it "
                f"with the new ones: `kb reindex {kb.name} --embedding-model {recorded.name}` (its stored chunks are "
                "embedded again)."
            )
        return embedder


def canonical(name: str) -> str:
    """One spelling per model: a local path resolved (``./m``, ``m/``, ``m/.`` are one), a hub name normalised."""
    name = name.strip()
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return posixpath.normpath(name) if name else name
