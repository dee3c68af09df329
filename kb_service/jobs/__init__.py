"""Background ingestion jobs: uploads are answered at once (202) and ingested off the event loop."""

from kb_service.jobs.journal import JobJournal
from kb_service.jobs.manager import JobManager
from kb_service.jobs.model import Job, JobStatus

__all__ = ["Job", "JobJournal", "JobManager", "JobStatus"]
