"""Parsing in worker processes: the same documents as parsing in-process, parse errors arriving with their reason,
and a worker that dies on a file failing that file only (the next file parses in a fresh pool)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import CorruptDocument
from kb_service.core.records import DocStatus, KnowledgeBase, ParsedDocument
from kb_service.ingest.parse_pool import ParsePool
from kb_service.ingest.parsers.ocr import DEFAULT_OCR
from kb_service.ingest.pipeline import Ingestor, Outcome
from kb_service.ingest.sources import SourceItem, iter_paths
from kb_service.stores.base import VectorStore
from tests.fixtures import text_image, write_corpus


class CrashingItem(SourceItem):
    """A file whose parser takes its process down (as a crash inside a native library would)."""

    def parse(self, **_options: object) -> ParsedDocument:
        os._exit(70)


@pytest.fixture(scope="module")
def pool() -> Iterator[ParsePool]:
    pool = ParsePool(2)
    yield pool
    pool.close()


def test_files_parse_in_workers_as_they_parse_here(pool: ParsePool, tmp_path: Path) -> None:
    items = [*iter_paths([write_corpus(tmp_path)["report.pdf"].parent])]
    items.append(SourceItem("scan.png", data=text_image(["Quarterly revenue grew twelve percent"])))
    for item in items:
        there, here = pool.parse(item, max_bytes=None, ocr=DEFAULT_OCR), item.parse()
        assert there.sections == here.sections and there.metadata == here.metadata and there.title == here.title


def test_a_parse_error_in_a_worker_keeps_its_reason(pool: ParsePool) -> None:
    with pytest.raises(CorruptDocument) as info:
        pool.parse(SourceItem("broken.pdf", data=b"%PDF-1.7 not really a PDF"), max_bytes=None, ocr=DEFAULT_OCR)
    assert info.value.source == "broken.pdf" and "the PDF cannot be read" in info.value.detail


def test_a_worker_that_dies_fails_its_file_and_the_next_file_parses(pool: ParsePool) -> None:
    with pytest.raises(CorruptDocument, match="the parser's process died reading this file"):
        pool.parse(CrashingItem("bad.pdf", data=b"%PDF-1.7"), max_bytes=None, ocr=DEFAULT_OCR)
    after = pool.parse(SourceItem("fine.md", data=b"# Fine\n\nStill parsing."), max_bytes=None, ocr=DEFAULT_OCR)
    assert after.title == "Fine"


@pytest.mark.integration
def test_the_pipeline_with_parse_workers_stores_what_it_stores_without(
    store: VectorStore,
    kb: KnowledgeBase,
    embedder,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    write_corpus(tmp_path)
    settings = Settings(chunk_size=64, chunk_overlap=8, parse_workers=2)
    ingestor = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder)
    assert ingestor.parse_pool is not None and ingestor.parse_pool.workers == 2
    results = ingestor.ingest([*iter_paths([tmp_path]), CrashingItem("crash.docx", data=b"PK")])
    assert [r.outcome for r in results] == [Outcome.ADDED] * 5 + [Outcome.FAILED]
    assert results[-1].reason == "corrupt"
    inline = Ingestor.from_settings(Settings(chunk_size=64, chunk_overlap=8, parse_workers=1), store=store, kb=kb,
                                    embedder=embedder)  # fmt: skip
    assert inline.parse_pool is None
    again = inline.ingest(iter_paths([tmp_path]))
    assert {r.outcome for r in again} == {Outcome.UNCHANGED}  # the same documents, parsed in-process
    assert store.count_documents(kb, status=DocStatus.READY) == 5
