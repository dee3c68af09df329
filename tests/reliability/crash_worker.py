"""Run one store operation in this process and SIGKILL the process at a chosen point inside it (the crash tests
start it as a subprocess): ``python -m tests.reliability.crash_worker OPERATION`` with the settings in KB_* env.

Crash points: ``ingest`` dies after the chunks are written and before the document is published; ``delete``
dies after the chunks are removed (Milvus) or inside the deleting transaction (PostgreSQL); ``replace`` dies
after the new version is published and the old one hidden, before the old one is removed (Milvus), or inside the
publishing transaction (PostgreSQL)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.embeddings import EmbedderPool
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.stores.factory import open_store

KB = "crash"


def die(*_args: Any, **_kwargs: Any) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(operation: str, arg: str) -> None:
    settings = Settings()
    store = open_store(settings)
    catalog = Catalog(store, EmbedderPool(settings))
    kb, embedder = catalog.open(KB)
    if operation == "ingest":
        original = store.add_chunks

        def add_then_die(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            die()

        store.add_chunks = add_then_die  # type: ignore[method-assign]
    elif settings.store.backend == "pgvector":
        store._bump = lambda *_args, **_kwargs: die()  # type: ignore[attr-defined]  # inside the delete / publish transaction
    elif operation == "delete":
        client = store.client  # type: ignore[attr-defined]
        original_delete = client.delete

        def delete_chunks_then_die(collection: str, *args: Any, **kwargs: Any) -> Any:
            if collection.endswith("_docs"):  # the chunks are gone; the row removal never happens
                die()
            return original_delete(collection, *args, **kwargs)

        client.delete = delete_chunks_then_die
    else:  # replace on Milvus: the upsert flips new READY / old DELETING, then the removal of the old one dies
        store._remove = die  # type: ignore[attr-defined]
    print("armed", flush=True)
    if operation == "delete":
        store.delete_document(kb, arg)
    else:
        name, text = arg.split("=", 1)
        Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder).ingest([SourceItem(name, text=text)])
    print("finished without crashing", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
