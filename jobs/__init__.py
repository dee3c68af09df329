"""Background ingestion jobs: uploads are answered at once (202) and ingested off the event loop."""

from jobs.manager import Job, JobManager, JobStatus

__all__ = ["Job", "JobManager", "JobStatus"]
