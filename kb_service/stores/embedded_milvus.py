"""Milvus Lite in a server process of its own: the embedded default store, shared by every process on one data
directory.

Milvus Lite 3 is a pure-Python engine behind a local gRPC server, and one process at a time may open a data file.
In-process, its searches and writes hold this process's GIL while they walk their segments row by row, stalling the
API's threads and the model thread; in a process of its own they run beside them (docs/BENCHMARKS.md, query latency,
third run). That process (``kb_service.stores.milvus_lite_server``) serves one data directory on a free loopback
port, with the engine speedups of ``stores.milvus_lite_speedups`` unless asked not to.

Every process that opens the directory uses the same server: the first starts it, the others find it in the
directory's registry (``milvus.db.server/``: the server's address, and one mark per process using it) and join. The
server runs in a session of its own, so it outlives the process that started it while others still use it (``kb
serve`` with ``kb search`` beside it, or the other way round), and exits once every process that used it has left
or died.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kb_service.core.errors import StoreError

START_TIMEOUT_S = 60.0
SERVER = "kb_service.stores.milvus_lite_server"  # run with -P: the working directory is not its path
POLL_S = 0.5  # how often the server looks for processes that left


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive lock on the file at ``path`` (created if missing) until the block ends, across processes."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Registry:
    """A data file's server and its users, in a folder beside the file; every change under one file lock."""

    def __init__(self, path: Path) -> None:
        self.folder = path.parent / f"{path.name}.server"
        self.address = self.folder / "server.json"
        self.users = self.folder / "users"
        self.log = self.folder / "server.log"

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.users.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.folder / "lock"):
            yield

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held by a process for each write of documents or of the registry: the processes on one file write one at
        a time (a write reads the registry entry and writes it back; a re-index's switch must not fall between)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.folder / "write.lock"):
            yield

    def join(self, pid: int) -> None:
        (self.users / str(pid)).touch()

    def leave(self, pid: int) -> None:
        (self.users / str(pid)).unlink(missing_ok=True)

    def live_users(self) -> list[int]:
        """The processes using the server; marks of processes that died are removed."""
        live = []
        for mark in self.users.iterdir():
            if mark.name.isdigit() and alive(int(mark.name)):
                live.append(int(mark.name))
            else:
                mark.unlink(missing_ok=True)
        return live

    def server(self) -> tuple[int, int, bool] | None:
        """(pid, port, speedups) of the running server, or None."""
        try:
            info = json.loads(self.address.read_text())
            pid, port, speedups = int(info["pid"]), int(info["port"]), bool(info["speedups"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (pid, port, speedups) if alive(pid) and _listening(port) else None

    def publish(self, pid: int, port: int, speedups: bool) -> None:
        tmp = self.address.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "port": port, "speedups": speedups}))
        tmp.replace(self.address)

    def writes(self) -> int:
        """How many writes of documents or of the registry any process has made to the file (what a process read
        earlier is stale once this moves)."""
        try:
            return int((self.folder / "writes").read_text() or 0)
        except (OSError, ValueError):
            return 0

    def count_write(self) -> None:
        with self.locked():
            count = self.folder / "writes"
            tmp = count.with_suffix(".tmp")
            tmp.write_text(str(self.writes() + 1))
            tmp.replace(count)

    def withdraw(self, pid: int) -> None:
        """Remove the address if it is ``pid``'s."""
        current = self.server()
        if current is None or current[0] == pid:
            self.address.unlink(missing_ok=True)


@dataclass
class EmbeddedMilvus:
    """This process's use of the Milvus Lite server of one data directory."""

    path: Path
    pid: int  # the server's
    uri: str
    speedups: bool = False  # whether the server runs with ``stores.milvus_lite_speedups`` installed

    def running(self) -> bool:
        return alive(self.pid)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Leave the server. When no other process uses it, it finishes (drains, closes the database, releases its
        lock): wait for that, so the file can be opened again at once."""
        registry = Registry(self.path)
        with registry.locked():
            registry.leave(os.getpid())
            others = registry.live_users()
        if others:
            return
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)


def start_embedded_milvus(path: Path, *, lock_wait_s: float = 15.0, speedups: bool = True) -> EmbeddedMilvus:
    """Join the Milvus Lite server of ``path`` (a directory, created if missing), starting it first if no process
    runs one, with ``stores.milvus_lite_speedups`` installed unless ``speedups`` is false (the first user decides)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    registry = Registry(path)
    with registry.locked():
        registry.join(os.getpid())
        running = registry.server()
        if running is None:
            try:
                running = _spawn(path, registry, lock_wait_s, speedups)
            except StoreError:
                registry.leave(os.getpid())
                raise
            registry.publish(*running)
    pid, port, speedups_in = running
    return EmbeddedMilvus(path, pid, f"http://127.0.0.1:{port}", speedups=speedups_in)


def _spawn(path: Path, registry: Registry, lock_wait_s: float, speedups: bool) -> tuple[int, int, bool]:
    """Start the server in a session of its own; it prints its port, then writes to its log in the registry."""
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", SERVER, str(path), str(lock_wait_s), "1" if speedups else "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a Ctrl-C meant for the process that started it does not reach it
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
        if process.poll() is None:
            process.kill()
        process.wait()
        stderr.join(timeout=2)
        detail = "".join(errors).strip().splitlines()[-1:] or ["no answer"]
        raise StoreError(f"cannot start Milvus Lite on {path}: {detail[0]}")
    threading.Thread(target=process.wait, daemon=True).start()  # reaped when it exits, whoever else still uses it
    return process.pid, int(port), speedups_in == "1"


def _read(stream: IO[str] | None, first_line: Callable[[str], None] | None, tail: list[str]) -> None:
    """Keep one of the server's pipes flowing until it closes (once started, the server writes to its log instead):
    hand on the first line (stdout: the port and whether the speedups are in), keep the last lines (stderr: why a
    start failed)."""
    assert stream is not None
    with stream:
        for line in stream:
            if first_line is not None:
                first_line(line)
                first_line = None
            tail.append(line)
            del tail[:-50]
    if first_line is not None:  # closed before a first line: the server failed
        first_line("")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust the signal


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
