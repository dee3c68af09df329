"""An embedded PostgreSQL with pgvector (the pgserver package) in the data directory: zero set-up pgvector."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from kb_service.core.errors import StoreError


def start_embedded_postgres(pgdata: Path) -> Any:
    """Start (or join) the PostgreSQL server whose data lives in ``pgdata``; it stops with its last user."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp: nothing for
            # a user to act on
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a hard dependency
        raise StoreError("the embedded PostgreSQL needs the 'pgserver' package") from exc
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        return pgserver.postgres_server.get_server(pgdata)
    except Exception as exc:  # pgserver reports start-up failures with plain exceptions
        raise StoreError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
