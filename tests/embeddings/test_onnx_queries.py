"""Search queries through ONNX Runtime (``embeddings.onnx_query``): the same vectors as PyTorch, an export made once
per model, and PyTorch wherever a model cannot take that path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import EmbeddingModelUnavailable
from kb_service.embeddings import EmbedderPool, onnx_query
from kb_service.embeddings.sentence import ONNX_MAX_QUERIES, SentenceTransformerEmbedder, resolve_model_path

pytestmark = pytest.mark.integration
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
QUERIES = [
    "What lowers the risk of a second heart attack?",
    "大熊猫主要吃什么？",
    "x",
    "a much longer question about the weather in the mountains and whether it will snow before the end of the month",
]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ONNX exports' folder in a fresh model cache; ``Settings()`` finds that cache through KB_MODEL_CACHE."""
    monkeypatch.setenv("KB_MODEL_CACHE", str(tmp_path))
    return tmp_path / "onnx"


def test_onnx_queries_equal_float32_pytorch_and_are_exported_once(cache: Path) -> None:
    onnx = SentenceTransformerEmbedder(MINILM, device="cpu", cache=cache.parent, cpu_bf16="off", query_runtime="onnx")
    torch_only = SentenceTransformerEmbedder(
        MINILM, device="cpu", cache=cache.parent, cpu_bf16="off", query_runtime="torch"
    )
    assert onnx.onnx_queries is not None and torch_only.onnx_queries is None
    assert [p.name for p in cache.iterdir()] == [onnx.onnx_queries.path.name]
    assert onnx.onnx_queries.path.name.startswith(onnx.info.fingerprint)

    a = np.vstack([onnx.embed_queries(QUERIES[:2]), onnx.embed_queries(QUERIES[2:])])  # padded pairs
    b = torch_only.embed_queries(QUERIES)
    assert a.shape == b.shape == (4, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999
    alone = np.vstack([onnx.embed_queries([q]) for q in QUERIES])  # without padding
    assert np.min(np.sum(alone * b, axis=1)) > 0.9999
    # Queries and documents still share one space: a text finds itself.
    docs = onnx.embed_documents(QUERIES)
    assert list(np.argmax(a @ docs.T, axis=1)) == [0, 1, 2, 3]
    assert onnx.info == torch_only.info

    written = onnx.onnx_queries.path.stat().st_mtime_ns
    again = SentenceTransformerEmbedder(
        MINILM, device="cpu", cache=cache.parent, query_runtime="auto"
    )  # bf16 documents, same export
    assert again.onnx_queries is not None and again.onnx_queries.path.stat().st_mtime_ns == written
    assert np.min(np.sum(again.embed_queries(QUERIES[:2]) * a[:2], axis=1)) > 0.9999


def test_more_queries_than_onnx_serves_best_go_through_pytorch(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime takes calls of up to ONNX_MAX_QUERIES texts; larger ones (a batch of queries, searches arriving
    together) go through PyTorch, which is faster there."""
    embedder = SentenceTransformerEmbedder(
        MINILM, device="cpu", cache=cache.parent, cpu_bf16="off", query_runtime="onnx"
    )
    assert embedder.onnx_queries is not None and ONNX_MAX_QUERIES == 2
    calls: list[int] = []
    real = embedder.onnx_queries.encode
    monkeypatch.setattr(embedder.onnx_queries, "encode", lambda texts: calls.append(len(texts)) or real(texts))
    many = embedder.embed_queries(QUERIES)
    assert calls == []
    few = np.vstack([embedder.embed_queries(QUERIES[:2]), embedder.embed_queries(QUERIES[2:3])])
    assert calls == [2, 1]
    assert np.min(np.sum(many[:3] * few, axis=1)) > 0.9999


def test_a_model_with_weights_after_its_transformer_stays_on_pytorch(cache: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense

    model = SentenceTransformer(resolve_model_path(MINILM), device="cpu")
    model.append(Dense(384, 128))  # a projection head: the ONNX path covers the transformer only
    model.save(str(tmp_path / "with-dense"))

    auto = SentenceTransformerEmbedder(
        str(tmp_path / "with-dense"), device="cpu", cache=cache.parent, query_runtime="auto"
    )
    assert auto.onnx_queries is None and auto.embed_queries(QUERIES).shape == (4, 128)
    assert not cache.exists() or not any(cache.iterdir())
    with pytest.raises(EmbeddingModelUnavailable, match="modules after the transformer have weights"):
        SentenceTransformerEmbedder(
            str(tmp_path / "with-dense"), device="cpu", cache=cache.parent, query_runtime="onnx"
        )


def test_an_export_that_disagrees_with_pytorch_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_export = onnx_query._export

    def export_of_another_model(backbone, example, path):  # type: ignore[no-untyped-def]
        import copy

        import torch

        other = copy.deepcopy(backbone)
        with torch.no_grad():
            for p in other.parameters():
                p.mul_(0.5)
        real_export(other, example, path)

    monkeypatch.setattr(onnx_query, "_export", export_of_another_model)
    auto = SentenceTransformerEmbedder(MINILM, device="cpu", cache=cache.parent, query_runtime="auto")
    assert auto.onnx_queries is None  # the probe check failed: PyTorch serves the queries
    with pytest.raises(EmbeddingModelUnavailable, match="differ from PyTorch"):
        SentenceTransformerEmbedder(MINILM, device="cpu", cache=cache.parent, query_runtime="onnx")


def test_the_pool_keeps_a_separate_reranking_model_on_pytorch(cache: Path) -> None:
    settings = Settings(embedding_model=MINILM, rerank_model=MINILM, embedding_query_runtime="onnx")
    assert EmbedderPool(settings).get().onnx_queries is not None  # type: ignore[attr-defined]
    settings = Settings(embedding_model="all-MiniLM-L6-v2", rerank_model=MINILM, embedding_query_runtime="onnx")
    pool = EmbedderPool(settings)
    assert pool.get().onnx_queries is not None  # type: ignore[attr-defined]
    assert pool.get(MINILM).onnx_queries is None  # type: ignore[attr-defined]
