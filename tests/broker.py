"""A real RabbitMQ broker for tests: a private node (its own ports, data and Erlang cookie under a temporary folder)
of Debian's rabbitmq-server, which `.ci/run` installs. Where it is not installed the tests that need it skip."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the node itself, not Debian's wrapper that switches user


def rabbitmq_server() -> Path | None:
    if _SERVER.is_file():
        return _SERVER
    found = shutil.which("rabbitmq-server")
    return Path(found) if found else None


needs_rabbitmq = pytest.mark.skipif(
    rabbitmq_server() is None, reason="rabbitmq-server is not installed (apt-get install rabbitmq-server; CI does)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def rabbitmq(folder: Path) -> Iterator[str]:
    """A running broker; its AMQP URL (the default guest user, which RabbitMQ allows from loopback)."""
    server = rabbitmq_server()
    assert server is not None
    port, dist, epmd = _free_port(), _free_port(), _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(folder),  # the Erlang cookie
        "RABBITMQ_NODENAME": f"kbtest{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_PID_FILE": str(folder / "pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "plugins"),
        "RABBITMQ_ENABLED_PLUGINS": "[]",
    }
    with (folder / "out.log").open("w") as out:
        proc = subprocess.Popen([str(server)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (folder / "out.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "RabbitMQ did not start"
                time.sleep(0.3)
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        epmd_bin = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        subprocess.run([epmd_bin, "-kill"], env=env, capture_output=True, check=False)  # the node's name server
