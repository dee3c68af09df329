"""The embedded Milvus Lite runs in a server process of its own: shared by the stores on one file and by every process
on it, stopped with the last of them (closed or killed), and a failed start is a clear StoreError."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import StoreError
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings.sentence import SentenceTransformerEmbedder
from kb_service.stores import milvus_lite_speedups
from kb_service.stores.embedded_milvus import start_embedded_milvus
from kb_service.stores.factory import open_store
from kb_service.stores.milvus import MilvusStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_stores_on_one_file_share_a_child_server_that_stops_with_the_last(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    path = str(tmp_path / "milvus.db")
    first, second = MilvusStore(path), MilvusStore(path)
    server = MilvusStore._lite_servers[os.path.abspath(path)]
    assert first.client is not second.client and server.pid != os.getpid()
    first.create_kb(KnowledgeBase(name="shared", embedding=embedder.info))
    assert [kb.name for kb in second.list_kbs()] == ["shared"]
    first.close()
    assert server.running()  # the second store still uses it
    second.close()
    assert not server.running() and os.path.abspath(path) not in MilvusStore._lite_servers
    reopened = MilvusStore(path)  # the file was released, and kept its data
    try:
        assert [kb.name for kb in reopened.list_kbs()] == ["shared"]
    finally:
        reopened.close()


def test_the_child_runs_the_engine_speedups_unless_they_are_turned_off(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    import milvus_lite

    supported = milvus_lite.__version__ in milvus_lite_speedups.SUPPORTED
    for speedups in (True, False):
        store = open_store(Settings(data_dir=tmp_path, backend="milvus", milvus_lite_speedups=speedups))
        try:
            server = MilvusStore._lite_servers[str((tmp_path / "milvus.db").resolve())]
            assert server.speedups is (speedups and supported)
            if speedups:
                store.create_kb(KnowledgeBase(name="either", embedding=embedder.info))
            assert [kb.name for kb in store.list_kbs()] == ["either"]  # the same data, read either way
        finally:
            store.close()


def test_in_process_mode_still_works(tmp_path: Path) -> None:
    store = MilvusStore(str(tmp_path / "milvus.db"), lite_process=False)
    try:
        assert os.path.abspath(str(tmp_path / "milvus.db")) not in MilvusStore._lite_servers
        assert store.list_kbs() == []
    finally:
        store.close()


def test_a_failed_start_is_a_store_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file.db"
    not_a_directory.write_text("not a Milvus Lite directory")
    with pytest.raises(StoreError, match="cannot start Milvus Lite"):
        start_embedded_milvus(not_a_directory, lock_wait_s=0.5)


def test_the_child_server_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    path = str(tmp_path / "milvus.db")
    script = (
        "import sys, time; from kb_service.stores.milvus import MilvusStore; s = MilvusStore(sys.argv[1]); "
        "print(MilvusStore._lite_servers[sys.argv[1]].pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, os.path.abspath(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())  # type: ignore[union-attr]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)
    store = MilvusStore(path)  # the lock was released
    store.close()


def test_processes_on_one_file_share_its_server_which_outlives_the_one_that_started_it(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """A second process joins the first one's server (one lock holder, the same data, writes seen both ways); when
    the first process goes, the server stays for the second, and stops when that one goes too."""
    path = os.path.abspath(tmp_path / "milvus.db")
    script = (
        "import sys; from kb_service.stores.milvus import MilvusStore; s = MilvusStore(sys.argv[1]); "
        "print(MilvusStore._lite_servers[sys.argv[1]].pid, [k.name for k in s.list_kbs()], flush=True); "
        "sys.stdin.readline(); print([k.name for k in s.list_kbs()], flush=True); sys.stdin.readline()"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", script, path], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert first.stdout is not None and first.stdin is not None
    server_pid = int(first.stdout.readline().split()[0])
    store = MilvusStore(path)  # joins the first process's server instead of failing on the file's lock
    try:
        assert MilvusStore._lite_servers[path].pid == server_pid
        store.create_kb(KnowledgeBase(name="from the second", embedding=embedder.info))
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "['from the second']"  # the first process sees the write
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(30) == 0
        time.sleep(1.5)  # the server has seen the first process go
        assert _alive(server_pid) and [kb.name for kb in store.list_kbs()] == ["from the second"]
    finally:
        store.close()
    assert not _alive(server_pid)  # the last user has gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init in this container) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()
