"""The job journal: jobs and kept uploads survive a reopen (a restart); finished jobs drop their upload and old
ones are forgotten beyond the limit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kb_service.ingest.sources import SourceItem
from kb_service.jobs import Job, JobJournal, JobStatus

pytestmark = pytest.mark.unit


def test_jobs_and_uploads_survive_a_reopen(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path)
    done = Job(id="a", kb="kb", source="a.txt", created_at=1.0)
    running = Job(id="b", kb="kb", source="b.pdf", created_at=2.0)
    text = Job(id="c", kb="kb", source="c.md", created_at=3.0)
    journal.add(done, SourceItem("a.txt", text="alpha"))
    journal.add(running, SourceItem("b.pdf", data=b"%PDF-1.7 bytes", metadata={"team": "ops"}))
    journal.add(text, SourceItem("c.md", text="# Gamma\n\nγ", title="Gamma"))
    journal.update(replace(done, status=JobStatus.READY, outcome="added", chunks=3))
    journal.update(replace(running, status=JobStatus.EMBEDDING, chunks=7))
    assert not (tmp_path / "payloads" / "a").exists() and (tmp_path / "payloads" / "b").exists()
    journal.close()

    reopened = JobJournal(tmp_path)
    loaded = {job.id: (job, item) for job, item in reopened.load(limit=100)}
    assert loaded["a"][0].status == JobStatus.READY and loaded["a"][0].chunks == 3 and loaded["a"][1] is None
    job, item = loaded["b"]
    assert job.status == JobStatus.EMBEDDING and isinstance(job.status, JobStatus)
    assert item is not None and item.data == b"%PDF-1.7 bytes" and item.metadata == {"team": "ops"}
    item = loaded["c"][1]
    assert item is not None and item.text == "# Gamma\n\nγ" and item.data is None and item.title == "Gamma"

    (tmp_path / "payloads" / "c").unlink()  # an upload lost with the disk: the job comes back without it
    assert dict(reopened.load(limit=100))[loaded["c"][0]] is None
    reopened.close()


def test_finished_jobs_beyond_the_limit_are_forgotten(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path)
    for i in range(5):
        job = Job(id=str(i), kb="kb", source=f"{i}.txt", created_at=float(i))
        journal.add(job, SourceItem(f"{i}.txt", text="x"))
        if i != 0:  # job 0 never finished: it is kept however old
            journal.update(replace(job, status=JobStatus.READY))
    assert [job.id for job, _ in journal.load(limit=2)] == ["3", "4"]
    assert {job.id for job, _ in journal.load(limit=10)} == {"0", "3", "4"}
    journal.close()
