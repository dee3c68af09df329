"""Uploaded files and their attachments to vector stores (SQLite and a folder of blobs under
``KB_DATA_DIR/files``): what OpenAI's Files and Vector Stores APIs keep beside the knowledge bases.

A file is kept as uploaded until it is deleted. An attachment records that a file was put into a knowledge base:
the ingestion job doing it, then the document it became (or why it failed), and the attributes it was given."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kb_service.core.errors import FileNotFound

AttachmentStatus = Literal["in_progress", "completed", "failed", "cancelled"]


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    owner: str  # the name of the API key that uploaded it ("anonymous" without keys)
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Attachment:
    """File ``file_id`` put into the knowledge base ``kb`` (identity ``kb_uid``) by job ``job_id``."""

    kb: str
    kb_uid: str
    file_id: str
    job_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    status: AttachmentStatus = "in_progress"
    doc_id: str | None = None
    error_code: str = ""  # server_error | unsupported_file | invalid_file (OpenAI's last_error codes)
    error: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Batch:
    id: str
    kb_uid: str
    file_ids: tuple[str, ...]
    created_at: float = field(default_factory=time.time)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class FileRegistry:
    """Thread-safe; every write is durable before it returns (the blob fsynced before its row exists)."""

    def __init__(self, folder: Path) -> None:
        self.blobs = folder / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "files.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, filename TEXT, purpose TEXT, bytes INTEGER, "
            "owner TEXT, created_at REAL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS attachments (kb TEXT, kb_uid TEXT, file_id TEXT, job_id TEXT, "
            "attributes TEXT, status TEXT, doc_id TEXT, error_code TEXT, error TEXT, created_at REAL, "
            "PRIMARY KEY (kb_uid, file_id))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS attachments_by_doc ON attachments (kb_uid, doc_id)")
        self._db.execute("CREATE INDEX IF NOT EXISTS attachments_by_file ON attachments (file_id)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, kb_uid TEXT, file_ids TEXT, created_at REAL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS store_metadata (kb_uid TEXT PRIMARY KEY, metadata TEXT)")
        self._lock = threading.Lock()
        self._sweep()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # files

    def add(self, *, filename: str, purpose: str, data: bytes, owner: str) -> StoredFile:
        stored = StoredFile(id=new_id("file"), filename=filename, purpose=purpose, bytes=len(data), owner=owner)
        blob = self.blobs / stored.id
        try:
            with blob.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with self._lock:
                self._db.execute(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                    (stored.id, filename, purpose, stored.bytes, owner, stored.created_at),
                )
        except BaseException:
            blob.unlink(missing_ok=True)
            raise
        return stored

    def get(self, file_id: str) -> StoredFile:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            raise FileNotFound(file_id)
        return StoredFile(id=row[0], filename=row[1], purpose=row[2], bytes=row[3], owner=row[4], created_at=row[5])

    def files(self, *, purpose: str | None = None) -> list[StoredFile]:
        """Every file, oldest first."""
        query, args = "SELECT * FROM files", tuple[str, ...]()
        if purpose is not None:
            query, args = query + " WHERE purpose = ?", (purpose,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at, id", args).fetchall()
        return [StoredFile(id=r[0], filename=r[1], purpose=r[2], bytes=r[3], owner=r[4], created_at=r[5]) for r in rows]

    def content(self, file_id: str) -> bytes:
        self.get(file_id)
        return (self.blobs / file_id).read_bytes()

    def remove(self, file_id: str) -> None:
        """The file's row, then its blob (a blob without a row is swept at the next start)."""
        with self._lock:
            self._db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        (self.blobs / file_id).unlink(missing_ok=True)

    def _sweep(self) -> None:
        """Blobs whose row was never written (a crash between the two) or already deleted."""
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT id FROM files")}
        for blob in self.blobs.iterdir():
            if blob.name not in known:
                blob.unlink(missing_ok=True)

    # attachments

    def put(self, attachment: Attachment) -> None:
        a = attachment
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a.kb,
                    a.kb_uid,
                    a.file_id,
                    a.job_id,
                    json.dumps(a.attributes, ensure_ascii=False),
                    a.status,
                    a.doc_id,
                    a.error_code,
                    a.error,
                    a.created_at,
                ),
            )

    def attachment(self, kb_uid: str, file_id: str) -> Attachment | None:
        found = self._attachments("kb_uid = ? AND file_id = ?", (kb_uid, file_id))
        return found[0] if found else None

    def attachments(self, kb_uid: str) -> list[Attachment]:
        """A knowledge base's attachments, oldest first."""
        return self._attachments("kb_uid = ?", (kb_uid,))

    def attachments_of_file(self, file_id: str) -> list[Attachment]:
        return self._attachments("file_id = ?", (file_id,))

    def attachments_of_docs(self, kb_uid: str, doc_ids: Iterable[str]) -> dict[str, Attachment]:
        """doc_id → the earliest attachment that became it (identical files become one document)."""
        ids = sorted(set(doc_ids))
        out: dict[str, Attachment] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ", ".join("?" for _ in part)
            for a in self._attachments(f"kb_uid = ? AND doc_id IN ({marks})", (kb_uid, *part)):
                out.setdefault(a.doc_id or "", a)
        return out

    def detach(self, kb_uid: str, file_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM attachments WHERE kb_uid = ? AND file_id = ?", (kb_uid, file_id))

    def forget_kb(self, kb_uid: str) -> None:
        """A dropped knowledge base's attachments, batches and metadata (its files stay)."""
        with self._lock:
            for table in ("attachments", "batches", "store_metadata"):
                self._db.execute(f"DELETE FROM {table} WHERE kb_uid = ?", (kb_uid,))

    # file batches and vector store metadata

    def add_batch(self, kb_uid: str, file_ids: list[str]) -> Batch:
        batch = Batch(id=new_id("vsfb"), kb_uid=kb_uid, file_ids=tuple(file_ids))
        with self._lock:
            self._db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?)", (batch.id, kb_uid, json.dumps(file_ids), batch.created_at)
            )
        return batch

    def batch(self, kb_uid: str, batch_id: str) -> Batch | None:
        with self._lock:
            row = self._db.execute(
                "SELECT file_ids, created_at FROM batches WHERE id = ? AND kb_uid = ?", (batch_id, kb_uid)
            ).fetchone()
        return None if row is None else Batch(batch_id, kb_uid, tuple(json.loads(row[0])), row[1])

    def metadata(self, kb_uid: str) -> dict[str, str]:
        with self._lock:
            row = self._db.execute("SELECT metadata FROM store_metadata WHERE kb_uid = ?", (kb_uid,)).fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    def set_metadata(self, kb_uid: str, metadata: dict[str, str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO store_metadata VALUES (?, ?)",
                (kb_uid, json.dumps(metadata, ensure_ascii=False)),
            )

    def _attachments(self, where: str, args: tuple[Any, ...]) -> list[Attachment]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM attachments WHERE {where} ORDER BY created_at, file_id", args
            ).fetchall()
        return [
            Attachment(
                kb=r[0],
                kb_uid=r[1],
                file_id=r[2],
                job_id=r[3],
                attributes=json.loads(r[4]),
                status=r[5],
                doc_id=r[6],
                error_code=r[7],
                error=r[8],
                created_at=r[9],
            )
            for r in rows
        ]
