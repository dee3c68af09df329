"""Stored responses of the Responses API (SQLite ``KB_DATA_DIR/files/responses.sqlite``): the object as returned,
and the conversation up to it, which a follow-up (``previous_response_id``) continues."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb_service.core.errors import ResponseNotFound
from kb_service.generation.llm import Message

MAX_KEPT = 10_000  # the oldest beyond these are forgotten


@dataclass(frozen=True)
class StoredResponse:
    id: str
    owner: str
    body: dict[str, Any]
    conversation: list[Message]  # every message up to and including this response's answer


class ResponseLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT, body TEXT, conversation TEXT, "
            "created_at REAL)"
        )
        self._lock = threading.Lock()

    def add(self, stored: StoredResponse) -> None:
        row = (stored.id, stored.owner, json.dumps(stored.body), json.dumps(stored.conversation), time.time())
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)
            self._db.execute(
                "DELETE FROM responses WHERE id NOT IN (SELECT id FROM responses ORDER BY created_at DESC LIMIT ?)",
                (MAX_KEPT,),
            )

    def get(self, response_id: str, *, owner: str | None) -> StoredResponse:
        """The response, if ``owner`` made it (None: any owner)."""
        with self._lock:
            row = self._db.execute(
                "SELECT owner, body, conversation FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
        if row is None or (owner is not None and row[0] != owner):
            raise ResponseNotFound(response_id)
        return StoredResponse(response_id, row[0], json.loads(row[1]), json.loads(row[2]))

    def delete(self, response_id: str, *, owner: str | None) -> None:
        self.get(response_id, owner=owner)
        with self._lock:
            self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
