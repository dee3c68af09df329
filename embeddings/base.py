"""The embedding seam."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
