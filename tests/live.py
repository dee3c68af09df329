"""Live servers for tests: uvicorn in this process (it lives in api.live so the benchmarks use it too), and the
``kb serve`` command in a process of its own."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from kb_service.api.live import live_server

__all__ = ["kb_serve", "live_server"]


@contextmanager
def kb_serve(
    env: dict[str, str], log: Path, *, cwd: Path | None = None, stop: signal.Signals = signal.SIGINT
) -> Iterator[str]:
    """``kb serve`` on a free port with ``env``, its output in ``log``: the service's URL once it is ready. It is
    stopped with Ctrl-C (SIGINT) afterwards, as a user stops it, or with ``stop`` (SIGTERM: as a service manager)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("w") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "kb_service.cli.main", "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                assert service.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the service did not get ready"
                time.sleep(0.5)
            yield url
        finally:
            service.send_signal(stop)
            service.wait(60)
