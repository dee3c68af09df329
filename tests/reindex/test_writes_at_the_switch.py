"""An upload in flight when a re-index switches the knowledge base: its writes reach the index just retired, which
refuses them; the ingest says so (``IndexSwitched``, the knowledge base's original files untouched) and its job
ingests it again into the new index."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kb_service.catalog import Catalog
from kb_service.core.config import Settings
from kb_service.core.errors import IndexSwitched
from kb_service.core.records import KnowledgeBase
from kb_service.embeddings import EmbedderPool
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.jobs import JobManager
from kb_service.jobs.model import FINISHED
from kb_service.reindex import Reindexer, ReindexPlan
from kb_service.stores.memory import MemoryStore
from kb_service.stores.originals import Originals

pytestmark = pytest.mark.integration
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _switched(tmp_path: Path) -> tuple[Settings, Catalog, KnowledgeBase]:
    """A knowledge base with one document, re-chunked (a re-index with the same model) after ``old`` was read."""
    settings = Settings(data_dir=tmp_path / "data", reindex_retire_s=0)
    catalog = Catalog(MemoryStore(), EmbedderPool(settings), Originals(tmp_path / "originals"))
    catalog.create("kb", embedding_model=MINILM)
    old, embedder = catalog.open("kb")
    Ingestor.from_settings(
        settings, store=catalog.store, kb=old, embedder=embedder, originals=catalog.originals
    ).ingest([SourceItem(name="first.md", text="# First\n\nThe first document of the knowledge base.")])
    status = Reindexer(settings, catalog).run("kb", ReindexPlan(MINILM, chunk_size=64), retire_later=False)
    assert status.state == "ready" and catalog.get("kb").index != old.index
    return settings, catalog, old


def test_an_ingest_into_the_retired_index_is_refused_and_keeps_the_originals(tmp_path: Path) -> None:
    settings, catalog, old = _switched(tmp_path)
    embedder = catalog.embedders.get(MINILM)
    assert catalog.originals is not None
    kept = catalog.originals.doc_ids(old)
    late = Ingestor.from_settings(settings, store=catalog.store, kb=old, embedder=embedder, originals=catalog.originals)
    with pytest.raises(IndexSwitched, match="run it again"):
        late.ingest([SourceItem(name="late.md", text="# Late\n\nWritten while the index switched.")])
    assert catalog.originals.doc_ids(old) >= kept  # a dropped knowledge base's originals go; a re-indexed one's stay


def test_the_job_of_an_upload_caught_by_the_switch_ingests_it_into_the_new_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, catalog, old = _switched(tmp_path)
    real_open = catalog.open
    opened: list[str] = []

    def stale_once(name: str, *, embedding_model: str | None = None):  # type: ignore[no-untyped-def]
        """The job's first attempt opened the knowledge base just before the switch."""
        kb, embedder = real_open(name, embedding_model=embedding_model)
        opened.append(kb.index)
        return (old if len(opened) == 1 else kb), embedder

    monkeypatch.setattr(catalog, "open", stale_once)
    jobs = JobManager(settings, catalog)
    try:
        (job,) = jobs.submit("kb", [SourceItem(name="late.md", text="# Late\n\nWritten while the index switched.")])
        deadline = time.monotonic() + 120
        while jobs.get(job.id).status not in FINISHED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        jobs.close()
    done = jobs.get(job.id)
    assert (done.status, done.outcome) == ("ready", "added"), done
    assert len(opened) == 2
    new = catalog.get("kb")
    assert {d.source for d in catalog.store.list_documents(new)} == {"first.md", "late.md"}
    assert catalog.originals is not None and done.doc_id in catalog.originals.doc_ids(new)
