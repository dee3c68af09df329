"""The rerank seam: re-score a query's top candidates with a stronger (slower) model.

Two real implementations:
- ``CrossEncoderReranker``: a sentence-transformers ``CrossEncoder`` (bge-reranker, ms-marco cross-encoders, or a
  model fine-tuned on a knowledge base's own labels), batched, truncated to its maximum length, fp16 on CUDA, bf16
  on CPUs with native bf16 units.
- ``EmbeddingReranker``: cosine similarity under a second, stronger bi-encoder (the offline default:
  multilingual-e5-small); passage vectors are cached by text hash, so a passage is embedded once per process, and
  can be stored beside the chunks (``space`` names them; see ``retrieval.rerank_warmer``), so that a rerank embeds
  only its query.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from kb_service.core.errors import EmbeddingError
from kb_service.core.records import text_hash
from kb_service.embeddings.base import Embedder
from kb_service.embeddings.runner import MODEL_THREAD
from kb_service.embeddings.sentence import (
    OFFLINE_EMBEDDINGS,
    CpuBf16,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    unreachable_hint,
)


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant. Scores compare only within one query."""

    name: str

    @property
    def space(self) -> str | None:
        """The identity of the passage vectors it reuses (an embedding reranker: its model); None when a (query,
        passage) pair can only be scored together (a cross-encoder)."""

    def prepare_query(self, query: str) -> np.ndarray | None:
        """What the reranker computes from the query alone (an embedding reranker: its query vector), so that a
        search can start it beside the store searches; None when a query is scored only with its passages."""

    def score(
        self,
        queries: Sequence[str],
        passages: Sequence[Sequence[str]],
        *,
        known: Mapping[str, np.ndarray] | None = None,
        prepared: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """One float32 array per query, aligned with that query's passages; batched across all queries. ``known``:
        passage vectors in this reranker's ``space`` already at hand, keyed by passage text hash; ``prepared``: the
        queries' ``prepare_query`` results, where the caller has them."""


@runtime_checkable
class VectorReranker(Reranker, Protocol):
    """A reranker whose passages are vectors in its ``space``, which can be computed ahead and stored."""

    def passage_vectors(self, passages: Sequence[str], *, known: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """One row per passage, in ``space``."""


class CrossEncoderReranker:
    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        fp16: bool = True,
        cpu_bf16: CpuBf16 = "auto",
        batch_size: int = 32,
        max_length: int = 512,
        cache: Path | None = None,
    ) -> None:
        """``cache``: the model cache, where a model rebuilt offline is kept (``Settings.embedding.model_cache``)."""
        from sentence_transformers import CrossEncoder

        self.name = model
        self.space = None
        self.batch_size = batch_size
        device = resolve_device(device)

        def load() -> Any:
            try:
                loaded = CrossEncoder(resolve_model_path(model, cache), device=device, max_length=max_length)
            except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot load this model"
                hint = unreachable_hint(exc, "none offline; KB_RERANK_BACKEND=embedding with " + OFFLINE_EMBEDDINGS)
                raise EmbeddingError(f"cannot load reranker model {model!r}: {exc}{hint}") from exc
            loaded.model.to(dtype=resolve_dtype(device, fp16=fp16, cpu_bf16=cpu_bf16))
            return loaded

        self.model = MODEL_THREAD.call(load)

    def prepare_query(self, query: str) -> np.ndarray | None:
        return None  # a cross-encoder reads the query and the passage together

    def score(
        self,
        queries: Sequence[str],
        passages: Sequence[Sequence[str]],
        *,
        known: Mapping[str, np.ndarray] | None = None,
        prepared: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        pairs = [(q, p) for q, ps in zip(queries, passages, strict=True) for p in ps]
        if not pairs:
            return [np.zeros(0, dtype=np.float32) for _ in queries]
        options = {"batch_size": self.batch_size, "show_progress_bar": False, "convert_to_numpy": True}
        scores = MODEL_THREAD.call(lambda: self.model.predict(pairs, **options))
        flat = np.asarray(scores, dtype=np.float32).reshape(-1)
        return _split(flat, [len(ps) for ps in passages])


class EmbeddingReranker:
    """Re-scores with a second embedding model; keeps the vectors of up to ``cache_size`` passages."""

    def __init__(self, embedder: Embedder, *, cache_size: int = 200_000) -> None:
        self.embedder = embedder
        self.name = embedder.info.name
        info = embedder.info
        self.space = hashlib.sha256(f"{info.name}\0{info.dimension}\0{info.fingerprint}".encode()).hexdigest()[:16]
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def prepare_query(self, query: str) -> np.ndarray | None:
        vector: np.ndarray = self.embed_queries([query])[0]
        return vector

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.embedder.embed_queries(list(queries))

    def has(self, passage: str) -> bool:
        return text_hash(passage) in self._cache

    def passage_vectors(self, passages: Sequence[str], *, known: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """One row per passage: from ``known`` (by text hash), from the cache, or embedded now (and cached)."""
        known = known or {}
        keys = [text_hash(p) for p in passages]
        with self._lock:
            missing = {k: p for k, p in zip(keys, passages, strict=True) if k not in known and k not in self._cache}
        if missing:
            vectors = self.embedder.embed_documents(list(missing.values()))
            with self._lock:
                for key, vector in zip(missing, vectors, strict=True):
                    self._cache[key] = vector
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        with self._lock:
            found = [known[k] if k in known else self._cache.get(k) for k in keys]
        # An entry evicted between the two steps (a tiny cache under load) is embedded again.
        complete = [
            vector if vector is not None else self.embedder.embed_documents([passages[i]])[0]
            for i, vector in enumerate(found)
        ]
        dim = self.embedder.info.dimension
        return np.stack(complete) if complete else np.zeros((0, dim), dtype=np.float32)

    def save_cache(self, path: Path) -> None:
        """Write the cached passage vectors (an .npz of text hashes and vectors) for a later process."""
        with self._lock:
            keys, vectors = list(self._cache), list(self._cache.values())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        dim = self.embedder.info.dimension
        np.savez(tmp, keys=np.array(keys), vectors=np.stack(vectors) if vectors else np.zeros((0, dim), np.float32))
        tmp.replace(path)

    def load_cache(self, path: Path) -> int:
        """Add the vectors saved by ``save_cache``; returns how many were loaded."""
        if not path.is_file():
            return 0
        with np.load(path) as data:
            keys, vectors = data["keys"].tolist(), data["vectors"]
        with self._lock:
            self._cache.update(zip(keys, vectors, strict=True))
        return len(keys)

    def score(
        self,
        queries: Sequence[str],
        passages: Sequence[Sequence[str]],
        *,
        known: Mapping[str, np.ndarray] | None = None,
        prepared: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """``prepared``: the queries already embedded with this reranker's model (``prepare_query``)."""
        if not queries:
            return []
        if prepared is not None and all(v is not None for v in prepared):
            q = np.vstack([v for v in prepared if v is not None])
        else:
            q = self.embed_queries(queries)
        p = self.passage_vectors([x for ps in passages for x in ps], known=known)
        blocks = _split(p, [len(ps) for ps in passages])
        return [block @ q[i] for i, block in enumerate(blocks)]


def _split(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    offsets = np.cumsum([0, *sizes])
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]


def load_reranker(
    kind: str,
    model: str,
    *,
    embedders: Any,
    device: str,
    fp16: bool,
    cpu_bf16: CpuBf16,
    batch_size: int,
    cache: Path | None = None,
) -> Reranker:
    """Build the configured reranker; ``embedders`` (an EmbedderPool) loads the second embedding model."""
    if kind == "cross-encoder":
        return CrossEncoderReranker(
            model, device=device, fp16=fp16, cpu_bf16=cpu_bf16, batch_size=batch_size, cache=cache
        )
    if kind == "embedding":
        return EmbeddingReranker(embedders.get(model))
    raise ValueError(f"unknown reranker kind {kind!r}; use 'embedding' or 'cross-encoder'")
