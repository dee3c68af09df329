"""The distributed job queue, on Celery with a RabbitMQ broker (``KB_QUEUE_URL=amqp://…``): API replicas send each
ingest job to the broker; ``kb worker`` processes, anywhere the broker and the store are reachable, take them one at
a time. A message is acknowledged only after its job has finished (``acks_late``), so the broker holds a lease on
every running job: a worker that dies (SIGKILL, a lost machine) drops its connection, the broker hands the message
to another worker at once, and that one removes what the first left half-written before it ingests the document
again (documents are keyed by their content, so one is published once, never twice). RabbitMQ rather than Redis:
Redis redelivers an unacknowledged job only after a visibility timeout (an hour by default; shorter re-runs long
jobs that are still running)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from kb_service.core.errors import QueueUnavailable

log = logging.getLogger(__name__)
TASK = "kb.ingest"
QUEUE = "kb-ingest"
LEASE_RENEW_S = 10.0  # a worker renews its running jobs' leases this often
LEASE_S = 60.0  # a job not renewed for this long holds nothing: recovery may remove what it left half-written


def celery_app(url: str) -> Any:
    from celery import Celery

    app = Celery("kb_service", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,  # the lease: acknowledged once the job has finished
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds only the jobs it runs, the rest wait for any worker
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # job state lives in the job journal (PostgreSQL), not a result backend
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


class JobQueue:
    """The API's side: hands jobs to the workers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._app = celery_app(url)

    def send(self, job_ids: list[str]) -> None:
        """One message: jobs a worker ingests together."""
        try:
            self._app.send_task(TASK, args=[job_ids], retry=True, retry_policy={"max_retries": 2})
        except Exception as exc:  # kombu raises OperationalError and friends for an unreachable broker
            raise QueueUnavailable(f"the job queue at KB_QUEUE_URL cannot be reached: {exc}") from exc

    def close(self) -> None:
        self._app.close()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(
    url: str, run_jobs: Callable[[list[str]], None], *, concurrency: int = 1, loglevel: str = "WARNING"
) -> None:
    """Consume ingest jobs until stopped. SIGTERM (or Ctrl-C) is a warm shutdown: the jobs in hand finish first;
    a second one stops at once, and the broker hands those jobs to another worker."""
    import warnings

    from celery.exceptions import SecurityWarning

    # Celery warns about a worker running as root (containers do) because with pickle messages that means remote
    # code execution as root; this worker accepts JSON only, a list of job ids.
    warnings.filterwarnings("ignore", message="You're running the worker with superuser", category=SecurityWarning)
    app = celery_app(url)

    @app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def ingest(job_ids: list[str]) -> None:
        run_jobs(job_ids)

    pool = "solo" if concurrency == 1 else "threads"  # threads share one process's loaded models
    app.worker_main(
        [
            "--quiet",  # no banner
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--hostname=kb-worker-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
