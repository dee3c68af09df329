"""JobManager: one job per uploaded document, run by a small worker pool so that ingestion never blocks the
event loop (nor queries); status moves queued → parsing → chunking → embedding → storing → ready | failed. With a
job queue (``KB_QUEUE_URL``) the jobs go to the broker instead and ``kb worker`` processes run them
(:meth:`JobManager.run_jobs`); their state is read from the shared journal."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import cast

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import IndexSwitched, InvalidInput, JobNotFound, KnowledgeBaseNotFound, QueueUnavailable
from kb_service.core.records import Document, KnowledgeBase
from kb_service.embeddings.base import Embedder
from kb_service.ingest.pipeline import Ingestor, IngestResult, Outcome, Stage
from kb_service.ingest.sources import SourceItem
from kb_service.ingest.summarize import Summarizer
from kb_service.jobs.journal import Journal, SharedJournal
from kb_service.jobs.model import FINISHED, Job, JobStatus
from kb_service.jobs.queue import LEASE_RENEW_S, LEASE_S, JobQueue, worker_name

log = logging.getLogger(__name__)
STAGE_STATUS = {
    Stage.PARSING: JobStatus.PARSING,
    Stage.CHUNKING: JobStatus.CHUNKING,
    Stage.EMBEDDING: JobStatus.EMBEDDING,
    Stage.STORING: JobStatus.STORING,
}
MAX_KEPT_JOBS = 10_000
SWITCH_RETRIES = 3  # ingests started again after a re-index switched the knowledge base under them
DROPPED = "the knowledge base was dropped during this ingestion; nothing of the upload was kept"


class JobManager:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        summarizer_for: Callable[[Embedder], Summarizer | None] = lambda _e: None,
        workers: int = 1,
        journal: Journal | None = None,
        queue: JobQueue | None = None,
        after_ingest: Callable[[KnowledgeBase], object] | None = None,
    ) -> None:
        """``queue``: send jobs to the workers (then ``journal`` must be one they share) rather than run them here.
        ``after_ingest``: called on a thread of its own once a knowledge base has no more ingests queued or
        running (the API brings its lexical index up to date there, so the first search after an upload does not
        wait for it: milliseconds by the store's log of changes, seconds at 100k chunks where it must rebuild)."""
        self.settings = settings
        self.catalog = catalog
        self.summarizer_for = summarizer_for
        self.journal = journal
        self.queue = queue
        if queue is not None and journal is None:
            raise ValueError("a job queue needs a journal the workers share")
        self.after_ingest = after_ingest
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ingest-job")
        self._after_pool = ThreadPoolExecutor(1, thread_name_prefix="after-ingest")
        self._pending: Counter[str] = Counter()  # ingests queued or running, per knowledge base
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._interrupted: list[tuple[Job, SourceItem | None]] = []
        if journal is not None and queue is None:  # queued jobs are the broker's to hand out again
            for job, item in journal.load(MAX_KEPT_JOBS):
                self._jobs[job.id] = job
                if job.status not in FINISHED:
                    self._interrupted.append((job, item))

    def resume(self) -> dict[str, int]:
        """Start again the jobs a previous process left unfinished (call after store recovery removed their
        half-written documents). A job whose upload was lost is failed with a message saying to upload again.
        Returns how many jobs were resumed and failed."""
        counts = {"resumed": 0, "failed": 0}
        for job, item in self._interrupted:
            if item is None:
                self._update(
                    job.id,
                    status=JobStatus.FAILED,
                    outcome="failed",
                    reason="interrupted",
                    error="the service stopped during this ingestion and the upload was not kept; upload it again",
                )
                counts["failed"] += 1
            else:  # one by one: two interrupted uploads may share a file name
                self._update(job.id, status=JobStatus.QUEUED, chunks=0)
                self._queue(job.kb, [item], [job.id], job.kb_uid)
                counts["resumed"] += 1
        self._interrupted = []
        if any(counts.values()):
            log.warning("interrupted ingestion jobs: %s", counts)
        return counts

    def submit(self, kb: str, items: Sequence[SourceItem]) -> list[Job]:
        """Queue ``items`` for ``kb`` (which must exist) and return their jobs at once."""
        uid = self.catalog.get(kb).uid
        names = [item.name for item in items]
        if len(set(names)) != len(names):
            raise InvalidInput(f"two uploads share a name: {sorted({n for n in names if names.count(n) > 1})}")
        jobs = [Job(id=uuid.uuid4().hex, kb=kb, source=item.name, kb_uid=uid) for item in items]
        if self.journal is not None:
            for job, item in zip(jobs, items, strict=True):
                self.journal.add(job, item)
        if self.queue is not None:
            self._send(jobs)
            return jobs
        with self._lock:
            for job in jobs:
                self._jobs[job.id] = job
            self._prune()
        self._queue(kb, list(items), [j.id for j in jobs], uid)
        return jobs

    def _send(self, jobs: Sequence[Job]) -> None:
        """One message per ``queue_batch_docs`` jobs of an upload: ingested together, as the embedded mode
        ingests an upload (the model and the store see batches across documents), and spread over the workers."""
        assert self.queue is not None and self.journal is not None
        size = self.settings.ingest.queue_batch_docs
        for i in range(0, len(jobs), size):
            try:
                self.queue.send([job.id for job in jobs[i : i + size]])
            except QueueUnavailable as exc:
                for unsent in jobs[i:]:  # never left "queued" with no message that would run it
                    self.journal.update(
                        replace(
                            unsent,
                            status=JobStatus.FAILED,
                            outcome="failed",
                            reason="queue_unavailable",
                            error=str(exc),
                            updated_at=time.time(),
                        )
                    )
                raise

    def get(self, job_id: str) -> Job:
        if self.queue is not None:  # shared: any replica answers for any job
            assert self.journal is not None
            job = self.journal.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            return job
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def run_jobs(self, job_ids: Sequence[str]) -> None:
        """Run the jobs of one message a worker took from the queue, here and now. A job already finished (a
        message delivered again after its worker finished it but died before acknowledging) is left as it is; an
        unfinished one, started by a worker that died, is run again from the start, and the ingest removes what
        that run left."""
        assert self.journal is not None
        batches: dict[tuple[str, str], list[tuple[str, SourceItem]]] = {}
        for job_id in job_ids:
            job = self.journal.get(job_id)
            if job is None:
                log.warning("job %s is not in the journal (forgotten, or another deployment's): skipped", job_id)
                continue
            if job.status in FINISHED:
                continue
            with self._lock:
                self._jobs[job_id] = job
            item = self.journal.item(job_id)
            if item is None:
                self._update(
                    job_id,
                    status=JobStatus.FAILED,
                    outcome="failed",
                    reason="upload_lost",
                    error="the upload of this job is not in the shared payload folder; upload it again",
                )
                continue
            self._update(job_id, status=JobStatus.QUEUED, chunks=0, worker=worker_name())
            batches.setdefault((job.kb, job.kb_uid), []).append((job_id, item))
        stop = threading.Event()
        running = [job_id for batch in batches.values() for job_id, _ in batch]
        renewer = threading.Thread(target=self._renew, args=(running, stop), name="job-leases", daemon=True)
        renewer.start()
        try:
            for (kb, uid), batch in batches.items():
                self._run(kb, [item for _, item in batch], [job_id for job_id, _ in batch], uid)
        finally:
            stop.set()
            renewer.join()
            with self._lock:
                for job_id in job_ids:
                    self._jobs.pop(job_id, None)

    def _renew(self, job_ids: list[str], stop: threading.Event) -> None:
        """The leases of a message's jobs, renewed until they are done (a long parse or embedding moves no status)."""
        shared = cast(SharedJournal, self.journal)
        while not stop.wait(LEASE_RENEW_S):
            try:
                shared.touch(job_ids)
            except Exception as exc:  # the next renewal retries; a lease lapses only after LEASE_S
                log.warning("could not renew the leases of %d jobs: %s", len(job_ids), exc)

    def lease_check(self, kb: KnowledgeBase) -> Callable[[Document], bool] | None:
        """With a job queue: whether a running job (its lease renewed within LEASE_S) may be writing a document of
        ``kb``, which start-up recovery must then leave alone. None without a queue (this process ran the jobs)."""
        if self.queue is None:
            return None
        shared = cast(SharedJournal, self.journal)
        return lambda doc: doc.source in shared.leased_sources(kb.name, kb.uid, time.time() - LEASE_S)

    def close(self) -> None:
        """Cancel queued jobs and let the running one finish, so the store is not closed under it."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._after_pool.shutdown(wait=True, cancel_futures=True)
        if self.queue is not None:
            self.queue.close()
        if self.journal is not None:
            self.journal.close()

    def _known(self, job_id: str) -> Job:
        """A job this process is running, as it last recorded it."""
        with self._lock:
            return self._jobs[job_id]

    def _update(self, job_id: str, **changes: object) -> None:
        with self._lock:
            job = self._jobs[job_id] = replace(self._jobs[job_id], updated_at=time.time(), **changes)  # type: ignore[arg-type]
        if self.journal is not None:
            self.journal.update(job)

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond MAX_KEPT_JOBS (memory stays bounded)."""
        excess = len(self._jobs) - MAX_KEPT_JOBS
        for job_id in [j for j, job in self._jobs.items() if job.status in FINISHED][: max(0, excess)]:
            del self._jobs[job_id]

    def _queue(self, kb: str, items: list[SourceItem], job_ids: list[str], uid: str) -> None:
        with self._lock:
            self._pending[kb] += 1
        self._pool.submit(self._run_then_settle, kb, items, job_ids, uid)

    def _run_then_settle(self, kb: str, items: list[SourceItem], job_ids: list[str], uid: str) -> None:
        try:
            self._run(kb, items, job_ids, uid)
        finally:
            with self._lock:
                self._pending[kb] -= 1
                last = self._pending[kb] <= 0
                if last:
                    del self._pending[kb]
            hook = self.after_ingest
            if last and hook is not None:
                self._after_pool.submit(self._after, hook, kb)

    def _after(self, hook: Callable[[KnowledgeBase], object], kb: str) -> None:
        try:
            hook(self.catalog.get(kb))
        except KnowledgeBaseNotFound:  # dropped meanwhile
            pass
        except Exception:  # only a warm-up: the first search does the same work
            log.warning("after the ingest into %r: warm-up failed", kb, exc_info=True)

    def _run(self, kb: str, items: list[SourceItem], job_ids: list[str], uid: str) -> None:
        by_source = dict(zip((item.name for item in items), job_ids, strict=True))
        try:
            for attempt in range(SWITCH_RETRIES + 1):
                try:
                    # what a first attempt finished (published, unchanged, failed) stays as it was
                    todo = [item for item in items if self._known(by_source[item.name]).status not in FINISHED]
                    self._ingest(kb, todo, by_source, uid)
                    return
                except IndexSwitched:  # re-indexed meanwhile: again, into the new index with its model
                    if attempt == SWITCH_RETRIES:
                        raise
                    log.info("ingest into %s: the knowledge base was re-indexed; ingesting again", kb)
        except Exception as exc:  # a job must end failed with the reason, never stay "embedding" forever
            dropped = isinstance(exc, KnowledgeBaseNotFound)
            if dropped:
                log.info("ingest into %s stopped: the knowledge base was dropped", kb)
            else:
                log.exception("ingest job for %s failed", kb)
            reason, error = ("knowledge_base_dropped", DROPPED) if dropped else ("ingest_error", str(exc))
            for job_id in job_ids:
                if self._known(job_id).status not in FINISHED:
                    self._update(job_id, status=JobStatus.FAILED, outcome="failed", reason=reason, error=error)

    def _ingest(self, kb: str, items: list[SourceItem], by_source: dict[str, str], uid: str) -> None:
        knowledge_base, embedder = self.catalog.open(kb)
        if knowledge_base.uid != uid:  # dropped, and another created under its name, since the upload
            raise KnowledgeBaseNotFound(kb)
        ingestor = Ingestor.from_settings(
            self.settings,
            store=self.catalog.store,
            kb=knowledge_base,
            embedder=embedder,
            summarizer=self.summarizer_for(embedder),
            originals=self.catalog.originals,
        )
        ingestor.on_stage = lambda source, stage, chunks: self._update(
            by_source[source], status=STAGE_STATUS[stage], chunks=chunks
        )

        def finished(result: IngestResult) -> None:  # each job as soon as its document is published
            failed = result.outcome == Outcome.FAILED
            self._update(
                by_source[result.source],
                status=JobStatus.FAILED if failed else JobStatus.READY,
                outcome=result.outcome.value,
                doc_id=result.doc_id,
                replaced=result.replaced,
                chunks=result.chunks,
                reason=result.reason,
                error=result.error,
            )

        ingestor.ingest(items, on_result=finished)
