"""A durable record of ingestion jobs (SQLite under ``KB_DATA_DIR/jobs``): job status survives a restart, and an
upload is kept on disk until its job finishes, so a job interrupted by a crash is resumed at the next start."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path

from kb_service.core.errors import InvalidInput
from kb_service.ingest.sources import SourceItem
from kb_service.jobs.model import FINISHED, Job, JobStatus

JOB_FIELDS = [f.name for f in fields(Job)]


def _sql_type(name: str) -> str:
    return "REAL" if name.endswith("_at") else "INTEGER" if name == "chunks" else "TEXT"


class JobJournal:
    def __init__(self, folder: Path) -> None:
        self.payloads = folder / "payloads"
        self.payloads.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "jobs.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        columns = ", ".join(f"{name} {_sql_type(name)}" for name in JOB_FIELDS[1:])
        self._db.execute(f"CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, {columns}, item TEXT)")
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name in JOB_FIELDS[1:]:
            if name not in have:  # a journal written by an earlier version
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {_sql_type(name)}")
        self._lock = threading.Lock()

    def add(self, job: Job, item: SourceItem) -> None:
        """Keep the upload (fsynced) before the job is acknowledged, then record the job."""
        payload = self.payloads / job.id
        data = item.data if item.data is not None else (item.text or "").encode("utf-8")
        try:
            with payload.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            meta = {"name": item.name, "title": item.title, "metadata": item.metadata, "text": item.data is None}
            self._write(job, json.dumps(meta, ensure_ascii=False))
        except BaseException:
            payload.unlink(missing_ok=True)  # no job, no upload left behind
            raise

    def update(self, job: Job) -> None:
        self._write(job, None)
        if job.status in FINISHED:
            (self.payloads / job.id).unlink(missing_ok=True)

    def _write(self, job: Job, item: str | None) -> None:
        row = {k: (str(v) if isinstance(v, JobStatus) else v) for k, v in asdict(job).items()}
        names = ", ".join(JOB_FIELDS)
        marks = ", ".join("?" for _ in JOB_FIELDS)
        updates = ", ".join(f"{n} = excluded.{n}" for n in JOB_FIELDS[1:])
        with self._lock:
            self._db.execute(
                f"INSERT INTO jobs ({names}, item) VALUES ({marks}, ?) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}, item = coalesce(excluded.item, jobs.item)",
                [row[n] for n in JOB_FIELDS] + [item],
            )

    def load(self, limit: int) -> list[tuple[Job, SourceItem | None]]:
        """The most recent ``limit`` jobs, oldest first; unfinished ones with their upload (None if it is lost).
        Finished jobs beyond those are forgotten, so the journal stays bounded."""
        with self._lock:
            self._db.execute(
                "DELETE FROM jobs WHERE status IN (?, ?) AND id NOT IN "
                "(SELECT id FROM jobs ORDER BY created_at DESC LIMIT ?)",
                (str(JobStatus.READY), str(JobStatus.FAILED), limit),
            )
            rows = self._db.execute(
                f"SELECT {', '.join(JOB_FIELDS)}, item FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        out = []
        for row in reversed(rows):
            fields_ = dict(zip(JOB_FIELDS, row[:-1], strict=True))
            job = Job(**{**fields_, "status": JobStatus(fields_["status"]), "kb_uid": fields_["kb_uid"] or ""})
            out.append((job, None if job.status in FINISHED else self._item(job.id, row[-1])))
        return out

    def _item(self, job_id: str, meta: str | None) -> SourceItem | None:
        payload = self.payloads / job_id
        if meta is None or not payload.is_file():
            return None
        m = json.loads(meta)
        data = payload.read_bytes()
        try:
            if m["text"]:
                return SourceItem(name=m["name"], text=data.decode("utf-8"), title=m["title"], metadata=m["metadata"])
            return SourceItem(name=m["name"], data=data, title=m["title"], metadata=m["metadata"])
        except InvalidInput:  # metadata an earlier version accepted: the job fails, asking for a new upload
            return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
