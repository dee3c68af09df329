"""Vector stores: one typed interface (``stores.base.VectorStore``), two real backends (Milvus, pgvector), opened by
``stores.factory.open_store``. Import the modules themselves: this package imports no backend, so the Milvus Lite child
(``python -m kb_service.stores.milvus_lite_server``) loads neither backend."""

import os

# gRPC (pymilvus, the Milvus Lite child) registers fork handlers by default. They run in every fork() child of this
# process — the embedded PostgreSQL's pg_ctl started as its own user is one — and race with gRPC's poller threads:
# the child can die with SIGSEGV before it execs. Nothing here forks a process that goes on using gRPC, so the
# handlers are switched off before gRPC loads, unless the environment says otherwise.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
