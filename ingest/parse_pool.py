"""Parsing in worker processes. PDFium runs one call at a time in a process (``pdf.PDFIUM``) and layout analysis is
pure Python under the GIL, so files parse side by side only in separate processes. One pool serves every ingest of
the process: started on first use (spawned, so no thread of the parent is forked), kept warm, stopped at exit.

A worker that dies on a file (a crash inside a native parser, or the memory limit) fails that file with a clear
reason instead of taking the service down with it, and the pool starts afresh for the next one."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from kb_service.core.errors import CorruptDocument
from kb_service.core.records import ParsedDocument
from kb_service.ingest.parsers.ocr import OcrOptions
from kb_service.ingest.sources import SourceItem

log = logging.getLogger(__name__)
MAX_AUTO_WORKERS = 4


def auto_workers() -> int:
    """Parse processes when the setting is 0 (auto): one per core but one, at most four; none on
    a machine of one or two cores, where measurement shows processes beside the embedding model gain nothing."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores <= 2 else min(MAX_AUTO_WORKERS, cores - 1)


class ParsePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def parse(self, item: SourceItem, *, max_bytes: int | None, ocr: OcrOptions) -> ParsedDocument:
        """``item.parse`` in a worker process (its ParseError is raised here as it was there)."""
        pool = self._executor()
        try:
            return pool.submit(_parse, item, max_bytes, ocr).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first to see it starts a new pool; the others just retry theirs
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            log.warning("a parse worker died on %s; the pool is started again", item.name)
            raise CorruptDocument(
                item.name, "the parser's process died reading this file (a damaged file, or the memory limit)"
            ) from None

    def start(self) -> None:
        """Start every worker now (they otherwise start with the first files)."""
        pool = self._executor()
        for future in [pool.submit(os.getpid) for _ in range(self.workers)]:
            future.result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            return self._pool


def _parse(item: SourceItem, max_bytes: int | None, ocr: OcrOptions) -> ParsedDocument:
    return item.parse(max_bytes=max_bytes, ocr=ocr)


_SHARED: dict[int, ParsePool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(workers: int) -> ParsePool | None:
    """The process's pool of ``workers`` parse processes (None for fewer than two: parse in the calling thread)."""
    if workers < 2:
        return None
    with _SHARED_LOCK:
        if workers not in _SHARED:
            _SHARED[workers] = ParsePool(workers)
        return _SHARED[workers]


@atexit.register
def _close_all() -> None:
    for pool in list(_SHARED.values()):
        pool.close()
