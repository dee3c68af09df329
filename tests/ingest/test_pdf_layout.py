"""Layout-aware PDF parsing and OCR on real files: tables kept with their labels, running headers and footers
removed, two-column reading order, scans and images read by OCR with page citations."""

from __future__ import annotations

import io

import pytest

from kb_service.core.errors import NoTextLayer
from kb_service.core.records import ParsedDocument
from kb_service.ingest.parsers import parse_bytes, parse_file
from kb_service.ingest.parsers.ocr import OcrOptions
from tests.conftest import SHARED_DATA, needs_shared
from tests.fixtures import text_image

pytestmark = pytest.mark.integration

FILINGS = SHARED_DATA / "filings"
PROSE = "Operations continued across every region during the year while the company invested in new facilities"
LOREM = PROSE.split(" ")


def _report() -> bytes:
    """Four pages with a running header and footer, page numbers, a two-column page and a financial table."""
    from reportlab.lib.pagesizes import LETTER
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=LETTER)
    width, height = LETTER
    for number in range(1, 5):
        c.setFont("Helvetica", 8)
        c.drawString(72, height - 40, "Acme Industries Annual Report 2023")
        c.drawCentredString(width / 2, 30, f"- {number} -")
        c.setFont("Helvetica", 10)
        if number == 2:  # two columns of prose
            for col, x in enumerate((72, 320)):
                for i in range(30):
                    words = LOREM[(i + col * 7) % 10 :][:4]
                    c.drawString(x, height - 90 - i * 13, f"{'LEFT' if col == 0 else 'RIGHT'}{i} " + " ".join(words))
        elif number == 3:  # a table with a caption and a header row
            c.drawString(72, height - 90, "The following table shows net revenue by segment (in millions):")
            c.drawRightString(420, height - 115, "2023")
            c.drawRightString(500, height - 115, "2022")
            rows = [
                ("Industrial segment", "$1,234", "$1,100"),
                ("Consumer segment", "567", "(45)"),
                ("Total net revenue", "$1,801", "$1,055"),
            ]
            for i, (label, a, b) in enumerate(rows):
                y = height - 132 - i * 15
                c.drawString(72, y, label)
                c.drawRightString(420, y, a)
                c.drawRightString(500, y, b)
            c.drawString(72, height - 200, "Revenue grew because the industrial segment won new contracts.")
        else:
            for i in range(20):
                c.drawString(72, height - 90 - i * 13, f"Page {number} line {i} " + " ".join(LOREM[i % 9 :][:8]))
        c.showPage()
    c.save()
    return buf.getvalue()


@pytest.fixture(scope="module")
def report() -> ParsedDocument:
    return parse_bytes(_report(), "report.pdf")


def test_a_table_becomes_a_markdown_grid_with_its_header_and_caption(report: ParsedDocument) -> None:
    [table] = [s for s in report.sections if s.kind == "table"]
    assert table.page == 3
    assert table.caption == "The following table shows net revenue by segment (in millions):"
    assert table.text.split("\n")[1:] == [
        "|  | 2023 | 2022 |",
        "| --- | --- | --- |",
        "| Industrial segment | $1,234 | $1,100 |",
        "| Consumer segment | 567 | (45) |",
        "| Total net revenue | $1,801 | $1,055 |",
    ]
    x0, top, x1, bottom = table.box or (0, 0, 0, 0)
    assert 0.05 < x0 < 0.15 and 0.1 < top < bottom < 0.3 and 0.6 < x1 < 0.85  # where it is on the page
    after = [s for s in report.sections if s.page == 3 and s.kind == "text"]
    assert after and after[0].text.startswith("Revenue grew")


def test_running_header_footer_and_page_numbers_are_removed_and_kept_as_metadata(report: ParsedDocument) -> None:
    assert "Acme Industries Annual Report" not in report.text
    assert not any(line.strip().startswith("- ") and line.strip().endswith(" -") for line in report.text.split("\n"))
    assert report.metadata["page_furniture"] == "Acme Industries Annual Report 2023"
    assert [s.page for s in report.sections if s.text.startswith("Page 1 line 0")] == [1]


def test_two_columns_read_column_by_column(report: ParsedDocument) -> None:
    page2 = "\n".join(s.text for s in report.sections if s.page == 2).split("\n")
    order = [line.split()[0] for line in page2]
    assert order == [f"LEFT{i}" for i in range(30)] + [f"RIGHT{i}" for i in range(30)]


SCAN_LINES = ["Quarterly revenue grew twelve percent", "The warehouse in Rotterdam opened in May"]


def test_an_image_is_read_by_ocr() -> None:
    doc = parse_bytes(text_image(SCAN_LINES), "scan.png")
    assert doc.format == "image" and [s.page for s in doc.sections] == [1]
    assert "Quarterly revenue grew twelve percent" in doc.text and "Rotterdam" in doc.text
    assert doc.metadata["ocr_pages"] == 1 and doc.metadata["ocr_confidence"] > 0.8


def test_an_image_only_pdf_is_read_by_ocr_with_its_pages() -> None:
    from PIL import Image

    pages = [Image.open(io.BytesIO(text_image([line]))) for line in SCAN_LINES]
    out = io.BytesIO()
    pages[0].save(out, format="PDF", save_all=True, append_images=pages[1:], resolution=150)
    doc = parse_bytes(out.getvalue(), "scan.pdf")
    assert [(s.page, s.text) for s in doc.sections] == [(1, SCAN_LINES[0]), (2, SCAN_LINES[1])]
    assert doc.metadata["ocr_pages"] == 2


def test_with_ocr_off_a_scan_is_refused_with_what_to_do() -> None:
    with pytest.raises(NoTextLayer, match="OCR is off: set KB_OCR=auto"):
        parse_bytes(text_image(SCAN_LINES), "scan.png", ocr=OcrOptions(mode="off"))


def test_a_page_read_below_the_confidence_threshold_is_reported_not_kept() -> None:
    from PIL import Image, ImageFilter

    image = Image.open(io.BytesIO(text_image(SCAN_LINES, size=18))).filter(ImageFilter.GaussianBlur(1.5))
    out = io.BytesIO()
    image.save(out, format="PNG")  # read as "Quarterty revenue …" with a confidence just under 1
    with pytest.raises(NoTextLayer, match=r"mean confidence of 0\.\d+ at best, below the threshold 1\.0"):
        parse_bytes(out.getvalue(), "blurred.png", ocr=OcrOptions(min_confidence=1.0))


# -- real filings and documents -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apple() -> ParsedDocument:
    return parse_file(FILINGS / "APPLE_2022_10K.pdf")


def _table_on(doc: ParsedDocument, page: int, row: str) -> str:
    tables = [s.text for s in doc.sections if s.kind == "table" and s.page == page and f"| {row} |" in s.text]
    assert tables, f"no table on page {page} has a row {row!r}"
    return tables[0]


@needs_shared
def test_filing_tables_keep_row_labels_column_headers_and_numbers(apple: ParsedDocument) -> None:
    table = _table_on(apple, 24, "iPad (1)")
    assert "|  | 2022 | Change | 2021 | Change | 2020 |" in table
    assert "| iPad (1) | 29,292 | (8)% | 31,862 | 34% | 23,724 |" in table
    assert "| Total net sales | $394,328 | 8% | $365,817 | 33% | $274,515 |" in table
    sheet = _table_on(apple, 34, "Inventories")
    assert "|  | September 24, 2022 | September 25, 2021 |" in sheet and "| Inventories | 4,946 | 6,580 |" in sheet


@needs_shared
def test_a_statement_laid_out_in_column_blocks_stays_one_grid() -> None:
    doc = parse_file(FILINGS / "MCDONALDS_2023Q1_EARNINGS.pdf")
    table = _table_on(doc, 4, "Provision for income taxes")
    assert "| Provision for income taxes | 464.7 | 436.8 | 27.9 | 6 |" in table
    assert "| NET INCOME | $1,802.3 | $1,104.4 | $697.9 | 63% |" in table


@needs_shared
def test_filing_page_footers_are_not_in_the_text(apple: ParsedDocument) -> None:
    assert "2022 Form 10-K |" not in apple.text
    assert "Apple Inc. | 2022 Form 10-K" in apple.metadata["page_furniture"]
    assert apple.metadata["pages"] == 80


@needs_shared
def test_a_two_column_paper_reads_in_order() -> None:
    doc = parse_file(SHARED_DATA / "documents" / "unstructured/pdf/multi-column-2p.pdf")
    assert "Open-domain question answering relies on efficient passage retrieval to select candidate" in doc.text


@needs_shared
def test_a_scanned_table_is_read_into_a_grid() -> None:
    doc = parse_file(SHARED_DATA / "documents" / "unstructured/pdf/single_table.pdf")
    [table] = [s for s in doc.sections if s.kind == "table"]
    assert "| Chipper | 20,843 | 260.57 (145.80) | 96.20 (57.53) |" in table.text
    assert doc.metadata["ocr_pages"] == 1


@needs_shared
def test_a_rendered_filing_page_reads_back_as_the_same_table() -> None:
    """A filing page rendered to PNG (a scan without a text layer) gives the rows its text layer gives."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(FILINGS / "FEDEX_2023_10K.pdf")
    image = pdf[64].render(scale=2.0).to_pil()
    pdf.close()
    out = io.BytesIO()
    image.save(out, format="PNG")
    table = _table_on(parse_bytes(out.getvalue(), "fedex-p65.png"), 1, "Capital expenditures")
    assert "| Capital expenditures | (6,174) | (6,763) |" in table
    assert "| Net income | $3,972 | $3,826 |" in table


def test_a_table_continued_on_the_next_page_gets_its_header_there() -> None:
    from reportlab.lib.pagesizes import LETTER
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=LETTER)
    width, height = LETTER
    rows = [(f"Region {i}", f"{100 + i:,}", f"{90 + i:,}") for i in range(30)]
    for page, part in enumerate((rows[:20], rows[20:])):
        c.setFont("Helvetica", 10)
        top = height - 90
        if page == 0:
            c.drawString(72, top, "Sales by region (in thousands):")
            c.drawRightString(420, top - 25, "2023")
            c.drawRightString(500, top - 25, "2022")
            top -= 40
        for i, (label, a, b) in enumerate(part):
            c.drawString(72, top - i * 15, label)
            c.drawRightString(420, top - i * 15, a)
            c.drawRightString(500, top - i * 15, b)
        c.showPage()
    c.save()
    doc = parse_bytes(buf.getvalue(), "sales.pdf")
    first, second = [s for s in doc.sections if s.kind == "table"]
    assert (first.page, second.page) == (1, 2)
    assert second.caption == "Sales by region (in thousands): (continued)"
    assert second.text.split("\n")[1:4] == ["|  | 2023 | 2022 |", "| --- | --- | --- |", "| Region 20 | 120 | 110 |"]
    assert len(second.text.split("\n")) == 3 + 10
