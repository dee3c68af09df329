"""Builds the configured store; the only place that knows which backends exist."""

from __future__ import annotations

from typing import Any

from kb_service.core.config import Settings
from kb_service.stores.base import VectorStore

# Embedded PostgreSQL servers are kept alive for the life of the process (one per data directory).
_EMBEDDED: dict[str, Any] = {}


def open_store(settings: Settings) -> VectorStore:
    if settings.store.backend == "milvus":
        from kb_service.stores.milvus import MilvusStore

        uri = settings.store.milvus_uri
        if uri is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            uri = str(settings.milvus_lite_path.resolve())
        token = settings.store.milvus_token.get_secret_value() if settings.store.milvus_token else None
        return MilvusStore(
            uri,
            token=token,
            index_type=settings.store.milvus_index_type,
            lite_process=settings.store.milvus_lite_process,
            lite_speedups=settings.store.milvus_lite_speedups,
        )

    from kb_service.stores.pgvector import PgvectorStore

    if settings.store.pg_dsn is not None:
        return PgvectorStore(settings.store.pg_dsn.get_secret_value(), hnsw_min_rows=settings.store.pg_hnsw_min_rows)
    from kb_service.stores.embedded_pg import start_embedded_postgres

    key = str(settings.pgserver_dir.resolve())
    if key not in _EMBEDDED:
        _EMBEDDED[key] = start_embedded_postgres(settings.pgserver_dir.resolve())
    return PgvectorStore(_EMBEDDED[key].get_uri(), hnsw_min_rows=settings.store.pg_hnsw_min_rows)
