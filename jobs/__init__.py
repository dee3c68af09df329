"""Background ingestion jobs: uploads are answered at once (202) and ingested off the event loop."""

from jobs.journal import JobJournal
from jobs.manager import JobManager
from jobs.model import Job, JobStatus

__all__ = ["Job", "JobJournal", "JobManager", "JobStatus"]
