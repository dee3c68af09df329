"""Embedding models: identity (fingerprints), mismatch refusal, and the OpenAI-compatible backend against a
real server on loopback (this service's own /v1/embeddings)."""

from __future__ import annotations

import copy
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import EmbeddingError, EmbeddingModelMismatch
from kb_service.embeddings import EmbedderPool
from kb_service.embeddings.openai_compat import OpenAICompatibleEmbedder
from kb_service.embeddings.sentence import SentenceTransformerEmbedder, default_batch_size
from kb_service.stores.milvus import MilvusStore

pytestmark = pytest.mark.integration


def test_info_and_normalised_vectors(embedder) -> None:  # type: ignore[no-untyped-def]
    info = embedder.info
    assert (info.dimension, info.max_tokens, len(info.fingerprint)) == (384, 254, 32)
    vectors = embedder.embed_documents(["a cat", "un chat", "a dog"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_documents([]).shape == (0, 384)


def test_batch_size_follows_the_device(embedder) -> None:  # type: ignore[no-untyped-def]
    assert (default_batch_size("cpu"), default_batch_size("cuda:0")) == (32, 256)
    assert embedder.batch_size == 32  # unset in Settings: the CPU size
    one_by_one = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu", batch_size=1)
    texts = ["a cat sat on the mat", "dogs", "a much longer sentence about the weather in the mountains"]
    assert one_by_one.batch_size == 1
    np.testing.assert_allclose(one_by_one.embed_documents(texts), embedder.embed_documents(texts), atol=2e-2)


def test_token_counts_add_up_over_words_only_where_they_are_exact(embedder) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from kb_service.embeddings.base import TokenCounter

    counter = TokenCounter(embedder.tokenizer)
    assert counter.by_word  # BERT WordPiece: counted word by word
    reference = copy.deepcopy(embedder.tokenizer.backend_tokenizer)
    reference.no_padding()
    reference.no_truncation()
    texts = [
        "Myelodysplastic syndromes (MDS) are age-dependent stem cell malignancies; IL-10 and TGF-β.  Two  spaces.",
        "北京是中国的首都，有故宫和长城。It has   several\tspaces,\nnewlines and a\u00a0non-breaking one. " * 3,
        "Crème brûlée, naïve café — ünïcödé accents and emoji 🙂 in a sentence long enough to be counted by words.",
        "control\x00characters\x1cinside words are dropped by the normaliser, " * 4,
    ]
    for text in texts:
        assert counter.count(text) == len(reference.encode(text, add_special_tokens=False).ids), text
    # Byte-level BPE and SentencePiece pre-tokenizers keep the space with the next word: counted whole.
    for pre in (pre_tokenizers.ByteLevel(), pre_tokenizers.Metaspace()):
        bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
        bpe.pre_tokenizer = pre
        assert not TokenCounter(PreTrainedTokenizerFast(tokenizer_object=bpe)).by_word


def test_unknown_model_is_a_clear_error() -> None:
    pool = EmbedderPool(Settings())
    with pytest.raises(EmbeddingError, match="cannot load embedding model '/nonexistent/model'"):
        pool.get("/nonexistent/model")
    # a hub name without the hub (HF_HUB_OFFLINE in the tests) says which names work offline
    with pytest.raises(EmbeddingError, match=r"without the Hugging Face hub only these names load: .*MiniLM"):
        pool.get("BAAI/bge-small-en-v1.5")


def test_kb_refuses_another_model(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path)
    store = MilvusStore(str(tmp_path / "m.db"))
    catalog = Catalog(store, EmbedderPool(settings))
    kb = catalog.create("手册")
    assert catalog.open("手册")[1].info == kb.embedding
    with pytest.raises(EmbeddingModelMismatch, match="re-index"):
        catalog.open("手册", embedding_model="intfloat/multilingual-e5-small")
    # Same name, other weights: simulate a KB recorded with a different fingerprint.
    tampered = dataclasses.replace(kb, name="other", embedding=dataclasses.replace(kb.embedding, fingerprint="0" * 32))
    store.create_kb(tampered)
    with pytest.raises(EmbeddingModelMismatch, match="fingerprint 0000"):
        catalog.open("other")
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from kb_service.api.app import create_app

    port = _free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("srv"))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        raise RuntimeError("the test server did not become ready")
    yield base
    server.should_exit = True
    thread.join(timeout=10)


def test_openai_compatible_embedder_matches_local(live_server: str, embedder) -> None:  # type: ignore[no-untyped-def]
    remote = OpenAICompatibleEmbedder(
        "sentence-transformers/all-MiniLM-L6-v2", base_url=f"{live_server}/v1", batch_size=2
    )
    texts = ["Solar panels convert light.", "长城很长。", "Tomatoes need sun.", "A fourth text."]
    got, want = remote.embed_documents(texts), embedder.embed_documents(texts)
    assert got.shape == (4, 384)
    assert float(np.min(np.sum(got * want, axis=1))) > 0.9999
    assert remote.info.dimension == 384 and remote.count_tokens("hello world") == 2


def test_openai_compatible_embedder_reports_server_errors(live_server: str) -> None:
    with pytest.raises(EmbeddingError, match="failed"):
        OpenAICompatibleEmbedder("/no/such/model", base_url=f"{live_server}/v1")


def test_api_basics(live_server: str) -> None:
    assert httpx.get(f"{live_server}/health").json() == {"status": "ok"}
    created = httpx.post(f"{live_server}/v1/knowledge-bases", json={"name": "产品 文档"})
    assert created.status_code == 201 and created.json()["dimension"] == 384
    again = httpx.post(f"{live_server}/v1/knowledge-bases", json={"name": "产品 文档"})
    assert again.status_code == 409 and again.json()["error"]["message"] == "knowledge base '产品 文档' already exists"
    bad = httpx.post(f"{live_server}/v1/knowledge-bases", json={"name": "a/b"})
    assert bad.status_code == 422 and "must not contain '/'" in bad.json()["error"]["message"]
    missing = httpx.get(f"{live_server}/v1/knowledge-bases/%E6%B2%A1%E6%9C%89")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "knowledge base '没有' does not exist"
    got = httpx.get(f"{live_server}/v1/knowledge-bases/%E4%BA%A7%E5%93%81%20%E6%96%87%E6%A1%A3").json()
    assert (got["name"], got["documents"], got["chunks"]) == ("产品 文档", 0, 0)
    empty = httpx.post(f"{live_server}/v1/embeddings", json={"input": []})
    assert empty.status_code == 422 and "1 to 2048 texts" in empty.json()["error"]["message"]
    assert httpx.delete(f"{live_server}/v1/knowledge-bases/%E4%BA%A7%E5%93%81%20%E6%96%87%E6%A1%A3").status_code == 204
