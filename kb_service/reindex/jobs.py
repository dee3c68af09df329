"""Re-indexes running in the background of the service: at most one per knowledge base, with progress, cancel, and
the re-indexes a previous process left recorded resumed at start-up."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace

from kb_service.core.errors import KnowledgeBaseNotFound, ReindexInProgress, ReindexNotFound
from kb_service.core.records import validate_kb_name
from kb_service.reindex.engine import Reindexer, ReindexPlan, ReindexStatus

log = logging.getLogger(__name__)


@dataclass
class _Run:
    status: ReindexStatus
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class ReindexJobs:
    def __init__(self, reindexer: Reindexer) -> None:
        self.reindexer = reindexer
        self._runs: dict[str, _Run] = {}  # by knowledge-base name: the running one, or the last one finished here
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self, name: str, plan: ReindexPlan, *, switch: bool = True) -> ReindexStatus:
        """Check the plan (InvalidInput, KnowledgeBaseNotFound … at once), then build in the background; a
        recorded re-index of the same plan is resumed. ReindexInProgress when one is running for ``name``."""
        name = validate_kb_name(name)
        with self._lock:
            running = self._runs.get(name)
            if running is not None and not running.status.finished:
                raise ReindexInProgress(f"a re-index of knowledge base {name!r} is running (see its status)")
            kb, embedder, _ = self.reindexer.prepare(name, plan)
            run = _Run(ReindexStatus(kb.name, embedder.info.name, plan.chunk_size, plan.chunk_overlap))
            self._runs[kb.name] = run
            run.thread = threading.Thread(
                target=self._run, args=(kb.name, plan, run, switch), name=f"reindex-{kb.key[:8]}", daemon=True
            )
            run.thread.start()
            return replace(run.status)

    def _run(self, name: str, plan: ReindexPlan, run: _Run, switch: bool) -> None:
        def report(status: ReindexStatus) -> None:
            run.status = status

        try:
            run.status = self.reindexer.run(
                name, plan, cancel=run.cancel, stop=self._stop, report=report, switch=switch
            )
        except Exception as exc:  # reported in the status; the knowledge base is as it was
            log.exception("re-index of %s failed", name)
            run.status = replace(run.status, state="failed", error=str(exc))

    def status(self, name: str) -> ReindexStatus:
        """The running or last re-index of ``name`` in this process, else one a previous process left recorded
        (``interrupted``); ReindexNotFound when there is none."""
        name = validate_kb_name(name)
        with self._lock:
            run = self._runs.get(name)
        if run is not None and not run.status.finished:
            return replace(run.status)
        recorded = self.reindexer.recorded(name)
        if run is not None and (recorded is None or recorded.kb.index == run.status.index):
            return replace(run.status)  # what this process did last (the recorded one is that very one)
        if recorded is None:
            raise ReindexNotFound(f"knowledge base {name!r} has no re-index running or recorded")
        plan, built = ReindexPlan.of(recorded.params), not recorded.params.get("switch", True)
        return ReindexStatus(
            name,
            plan.embedding_model,
            plan.chunk_size,
            plan.chunk_overlap,
            state="built" if built else "interrupted",
            error="" if built else "this re-index is not running here: start it again to resume it, or cancel it",
            index=recorded.kb.index,
            dimension=recorded.kb.embedding.dimension,
        )

    def cancel(self, name: str, *, wait_s: float = 60.0) -> ReindexStatus:
        """Cancel the running re-index of ``name`` (its shadow is discarded) or discard a recorded one; the
        knowledge base is then as it was. ReindexNotFound when there is none."""
        name = validate_kb_name(name)
        with self._lock:
            run = self._runs.get(name)
        if run is not None and not run.status.finished and run.thread is not None:
            run.cancel.set()
            run.thread.join(wait_s)
            return replace(run.status)
        recorded = self.reindexer.cancel_recorded(name)
        return ReindexStatus(
            name, recorded.params.get("embedding_model", ""), state="cancelled", error="cancelled; it is as it was"
        )

    def resume_recorded(self) -> dict[str, int]:
        """At start-up: remove the indexes a switch retired (no search of this process holds them) and resume
        the re-indexes a previous process left recorded. Returns how many of each."""
        counts = {"retired": 0, "resumed": 0}
        for kb in self.reindexer.catalog.list():
            try:
                counts["retired"] += self.reindexer.retire(kb)
                recorded = self.reindexer.recorded(kb.name)
                if recorded is None:
                    continue
                p = recorded.params
                if not p.get("switch", True):
                    continue  # built to be compared: it waits for someone to start it again
                self.start(kb.name, ReindexPlan.of(p))
                counts["resumed"] += 1
            except KnowledgeBaseNotFound:
                continue
            except Exception:  # one knowledge base's trouble does not stop the service
                log.exception("could not resume the re-index of %s", kb.name)
        if counts["resumed"]:
            log.warning("resumed %d interrupted re-indexes", counts["resumed"])
        return counts

    def close(self, wait_s: float = 30.0) -> None:
        """Stop the running re-indexes, leaving them recorded (the next start resumes them)."""
        self._stop.set()
        with self._lock:
            threads = [r.thread for r in self._runs.values() if r.thread is not None]
        for thread in threads:
            thread.join(wait_s)
        self.reindexer.close()
