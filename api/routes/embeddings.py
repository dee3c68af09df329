"""OpenAI-compatible ``/v1/embeddings``: lets another process (or another instance) embed on this one."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from kb_service.api.deps import EmbeddersDep, SettingsDep
from kb_service.api.schemas import EmbeddingItem, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from kb_service.core.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_INPUTS = 2048


@router.post("/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, embedders: EmbeddersDep, settings: SettingsDep
) -> EmbeddingResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_INPUTS:
        raise InvalidInput(f"input must hold 1 to {MAX_INPUTS} texts; got {len(texts)}")
    model = body.model or settings.embedding.model
    embedders.check_allowed(model)
    embedder = await run_in_threadpool(embedders.get, model)
    vectors = await run_in_threadpool(embedder.embed_documents, texts)
    tokens = sum(embedder.count_tokens(t) for t in texts)
    return EmbeddingResponse(
        data=[EmbeddingItem(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()  # type: ignore[no-any-return]
