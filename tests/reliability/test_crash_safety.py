"""Crash safety on both stores: a real SIGKILL at the worst moments of ingest, delete and replace (a subprocess
killed at a chosen point), then start-up recovery. Nothing half-written is ever visible or listed as ready, no
chunk is left over, what was ready before is intact, and the interrupted operation can simply be retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.records import DocStatus
from kb_service.embeddings import EmbedderPool
from kb_service.ingest.pipeline import Ingestor, Outcome
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.factory import build_retriever
from kb_service.retrieval.residue import residue
from kb_service.stores.factory import open_store
from kb_service.stores.recovery import audit, recover
from tests.reliability.crash_worker import KB

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BEFORE = {
    "pumps.md": "# Pumps\n\nCentrifugal pumps move water with a spinning impeller. " * 20,
    "valves.md": "# Valves\n\nA check valve lets fluid flow in one direction only. " * 20,
    "hoses.md": "# Hoses\n\nRubber hoses crack in frost and must be stored indoors. " * 20,
}
NEW = "# Filters\n\nSand filters trap particles; backwash them weekly to keep the flow up. " * 30


@pytest.fixture(params=["milvus", "pgvector"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, pg_dsn: str) -> Iterator[Settings]:
    env = {"KB_BACKEND": request.param, "KB_DATA_DIR": str(tmp_path), "KB_CHUNK_SIZE": "64", "KB_CHUNK_OVERLAP": "8"}
    if request.param == "pgvector":
        env["KB_PG_DSN"] = pg_dsn
    s = Settings(**{k.removeprefix("KB_").lower(): v for k, v in env.items()})
    with Services(s) as (store, catalog):
        if KB in [k.name for k in catalog.list()]:
            catalog.drop(KB)  # the pgvector database is shared by the session
        kb, embedder = catalog.get_or_create(KB)[0], catalog.open(KB)[1]
        Ingestor.from_settings(s, store=store, kb=kb, embedder=embedder).ingest(
            [SourceItem(n, text=t) for n, t in BEFORE.items()]
        )
    s.__dict__["crash_env"] = env
    yield s


class Services:
    """A store and catalog opened for the length of a ``with`` block (Milvus Lite allows one process at a time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> tuple:  # type: ignore[type-arg]
        self.store = open_store(self.settings)
        return self.store, Catalog(self.store, EmbedderPool(self.settings))

    def __exit__(self, *_exc: object) -> None:
        self.store.close()


def crash(settings: Settings, operation: str, arg: str) -> None:
    env = {**os.environ, **settings.__dict__["crash_env"], "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.crash_worker", operation, arg],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "armed" in proc.stdout and "finished" not in proc.stdout


def ready_state(store, kb) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    docs = store.list_documents(kb, status=DocStatus.READY)
    return {d.source: (d.id, store.count_chunks(kb, doc_id=d.id)) for d in docs}


def visible_sources(settings: Settings, store, catalog, query: str) -> set[str]:  # type: ignore[no-untyped-def]
    kb, embedder = catalog.open(KB)
    from kb_service.retrieval.pipeline import SearchOptions

    result = build_retriever(settings, store, catalog.embedders).search(
        kb, embedder, query, SearchOptions(top_k=50, rerank=False)
    )
    return {h.chunk.metadata["source"] for h in result.hits}


def test_crash_during_ingest(settings: Settings) -> None:
    with Services(settings) as (store, catalog):
        before = ready_state(store, catalog.get(KB))
    crash(settings, "ingest", f"filters.md={NEW}")
    with Services(settings) as (store, catalog):
        kb = catalog.get(KB)
        found = audit(store, kb)
        assert found.leftover_chunks > 0 and found.documents.get("processing") == 1  # the crash left these …
        assert ready_state(store, kb) == before  # … but nothing half-written is listed as ready
        assert "filters.md" not in visible_sources(settings, store, catalog, "sand filters backwash")
        report = recover(store, kb)
        print(f"\n[{settings.store.backend}] ingest crash: before recovery {found}; {report}; after {audit(store, kb)}")
        assert report.documents_removed == {"processing": 1} and report.chunks_removed == found.leftover_chunks
        after = audit(store, kb)
        assert after.clean and after.documents == {"ready": 3} and ready_state(store, kb) == before
        # Retrying is uploading again.
        [result] = Ingestor.from_settings(settings, store=store, kb=kb, embedder=catalog.open(KB)[1]).ingest(
            [SourceItem("filters.md", text=NEW)]
        )
        assert result.outcome == Outcome.ADDED and audit(store, kb).clean
        assert "filters.md" in visible_sources(settings, store, catalog, "sand filters backwash")


def test_crash_during_delete(settings: Settings) -> None:
    with Services(settings) as (store, catalog):
        before = ready_state(store, catalog.get(KB))
    doc_id = before["valves.md"][0]
    crash(settings, "delete", doc_id)
    with Services(settings) as (store, catalog):
        kb = catalog.get(KB)
        state = ready_state(store, kb)
        print(f"\n[{settings.store.backend}] delete crash: ready {len(before)} -> {len(state)}; {audit(store, kb)}")
        # Either the delete never happened (PostgreSQL rolled the transaction back) or the document is hidden.
        if "valves.md" in state:
            assert settings.store.backend == "pgvector" and state == before
        else:
            assert "valves.md" not in visible_sources(settings, store, catalog, "check valve one direction")
        recover(store, kb)
        assert audit(store, kb).clean
        if "valves.md" not in ready_state(store, kb):
            assert residue(store, build_retriever(settings, store, catalog.embedders).lexical, kb, doc_id).clean
        else:  # the retry
            store.delete_document(kb, doc_id)
        assert ready_state(store, kb) == {k: v for k, v in before.items() if k != "valves.md"}
        assert residue(store, build_retriever(settings, store, catalog.embedders).lexical, kb, doc_id).clean


def test_crash_during_replace(settings: Settings) -> None:
    with Services(settings) as (store, catalog):
        before = ready_state(store, catalog.get(KB))
    crash(settings, "replace", f"pumps.md={NEW}")
    with Services(settings) as (store, catalog):
        kb = catalog.get(KB)
        state = ready_state(store, kb)
        print(f"\n[{settings.store.backend}] replace crash: {audit(store, kb)}")
        assert set(state) == set(before)  # exactly one version of pumps.md is ready, never both or neither
        visible = store.documents_by_source(kb, ["pumps.md"])
        assert sum(d.status == DocStatus.READY for d in visible) == 1
        recover(store, kb)
        assert audit(store, kb).clean and audit(store, kb).documents == {"ready": 3}
        others = {k: v for k, v in before.items() if k != "pumps.md"}
        assert {k: v for k, v in ready_state(store, kb).items() if k != "pumps.md"} == others
        # Retrying the replacement finishes it (or finds it already done).
        [result] = Ingestor.from_settings(settings, store=store, kb=kb, embedder=catalog.open(KB)[1]).ingest(
            [SourceItem("pumps.md", text=NEW)]
        )
        assert result.outcome in (Outcome.REPLACED, Outcome.UNCHANGED)
        assert ready_state(store, kb)["pumps.md"][0] != before["pumps.md"][0] and audit(store, kb).clean
