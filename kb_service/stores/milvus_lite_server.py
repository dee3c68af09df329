"""The server process of ``stores.embedded_milvus``: serves one Milvus Lite data directory on a free loopback port.

Run as ``python -m kb_service.stores.milvus_lite_server DATA_DIR LOCK_WAIT_S SPEEDUPS(0|1)``. It prints the port
and whether the engine speedups are in, then writes to its log (``milvus.db.server/server.log``) and serves until
no process that joined it (``embedded_milvus.Registry``) is left.

Milvus Lite's own ``start_server_in_thread`` is not used because its gRPC server refuses the keepalive pings that
pymilvus sends every 10 s: after two of them on an idle connection it sent GOAWAY ``too_many_pings``, and the
client reconnected and logged it.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc

from kb_service.stores import milvus_lite_speedups
from kb_service.stores.embedded_milvus import POLL_S, Registry

MAX_MESSAGE = 256 * 1024 * 1024  # as Milvus Lite's own server, and Milvus standalone
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # pymilvus pings every 10 s, also between calls.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]
WORKERS = 10


def serve(data_dir: str, lock_wait_s: float, speedups: bool) -> None:
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from milvus_lite.db import MilvusLite
    from pymilvus.grpc_gen import milvus_pb2_grpc

    speedups_in = milvus_lite_speedups.install() if speedups else False
    # Another process's server may still be letting go of the directory's lock (a previous user that has just
    # closed or died): retry for a while.
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            db = MilvusLite(data_dir)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS), options=OPTIONS)
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    registry = Registry(Path(data_dir))
    log = open(registry.log, "a")  # noqa: SIM115 - open for the life of the process
    print(port, int(speedups_in), flush=True)
    # The process that started this one may leave before the others: write nowhere it reads.
    os.dup2(log.fileno(), sys.stdout.fileno())
    os.dup2(log.fileno(), sys.stderr.fileno())
    while True:
        time.sleep(POLL_S)
        with registry.locked():
            if not registry.live_users():
                registry.withdraw(os.getpid())  # a process that joins from now on starts a new server
                break
    server.stop(grace=2).wait()
    db.close()


if __name__ == "__main__":
    serve(sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1")
