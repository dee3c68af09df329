"""The embedding seam."""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from core.records import EmbeddingModelInfo


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of shape (len(texts), info.dimension)."""

    @property
    def info(self) -> EmbeddingModelInfo:
        """Name, dimension, weight fingerprint and the most tokens one input may carry (specials excluded)."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages (chunks, summaries), batched; applies the model's document prompt if it has one."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries; applies the model's query prompt if it has one (e.g. e5's 'query: ')."""

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs with this model's tokenizer, special tokens excluded."""


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_MEMO_CHARS = 2_000  # memoised texts: at most this long (≈ 8 MB for a full memo)
_MEMO_SIZE = 4_096


class TokenCounter:
    """Counts tokens on a private copy of a Hugging Face tokenizer.

    The model's own tokenizer cannot be shared: ``encode`` switches truncation and padding on the shared
    Rust tokenizer, and a count from another thread at that moment fails or miscounts.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = copy.deepcopy(backend) if backend is not None else None
        if self._fast is not None:
            self._fast.no_truncation()
            self._fast.no_padding()
        self._slow = None if self._fast is not None else copy.deepcopy(tokenizer)
        self._lock = threading.Lock()
        self._memo = functools.lru_cache(maxsize=_MEMO_SIZE)(self._count)

    def count(self, text: str) -> int:
        """Tokens in ``text``. Short texts are memoised: the chunker's splitter measures the same pieces again as it
        merges them (half of its calls on SciFact, 16 % of the chunking and summarising time)."""
        if len(text) <= _MEMO_CHARS:
            return self._memo(text)
        return self._count(text)

    def _count(self, text: str) -> int:
        if self._fast is not None:
            return len(self._fast.encode(text, add_special_tokens=False).ids)
        with self._lock:
            return len(self._slow(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])
