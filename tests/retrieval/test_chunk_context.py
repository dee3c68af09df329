"""Chunks indexed under their document's title (``KB_CHUNK_CONTEXT=document``): a table row that does not name its
company is found by a question that does, on both stores, in dense and in lexical search; the stored text, the
citation and re-ingesting unchanged content stay as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.core.config import Settings
from kb_service.core.records import Chunk, KnowledgeBase, document_context, indexed_text, text_hash
from kb_service.ingest.pipeline import Ingestor, Outcome
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.lexical import LexicalIndex, LexicalIndexes
from kb_service.retrieval.options import SearchOptions
from kb_service.retrieval.pipeline import Retriever
from kb_service.stores.base import VectorStore

# Two statements with the same rows: only the titles say whose they are.
ROWS = "| | 2023 | 2022 |\n|---|---|---|\n| Total assets | {a} | {b} |\n| Total liabilities | {c} | {d} |"
FILINGS = {
    "acme.md": ("Acme Robotics annual report", ROWS.format(a="1,200", b="1,100", c="700", d="650")),
    "globex.md": ("Globex Shipping annual report", ROWS.format(a="9,800", b="9,100", c="4,400", d="4,000")),
}


def items() -> list[SourceItem]:
    return [SourceItem(name, text=f"# {title}\n\n{body}") for name, (title, body) in FILINGS.items()]


@pytest.mark.unit
def test_the_title_is_indexed_once() -> None:
    assert indexed_text("Acme", "Total assets") == "Acme\nTotal assets"
    assert (
        document_context("UNITED STATES SEC", "EBAY_2023Q1_EARNINGS.pdf") == "UNITED STATES SEC · EBAY 2023Q1 EARNINGS"
    )
    assert document_context("A paper on insulin", "4983") == "A paper on insulin"  # an id says nothing
    assert document_context("Acme report", "acme-report.md") == "Acme report"  # nothing the title does not say
    assert indexed_text("Acme", "Acme report: total assets") == "Acme report: total assets"  # it starts with it
    assert indexed_text("", "Total assets") == "Total assets"


@pytest.mark.unit
def test_bm25_over_titled_chunks_finds_the_company_a_row_does_not_name() -> None:
    rows = [
        Chunk(id=name, doc_id=name, ord=0, text=body, hash=name, metadata={"source": name})
        for name, (_title, body) in FILINGS.items()
    ]
    titles = {name: title for name, (title, _body) in FILINGS.items()}
    plain, titled = LexicalIndex.build(rows, "r"), LexicalIndex.build(rows, "r", titles)
    assert plain.search("Globex", top_k=2) == []  # no row names its company
    assert [h.chunk.id for h in titled.search("Globex total assets", top_k=2)][0] == "globex.md"


@pytest.mark.integration
def test_a_row_is_found_by_its_company(store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(chunk_size=64, chunk_overlap=8, chunk_context="document")
    ingestor = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder)
    assert {r.outcome for r in ingestor.ingest(items())} == {Outcome.ADDED}
    retriever = Retriever(store, LexicalIndexes(store, tmp_path / "lexical", chunk_context="document"))
    for mode in ("dense", "lexical", "hybrid"):
        options = SearchOptions(top_k=4, mode=mode, gate=False, rerank=False)  # type: ignore[arg-type]
        for company, source, number in (("Globex", "globex.md", "9,800"), ("Acme", "acme.md", "1,200")):
            top = retriever.search(kb, embedder, f"What were {company}'s total assets in 2023?", options).hits
            rows = [h for h in top if "Total assets" in h.chunk.text]
            assert rows[0].chunk.metadata["source"] == source and number in rows[0].chunk.text, (mode, [
                (h.chunk.metadata["source"], h.chunk.text[:40]) for h in top
            ])  # fmt: skip
    stored = next(c for batch in store.iter_chunks(kb) for c in batch if "Total assets" in c.text)
    context = document_context(FILINGS[stored.metadata["source"]][0], stored.metadata["source"])
    assert stored.hash == text_hash(indexed_text(context, stored.text))  # names what was embedded
    assert not stored.text.startswith(context)  # the stored text is the table's own
    assert {r.outcome for r in ingestor.ingest(items())} == {Outcome.UNCHANGED}
