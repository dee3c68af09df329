"""Shared fixtures: the real packaged embedding model, Milvus Lite and a real PostgreSQL+pgvector (pgserver)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The shipped 'auto' reranker loads a second model (multilingual-e5-small, 1.7 GB) into every app on a bf16 CPU; the
# suites about other things run without it. Reranking is tested where it is the subject (tests/retrieval,
# tests/api/test_search.py, which runs the shipped default).
os.environ.setdefault("KB_RERANK_BACKEND", "none")

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.sentence import SentenceTransformerEmbedder
from kb_service.stores.base import VectorStore
from kb_service.stores.milvus import MilvusStore
from kb_service.stores.pgvector import PgvectorStore

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOCUMENTS = SHARED_DATA / "documents"
needs_shared = pytest.mark.skipif(
    not DOCUMENTS.is_dir(), reason=f"shared evaluation data not found at {SHARED_DATA} (present in CI)"
)
BACKENDS = ["milvus", "pgvector"]
_names = itertools.count()


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_dsn(pg_server: object) -> str:
    return pg_server.get_uri()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="session")
def milvus_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusStore]:
    store = MilvusStore(str(tmp_path_factory.mktemp("milvus") / "milvus.db"))
    yield store
    store.close()


@pytest.fixture(scope="session")
def pg_store(pg_dsn: str) -> Iterator[PgvectorStore]:
    store = PgvectorStore(pg_dsn)
    yield store
    store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> VectorStore:
    name = "milvus_store" if request.param == "milvus" else "pg_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(params=BACKENDS)
def base_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The ``kb`` CLI's global options for a fresh data directory on each store."""
    args = ["--backend", request.param, "--data-dir", str(tmp_path / "data")]
    if request.param == "pgvector":
        args += ["--dsn", request.getfixturevalue("pg_dsn")]
    return args


@pytest.fixture
def kb(store: VectorStore, embedder: SentenceTransformerEmbedder) -> Iterator[KnowledgeBase]:
    """A fresh knowledge base (with a Unicode name) in the parametrised store, dropped afterwards."""
    knowledge_base = KnowledgeBase(name=f"测试 kb {next(_names)}", embedding=embedder.info)
    store.create_kb(knowledge_base)
    yield knowledge_base
    store.drop_kb(knowledge_base.name)
