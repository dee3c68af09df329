"""The child process of ``stores.embedded_milvus``: serves one Milvus Lite data directory on a free loopback port.

Run as ``python -m kb_service.stores.milvus_lite_server DATA_DIR LOCK_WAIT_S SPEEDUPS(0|1)``. It prints the port
and whether the engine speedups are in, then serves until its stdin closes (its parent closed it, or died).

Milvus Lite's own ``start_server_in_thread`` is not used because its gRPC server refuses the keepalive pings that
pymilvus sends every 10 s: after two of them on an idle connection it sent GOAWAY ``too_many_pings``, and the
client reconnected and logged it.
"""

from __future__ import annotations

import sys
import time
from concurrent import futures

import grpc

from kb_service.stores import milvus_lite_speedups

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
    print(port, int(speedups_in), flush=True)
    sys.stdin.read()
    server.stop(grace=2).wait()
    db.close()


if __name__ == "__main__":
    serve(sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1")
