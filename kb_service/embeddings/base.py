"""The embedding seam."""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from kb_service.core.records import EmbeddingModelInfo


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
    normalised: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return normalised


_MEMO_CHARS = 2_000  # memoised texts: at most this long (≈ 8 MB for a full memo)
_MEMO_SIZE = 4_096
_WORD_MEMO_SIZE = 65_536  # distinct words (shorter than _BY_WORD_MIN_CHARS) of a corpus: a few MB
_BY_WORD_MIN_CHARS = 64  # shorter texts are cheaper to count whole


class TokenCounter:
    """Counts tokens on a private copy of a Hugging Face tokenizer.

    The model's own tokenizer cannot be shared: ``encode`` switches truncation and padding on the shared
    Rust tokenizer, and a count from another thread at that moment fails or miscounts.

    With a BERT (WordPiece) tokenizer a text's count is the sum of its space-separated words' counts, exactly: the
    normaliser works character by character and the pre-tokenizer always splits at a space. Longer texts are then
    counted word by word from a memo, which is 15× faster than encoding them whole (the chunker and the summariser
    measure every piece of every document). Other tokenizers (SentencePiece, byte-level BPE) are counted whole.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = copy.deepcopy(backend) if backend is not None else None
        if self._fast is not None:
            self._fast.no_truncation()
            self._fast.no_padding()
        self._slow: Any = None if self._fast is not None else copy.deepcopy(tokenizer)
        self._lock = threading.Lock()
        self._memo = functools.lru_cache(maxsize=_MEMO_SIZE)(self._count)
        self._word = functools.lru_cache(maxsize=_WORD_MEMO_SIZE)(self._count)
        self.by_word = self._fast is not None and _splits_at_spaces(self._fast)

    def count(self, text: str) -> int:
        """Tokens in ``text``. Short texts are memoised: the chunker's splitter measures the same pieces again as it
        merges them (half of its calls on SciFact, 16 % of the chunking and summarising time)."""
        if self.by_word and len(text) >= _BY_WORD_MIN_CHARS:
            # Words memoised; a long run without spaces (Chinese) is counted as a text of its own.
            return sum(
                self._word(word) if len(word) < _BY_WORD_MIN_CHARS else self._whole(word) for word in text.split(" ")
            )
        return self._whole(text)

    def _whole(self, text: str) -> int:
        if len(text) <= _MEMO_CHARS:
            return self._memo(text)
        return self._count(text)

    def _count(self, text: str) -> int:
        if self._fast is not None:
            return len(self._fast.encode(text, add_special_tokens=False).ids)
        with self._lock:
            return len(self._slow(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])


def _splits_at_spaces(tokenizer: Any) -> bool:
    """Whether token counts add up over space-separated words: a BERT normaliser (or none) and pre-tokenizer."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer_ok = tokenizer.normalizer is None or isinstance(tokenizer.normalizer, normalizers.BertNormalizer)
    return normalizer_ok and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
