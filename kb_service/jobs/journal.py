"""A durable record of ingestion jobs: job status survives a restart, and an upload is kept on disk until its job
finishes, so a job interrupted by a crash is resumed at the next start. :class:`JobJournal` keeps it in SQLite under
``KB_DATA_DIR/jobs`` (one process); ``kb_service.jobs.pg_journal`` in PostgreSQL, shared by replicas and workers."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Protocol

from kb_service.core.errors import InvalidInput
from kb_service.ingest.sources import SourceItem
from kb_service.jobs.model import FINISHED, Job, JobStatus

JOB_FIELDS = [f.name for f in fields(Job)]


class Journal(Protocol):
    """Where jobs and their uploads are kept until the jobs finish."""

    def add(self, job: Job, item: SourceItem) -> None: ...
    def update(self, job: Job) -> None: ...
    def load(self, limit: int) -> list[tuple[Job, SourceItem | None]]: ...
    def get(self, job_id: str) -> Job | None: ...
    def item(self, job_id: str) -> SourceItem | None: ...
    def close(self) -> None: ...


class SharedJournal(Journal, Protocol):
    """A journal that API replicas and workers share (a job queue's), with leases on running jobs."""

    def touch(self, job_ids: list[str]) -> None: ...
    def leased_sources(self, kb: str, kb_uid: str, since: float) -> set[str]: ...


class Payloads:
    """Uploads waiting for their jobs, one file per job in ``folder`` (a shared volume when workers run elsewhere)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, job_id: str, item: SourceItem) -> str:
        """Write the upload (fsynced); returns what else the job needs to rebuild the item, as JSON."""
        data = item.data if item.data is not None else (item.text or "").encode("utf-8")
        with (self.folder / job_id).open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return json.dumps(
            {"name": item.name, "title": item.title, "metadata": item.metadata, "text": item.data is None},
            ensure_ascii=False,
        )

    def get(self, job_id: str, meta: str | None) -> SourceItem | None:
        """The upload of a job, or None where it is lost."""
        payload = self.folder / job_id
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

    def drop(self, job_id: str) -> None:
        (self.folder / job_id).unlink(missing_ok=True)


def job_row(job: Job) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, JobStatus) else v) for k, v in asdict(job).items()}


def job_of(values: dict[str, Any]) -> Job:
    return Job(
        **{
            **values,
            "status": JobStatus(values["status"]),
            "kb_uid": values["kb_uid"] or "",
            "worker": values.get("worker") or "",
        }
    )


class Recorded:
    """What both journals do around their own ``_write`` of a job row: the upload kept first, dropped last."""

    payloads: Payloads

    def _write(self, job: Job, item: str | None) -> None:
        raise NotImplementedError

    def add(self, job: Job, item: SourceItem) -> None:
        """Keep the upload (fsynced) before the job is acknowledged, then record the job."""
        try:
            self._write(job, self.payloads.put(job.id, item))
        except BaseException:
            self.payloads.drop(job.id)  # no job, no upload left behind
            raise

    def update(self, job: Job) -> None:
        self._write(job, None)
        if job.status in FINISHED:
            self.payloads.drop(job.id)


def _sql_type(name: str) -> str:
    return "REAL" if name.endswith("_at") else "INTEGER" if name == "chunks" else "TEXT"


class JobJournal(Recorded):
    def __init__(self, folder: Path) -> None:
        self.payloads = Payloads(folder / "payloads")
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

    def _write(self, job: Job, item: str | None) -> None:
        row = job_row(job)
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
        return [self._entry(row) for row in reversed(rows)]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(JOB_FIELDS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else job_of(dict(zip(JOB_FIELDS, row, strict=True)))

    def item(self, job_id: str) -> SourceItem | None:
        """The upload of an unfinished job (None where it is lost)."""
        with self._lock:
            row = self._db.execute("SELECT item FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self.payloads.get(job_id, row[0])

    def _entry(self, row: tuple[Any, ...]) -> tuple[Job, SourceItem | None]:
        job = job_of(dict(zip(JOB_FIELDS, row[:-1], strict=True)))
        return job, None if job.status in FINISHED else self.payloads.get(job.id, row[-1])

    def close(self) -> None:
        with self._lock:
            self._db.close()
