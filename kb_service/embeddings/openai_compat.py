"""OpenAICompatibleEmbedder: any server with an OpenAI ``/v1/embeddings`` endpoint (vLLM, TEI, this service)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from kb_service.core.errors import EmbeddingError
from kb_service.core.records import EmbeddingModelInfo
from kb_service.embeddings.base import TokenCounter, normalise_rows
from kb_service.embeddings.sentence import resolve_model_path

DEFAULT_TOKENIZER = "sentence-transformers/all-MiniLM-L6-v2"


class OpenAICompatibleEmbedder:
    """Embedding runs on the remote server; chunk sizing counts tokens with a local tokenizer."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None = None,
        batch_size: int = 64,
        max_tokens: int = 254,
        tokenizer: str = DEFAULT_TOKENIZER,
        timeout: float = 120.0,
    ) -> None:
        import openai
        from transformers import AutoTokenizer

        self.name = name
        self.batch_size = batch_size
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout)
        self._counter = TokenCounter(AutoTokenizer.from_pretrained(resolve_model_path(tokenizer)))
        probe = self._request(["dimension probe"])
        # The server names its model; a weight fingerprint is not observable remotely.
        fingerprint = hashlib.sha256(f"openai:{name}:{probe.shape[1]}".encode()).hexdigest()[:32]
        self._info = EmbeddingModelInfo(
            name=name, dimension=int(probe.shape[1]), fingerprint=fingerprint, max_tokens=max_tokens
        )

    @property
    def info(self) -> EmbeddingModelInfo:
        return self._info

    def _request(self, texts: Sequence[str]) -> np.ndarray:
        import openai

        try:
            resp = self.client.embeddings.create(model=self.name, input=list(texts), encoding_format="float")
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"embedding server {self.client.base_url} failed: {exc}") from exc
        rows = sorted(resp.data, key=lambda d: d.index)
        return normalise_rows(np.asarray([r.embedding for r in rows], dtype=np.float32))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._info.dimension), dtype=np.float32)
        parts = [self._request(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.vstack(parts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_documents(texts)

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)
