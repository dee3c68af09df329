"""Token-aware chunking with the real model tokenizer, English and Chinese."""

from __future__ import annotations

from itertools import pairwise

import pytest

from kb_service.core.records import ParsedDocument, Section
from kb_service.ingest.chunking import TokenChunker
from kb_service.ingest.summarize import ExtractiveSummarizer

pytestmark = pytest.mark.integration

EN = " ".join(
    f"Sentence number {i} explains how the turbine blade number {i} is inspected for cracks." for i in range(200)
)
ZH = "".join(f"第{i}段说明了长江流域的水文特征和生态保护措施。" for i in range(300))


@pytest.fixture
def chunker(embedder) -> TokenChunker:  # type: ignore[no-untyped-def]
    return TokenChunker(embedder.count_tokens, chunk_size=128, chunk_overlap=16, max_tokens=embedder.info.max_tokens)


def _doc(*sections: Section) -> ParsedDocument:
    return ParsedDocument(source="a.txt", title="Doc", format="text", sections=list(sections))


@pytest.mark.parametrize("text", [EN, ZH])
def test_chunks_fit_the_token_budget(chunker: TokenChunker, embedder, text: str) -> None:  # type: ignore[no-untyped-def]
    chunks = chunker.split(_doc(Section(text)), "d")
    assert len(chunks) > 5
    assert max(embedder.count_tokens(c.text) for c in chunks) <= 128
    assert [c.ord for c in chunks] == list(range(len(chunks)))


def test_chinese_chunks_end_at_sentence_boundaries(chunker: TokenChunker) -> None:
    chunks = chunker.split(_doc(Section(ZH)), "d")
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_overlap_repeats_text_between_neighbours(chunker: TokenChunker) -> None:
    chunks = chunker.split(_doc(Section(EN)), "d")
    assert any(b.start < a.end for a, b in pairwise(chunks))


def test_offsets_point_into_the_document_text_and_metadata_is_carried(chunker: TokenChunker) -> None:
    doc = _doc(Section("Intro paragraph.", page=1, heading="Intro"), Section(EN, page=2, heading="Body > Blades"))
    chunks = chunker.split(doc, "d")
    assert chunks[0].page == 1 and chunks[0].section == "Intro"
    assert all(c.page == 2 and c.section == "Body > Blades" for c in chunks[1:])
    for c in chunks:
        assert doc.text[c.start : c.end] == c.text
        assert c.metadata == {"source": "a.txt", "title": "Doc"}


def test_unbreakable_text_is_still_cut_to_the_model_limit(embedder) -> None:  # type: ignore[no-untyped-def]
    chunker = TokenChunker(embedder.count_tokens, chunk_size=512, chunk_overlap=0, max_tokens=embedder.info.max_tokens)
    chunks = chunker.split(_doc(Section("x7" * 3000)), "d")
    assert max(embedder.count_tokens(c.text) for c in chunks) <= embedder.info.max_tokens == 254


def test_extractive_summary(embedder, chunker: TokenChunker) -> None:  # type: ignore[no-untyped-def]
    summarizer = ExtractiveSummarizer(embedder.count_tokens, budget_tokens=100)
    doc = _doc(Section("Turbine inspection.", heading="Inspection"), Section(EN, heading="Inspection > Blades"))
    doc.title = "Turbine manual"
    summary = summarizer.summarize(doc, chunker.split(doc, "d"))
    assert summary.startswith("Turbine manual\nInspection\nBlades")
    assert embedder.count_tokens(summary) <= 100
    zh = _doc(Section(ZH))
    zh_summary = summarizer.summarize(zh, chunker.split(zh, "z"))
    assert "长江" in zh_summary and embedder.count_tokens(zh_summary) <= 100


def test_one_chunk_document_is_its_own_summary(embedder, chunker: TokenChunker) -> None:  # type: ignore[no-untyped-def]
    doc = _doc(Section("A short note."))
    chunks = chunker.split(doc, "d")
    assert ExtractiveSummarizer(embedder.count_tokens, budget_tokens=100).summarize(doc, chunks) == "A short note."


def _table(rows: int) -> Section:
    caption = "Revenue by region (in millions):"
    body = [f"| Region number {i} with a long descriptive name | {1000 + i:,} | {900 + i:,} |" for i in range(rows)]
    text = "\n".join([caption, "|  | 2023 | 2022 |", "| --- | --- | --- |", *body])
    return Section(text, page=3, kind="table", caption=caption, box=(0.1, 0.2, 0.9, 0.8))


def test_a_table_that_fits_is_one_chunk(chunker: TokenChunker) -> None:
    section = _table(3)
    [chunk] = chunker.split(_doc(Section("Intro."), section), "d")[1:]
    assert chunk.text == section.text and chunk.page == 3
    assert chunk.metadata["bbox"] == "0.1000,0.2000,0.9000,0.8000"


def test_a_long_table_splits_by_rows_under_its_header(chunker: TokenChunker, embedder) -> None:  # type: ignore[no-untyped-def]
    section = _table(60)
    doc = _doc(section)
    chunks = chunker.split(doc, "d")
    assert len(chunks) > 3
    head = "Revenue by region (in millions):\n|  | 2023 | 2022 |\n| --- | --- | --- |\n"
    rows = []
    for c in chunks:
        assert c.text.startswith(head) and embedder.count_tokens(c.text) <= 128
        body = c.text[len(head) :].split("\n")
        assert all(r.startswith("| Region number") and r.endswith(" |") for r in body)  # no row cut in two
        assert doc.text[c.start : c.end] == "\n".join(body)  # offsets name the rows' own span
        rows += body
    assert rows == section.text.split("\n")[3:]  # every row once, in order
