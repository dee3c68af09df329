"""Every file in ../shared/data/documents parses to non-empty text or fails with its documented error."""

from __future__ import annotations

from pathlib import Path

import pytest

from kb_service.core.errors import EncryptedDocument, ParseError, UnsupportedFormat
from kb_service.ingest.parsers import parse_file
from tests.conftest import DOCUMENTS, needs_shared

pytestmark = [pytest.mark.unit, needs_shared]

EXPECTED_FAILURES: dict[str, type[ParseError]] = {
    "unstructured/pdf/password.pdf": EncryptedDocument,  # needs a user password
    "unstructured/simple.doc": UnsupportedFormat,  # legacy Word 97-2003 binary
}


def _files() -> list[str]:
    if not DOCUMENTS.is_dir():
        return []
    return sorted(str(p.relative_to(DOCUMENTS)) for p in DOCUMENTS.rglob("*") if p.is_file())


@pytest.mark.parametrize("rel", _files())
def test_each_shared_document(rel: str) -> None:
    path = DOCUMENTS / rel
    expected = EXPECTED_FAILURES.get(rel)
    if expected is not None:
        with pytest.raises(expected) as info:
            parse_file(path, source=rel)
        assert info.value.source == rel and info.value.detail
        return
    doc = parse_file(path, source=rel)
    assert doc.text.strip(), f"{rel} produced no text"
    assert doc.title.strip()
    assert all(s.text == s.text.strip() and s.text for s in doc.sections)


def test_documents_folder_is_what_we_expect() -> None:
    assert len(_files()) >= 97
    assert set(EXPECTED_FAILURES) <= set(_files())


def _parse(rel: str):  # type: ignore[no-untyped-def]
    return parse_file(DOCUMENTS / rel, source=rel)


def test_pdf_keeps_page_numbers() -> None:
    doc = _parse("docling/pdf/multi_page.pdf")
    assert [s.page for s in doc.sections] == list(range(1, len(doc.sections) + 1))
    assert doc.metadata["pages"] == len(doc.sections)
    assert doc.title == "The Evolution of the Word Processor"


def test_owner_password_pdf_opens() -> None:
    assert "LayoutParser" in _parse("unstructured/pdf/copy-protected.pdf").text


def test_docx_headings_become_section_paths() -> None:
    doc = _parse("docling/docx/unit_test_headers.docx")
    headings = [s.heading for s in doc.sections if s.heading]
    assert any(" > " in h for h in headings), headings


def test_encodings_are_detected() -> None:
    assert "können" in _parse("unstructured/umlauts-non-utf8.md").text
    for rel in ("unstructured/fake-text-utf-16.txt", "unstructured/fake-text-utf-16-be.txt"):
        assert _parse(rel).text.startswith("This is a test document")
    cp1252 = _parse("unstructured/fake-html-cp1252.html")
    assert "\ufffd" not in cp1252.text and cp1252.title == "My First Heading" or "Heading" in cp1252.text


def test_html_drops_scripts_and_keeps_headings() -> None:
    doc = _parse("docling/html/wiki_duck.html")
    assert doc.title == "Duck - Wikipedia"
    assert "function(" not in doc.text
    assert any(s.heading and "Duck" in s.heading for s in doc.sections)


def test_chinese_markdown_and_other_formats() -> None:
    zh = _parse("chatchat_zh/分布式训练技术原理.md")
    assert zh.title == "分布式训练技术原理" and zh.format == "markdown"
    assert _parse("unstructured/winter-sports.epub").title == "Winter Sports in Switzerland"
    pptx = _parse("docling/pptx/powerpoint_sample.pptx")
    assert [s.page for s in pptx.sections][0] == 1 and pptx.format == "pptx"
    assert "Sheet:" in _parse("unstructured/stanley-cups.xlsx").sections[0].heading
    assert _parse("docling/csv/csv-comma.csv").format == "csv"
    assert _parse("unstructured/fake.odt").format == "odt"
    assert _parse("unstructured/fake-doc.rtf").format == "rtf"


def test_long_docx_parses(tmp_path: Path) -> None:
    doc = _parse("unstructured/handbook-872p.docx")
    assert len(doc.text) > 500_000 and len(doc.sections) > 100
