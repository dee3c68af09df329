"""What each file of a synced source was when it was last synced (size, version, SHA-256), kept in
SQLite under the data directory so a sync after a restart skips unchanged files without reading them again.

One row per (knowledge base, source, path). The knowledge base is named by its key (name and identity), so a
knowledge base dropped and created again under the same name starts with no state."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from kb_service.core.records import KnowledgeBase

SCHEMA = """
CREATE TABLE IF NOT EXISTS synced (
    kb TEXT NOT NULL,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (kb, source, path)
)
"""


@dataclass(frozen=True)
class FileState:
    """``version`` changes whenever the bytes may have: a file's modification time, an object's ETag. ``doc_id``: the
    document the file became (another file's, when its content was already there under another name)."""

    size: int
    version: str
    sha256: str
    doc_id: str = ""


class SyncState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")  # the service and a CLI may share the data directory
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def files(self, kb: KnowledgeBase, source: str) -> dict[str, FileState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, size, version, sha256, doc_id FROM synced WHERE kb = ? AND source = ?",
                (kb.home_key, source),
            ).fetchall()
        return {path: FileState(size, version, sha, doc) for path, size, version, sha, doc in rows}

    def put(self, kb: KnowledgeBase, source: str, path: str, state: FileState) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO synced VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kb.home_key, source, path, state.size, state.version, state.sha256, state.doc_id),
            )

    def forget(self, kb: KnowledgeBase, source: str, path: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM synced WHERE kb = ? AND source = ? AND path = ?", (kb.home_key, source, path))

    def close(self) -> None:
        with self._lock:
            self._db.close()
