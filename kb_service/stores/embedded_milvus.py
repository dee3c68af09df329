"""Milvus Lite in a child process: the embedded default store, out of this process's threads.

Milvus Lite 3 is a pure-Python engine behind a local gRPC server. In-process, its searches and writes hold this
process's GIL while they walk their segments row by row, stalling the API's threads and the model thread; in a
child process they run beside them (docs/BENCHMARKS.md, query latency, third run). The child
(``kb_service.stores.milvus_lite_server``) serves one data directory on a free loopback port, with the engine
speedups of ``stores.milvus_lite_speedups`` unless asked not to, and exits when its parent closes its stdin, or dies.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kb_service.core.errors import StoreError

START_TIMEOUT_S = 60.0
SERVER = "kb_service.stores.milvus_lite_server"  # the child; run with -P: the working directory is not its path


@dataclass
class EmbeddedMilvus:
    """A running child Milvus Lite server for one data directory."""

    path: Path
    process: subprocess.Popen[str]
    uri: str
    speedups: bool = False  # whether the child runs with ``stores.milvus_lite_speedups`` installed

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the child to finish (drain, close the database, release its lock) and wait; kill it if it hangs."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def start_embedded_milvus(path: Path, *, lock_wait_s: float = 15.0, speedups: bool = True) -> EmbeddedMilvus:
    """Start a Milvus Lite server on ``path`` (a directory, created if missing) in a child process, with
    ``stores.milvus_lite_speedups`` installed unless ``speedups`` is false."""
    path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", SERVER, str(path), str(lock_wait_s), "1" if speedups else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    threading.Thread(target=_read, args=(process.stdout, first.put, []), daemon=True).start()
    stderr = threading.Thread(target=_read, args=(process.stderr, None, errors), daemon=True)
    stderr.start()
    try:
        port, _, speedups_in = first.get(timeout=START_TIMEOUT_S).strip().partition(" ")
    except queue.Empty:
        port, speedups_in = "", ""
    if not port.isdigit():
        EmbeddedMilvus(path, process, "").stop(timeout_s=2)
        stderr.join(timeout=2)
        detail = "".join(errors).strip().splitlines()[-1:] or ["no answer"]
        raise StoreError(f"cannot start Milvus Lite on {path}: {detail[0]}")
    return EmbeddedMilvus(path, process, f"http://127.0.0.1:{port}", speedups=speedups_in == "1")


def _read(stream: IO[str] | None, first_line: Callable[[str], None] | None, tail: list[str]) -> None:
    """Keep one of the child's pipes flowing (a full pipe would block it) until it closes: hand on the first line
    (stdout: the port and whether the speedups are in), keep the last lines (stderr: why a start failed)."""
    assert stream is not None
    with stream:
        for line in stream:
            if first_line is not None:
                first_line(line)
                first_line = None
            tail.append(line)
            del tail[:-50]
    if first_line is not None:  # closed before a first line: the child failed
        first_line("")
