"""open_store builds both backends with zero set-up: a Milvus Lite file, an embedded PostgreSQL+pgvector."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.core.config import Settings
from kb_service.stores.factory import open_store
from kb_service.stores.milvus import MilvusStore
from kb_service.stores.pgvector import PgvectorStore

pytestmark = pytest.mark.integration


def test_default_is_milvus_lite_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "d"))
    assert isinstance(store, MilvusStore)
    store.ping()
    assert (tmp_path / "d" / "milvus.db").exists()
    store.close()


def test_pgvector_without_dsn_starts_an_embedded_postgres(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "d", backend="pgvector"))
    assert isinstance(store, PgvectorStore)
    store.ping()
    assert store.list_kbs() == []
    assert (tmp_path / "d" / "pg" / "PG_VERSION").exists()
    store.close()
