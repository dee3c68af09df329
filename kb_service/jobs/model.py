"""What a job is: its status and a snapshot of one document's ingestion."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    STORING = "storing"
    READY = "ready"
    FAILED = "failed"


FINISHED = {JobStatus.READY, JobStatus.FAILED}


@dataclass(frozen=True)
class Job:
    """A snapshot of one document's ingestion. ``chunks``: the document's chunk count once chunked (being
    embedded, then stored); ``outcome``: added, unchanged (identical content was already there: no work),
    replaced or failed; ``reason`` names why it failed (encrypted, corrupt, …)."""

    id: str
    kb: str
    source: str
    kb_uid: str = ""  # the identity of the knowledge base it was submitted to (not a successor under its name)
    status: JobStatus = JobStatus.QUEUED
    outcome: str = ""
    doc_id: str | None = None
    replaced: str | None = None
    chunks: int = 0
    reason: str = ""
    error: str = ""
    worker: str = ""  # the worker that ran it (host:pid), with a job queue (KB_QUEUE_URL)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
