"""The model thread: every call into a local PyTorch model of this process (embedders, rerankers) runs on one thread.

PyTorch runs CPU kernels on an OpenMP team that belongs to the calling thread. Calls from several threads (API
worker threads, the ingest consumer, the reranker) start several teams, and a query embedding took twice as long
from any thread once a second thread had called the model (likely libgomp's workers sleeping and waking at every
parallel region once there are more of them than cores; ``OMP_WAIT_POLICY=passive`` did not help; docs/BENCHMARKS.md).
From one thread there is one team.

Calls that may be coalesced (query embeddings: short, latency-bound) carry a key; those waiting together under the
same key run as one forward pass, so concurrent searches share it. Others run alone, first come first served;
callers keep them short (one batch each) so a query never waits behind a whole ingest.

Background work (rerank vectors computed ahead of need) submits inside ``background()`` and runs only when
``idle_for()`` says no other call has come for a while.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[..., Any]
    key: Hashable | None = None
    texts: list[str] = field(default_factory=list)
    future: Future[Any] = field(default_factory=Future)
    background: bool = False


class ModelThread:
    def __init__(self, *, max_coalesced: int = 64) -> None:
        self.max_coalesced = max_coalesced
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._local = threading.local()
        self._activity = threading.Lock()
        self._foreground = 0  # foreground calls submitted and not finished
        self._last_foreground = time.monotonic()

    @contextmanager
    def background(self) -> Iterator[None]:
        """Calls made by this thread inside the block are background work: they do not count as activity."""
        self._local.background = True
        try:
            yield
        finally:
            self._local.background = False

    def idle_for(self) -> float:
        """Seconds since the last foreground call finished; 0 while one is waiting or running."""
        with self._activity:
            return 0.0 if self._foreground else time.monotonic() - self._last_foreground

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the model thread; its result or its exception."""
        if threading.current_thread() is self._thread:
            return fn()
        return self._submit(_Job(fn)).result()  # type: ignore[no-any-return]

    def encode(self, key: Hashable, fn: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """``fn(texts)`` (one row per text) on the model thread, in one call with other waiting calls of ``key``."""
        if threading.current_thread() is self._thread:
            return fn(list(texts))
        return self._submit(_Job(fn, key, list(texts))).result()  # type: ignore[no-any-return]

    def _submit(self, job: _Job) -> Future[Any]:
        job.background = getattr(self._local, "background", False)
        if not job.background:
            with self._activity:
                self._foreground += 1
            job.future.add_done_callback(self._finished)
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="model", daemon=True)
                    self._thread.start()
        self._jobs.put(job)
        return job.future

    def _finished(self, _: Future[Any]) -> None:
        with self._activity:
            self._foreground -= 1
            self._last_foreground = time.monotonic()

    def _loop(self) -> None:
        backlog: deque[_Job] = deque()  # taken off the queue while coalescing, still in arrival order
        while True:
            job = backlog.popleft() if backlog else self._jobs.get()
            group = [job]
            if job.key is not None:
                while True:
                    try:
                        backlog.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                rest: deque[_Job] = deque()
                size = len(job.texts)
                for other in backlog:
                    if other.key == job.key and size + len(other.texts) <= self.max_coalesced:
                        group.append(other)
                        size += len(other.texts)
                    else:
                        rest.append(other)
                backlog = rest
            _run(group)


def _run(group: list[_Job]) -> None:
    live = [job for job in group if job.future.set_running_or_notify_cancel()]
    if not live:
        return
    try:
        if live[0].key is None:
            live[0].future.set_result(live[0].fn())
            return
        rows = live[0].fn([text for job in live for text in job.texts])
    except BaseException as exc:  # handed to every caller of the group
        for job in live:
            job.future.set_exception(exc)
        return
    start = 0
    for job in live:
        job.future.set_result(rows[start : start + len(job.texts)])
        start += len(job.texts)


# One per process: a second model thread would bring back the second OpenMP team.
MODEL_THREAD = ModelThread()
