"""Parsers on files the tests generate, and on hostile or broken input."""

from __future__ import annotations

import codecs

import pytest

from kb_service.core.errors import CorruptDocument, EmptyDocument, FileTooLarge, UnsupportedFormat
from kb_service.ingest.parsers import detect_format, parse_bytes
from tests.fixtures import HTML, make_docx, make_pdf, zip_bomb

pytestmark = pytest.mark.unit


def test_generated_pdf_pages_and_title() -> None:
    doc = parse_bytes(make_pdf(["First page text.", "Second page text."]), "report.pdf")
    assert [(s.page, s.text) for s in doc.sections] == [(1, "First page text."), (2, "Second page text.")]
    assert doc.title == "Generated report"


def test_generated_docx_headings_and_tables() -> None:
    doc = parse_bytes(make_docx([("h1", "Guide"), ("p", "Intro."), ("h2", "Care"), ("p", "Water it.")]), "g.docx")
    assert [(s.heading, s.kind, s.text) for s in doc.sections] == [
        ("Guide", "text", "Guide\nIntro."),
        # a table is a section of its own; the short text above it (its heading, a line) is its caption
        ("Guide > Care", "table", "Care — Water it.\n| metric | value |\n| --- | --- |\n| latency | 12 ms |"),
    ]
    assert doc.title == "Guide"


def test_html_sections_tables_and_no_scripts() -> None:
    doc = parse_bytes(HTML.encode(), "manual.html")
    assert doc.title == "Pump manual"
    headings = [(s.heading, s.kind) for s in doc.sections]
    assert headings == [("Pump manual", "text"), ("Pump manual > Maintenance", "table")]
    assert "do not index" not in doc.text
    assert doc.sections[-1].text == (
        "Maintenance — Replace the seal every 500 hours.\n| part | interval |\n| --- | --- |\n| seal | 500 h |"
    )


def test_markdown_ignores_hashes_in_code() -> None:
    md = "# Title\n\nText.\n\n```\n# not a heading\n```\n\n## Sub\n\nMore.\n"
    doc = parse_bytes(md.encode(), "a.md")
    assert [s.heading for s in doc.sections] == ["Title", "Title > Sub"]
    assert "# not a heading" in doc.sections[0].text


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (codecs.BOM_UTF16_LE + "Grüße aus Köln".encode("utf-16-le"), "a.txt"),
        ("Grüße aus Köln, 5 €".encode("cp1252"), "b.txt"),
        ("中文文本，没有空格。".encode("gb18030"), "c.txt"),
    ],
)
def test_text_in_any_encoding(data: bytes, name: str) -> None:
    text = parse_bytes(data, name).text
    assert "Köln" in text or "中文" in text


@pytest.mark.parametrize(
    ("data", "name", "error", "message"),
    [
        (b"", "empty.txt", EmptyDocument, "the file is empty"),
        (b"   \n\t ", "blank.md", EmptyDocument, "the file is empty"),
        (bytes(range(256)) * 40, "binary.txt", UnsupportedFormat, "binary content"),
        (b"PK\x03\x04garbage-not-a-zip", "broken.docx", CorruptDocument, "corrupt or truncated archive"),
        (b"%PDF-1.7\n%broken", "broken.pdf", CorruptDocument, "cannot be read"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, "old.doc", UnsupportedFormat, "legacy Office"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "photo.png", CorruptDocument, "the image cannot be read"),
        (b"\0" * 100, "song.mp3", UnsupportedFormat, ".mp3 files are not supported"),
    ],
)
def test_broken_input_fails_with_a_specific_error(data: bytes, name: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        parse_bytes(data, name)
    assert info.value.source == name


def test_pdf_truncated_in_the_middle() -> None:
    data = make_pdf(["some text"] * 3)
    with pytest.raises(CorruptDocument):
        parse_bytes(data[: len(data) // 3], "cut.pdf")


def test_zip_bomb_is_refused() -> None:
    with pytest.raises(CorruptDocument, match="zip bomb|ratio"):
        parse_bytes(zip_bomb(), "bomb.docx")


def test_size_limit() -> None:
    with pytest.raises(FileTooLarge, match="limit is 10"):
        parse_bytes(b"x" * 11, "big.txt", max_bytes=10)


def test_content_wins_over_a_misleading_extension() -> None:
    assert detect_format(make_pdf(["x"]), "really-a-pdf.txt") == "pdf"
    assert parse_bytes(make_pdf(["hello"]), "really-a-pdf.txt").format == "pdf"


def test_a_text_that_starts_like_a_bitmap_is_still_text() -> None:
    import io

    from PIL import Image

    bitmap = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(bitmap, format="BMP")
    assert detect_format(bitmap.getvalue(), "scan.bmp") == "image"
    # "BM" alone is no image: a SciFact abstract begins "BMI …"
    assert detect_format(b"BMI was associated with mortality.", "1996292.txt") == "text"
    assert parse_bytes(b"BMI was associated with mortality.", "1996292.txt").format == "text"


def test_spreadsheet_cells_read_as_a_person_reads_them() -> None:
    import datetime
    import io

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Stock"
    sheet.append(["part", "count", "price", "checked"])
    sheet.append(["impeller", 12.0, 2.5, datetime.datetime(2026, 3, 1)])
    sheet.append(["seal", 3, None, datetime.datetime(2026, 3, 1, 14, 30)])
    buffer = io.BytesIO()
    book.save(buffer)
    parsed = parse_bytes(buffer.getvalue(), "stock.xlsx")
    assert parsed.sections[0].heading == "Sheet: Stock"
    assert parsed.sections[0].kind == "table"
    assert parsed.text.split("\n")[1:] == [  # the first row is the header; an empty cell keeps its column
        "| part | count | price | checked |",
        "| --- | --- | --- | --- |",
        "| impeller | 12 | 2.5 | 2026-03-01 |",
        "| seal | 3 |  | 2026-03-01 14:30:00 |",
    ]
