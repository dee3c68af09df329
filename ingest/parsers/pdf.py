"""PDF through PDFium (pypdfium2, Apache-2.0/BSD): positioned characters, then the page layout of ``layout``.

Each page becomes its paragraphs, headings and tables in reading order, with the page number and each block's box
(as fractions of the page) kept for citations. Repeated page headers, footers and page numbers are removed from the
text and kept in the document's metadata. A page without a usable text layer goes through OCR (``ocr``) when OCR
is on or ``auto``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from kb_service.core.errors import CorruptDocument, EncryptedDocument, NoTextLayer
from kb_service.core.records import ParsedDocument, Section
from kb_service.ingest.parsers import layout
from kb_service.ingest.parsers.base import SectionBuilder, stem
from kb_service.ingest.parsers.ocr import DEFAULT_OCR, OcrOptions, OcrPage, recognise, too_unsure

log = logging.getLogger(__name__)

# A page with fewer characters than this in its text layer, but an image on it, is treated as scanned.
MIN_TEXT_CHARS = 20
RENDER_SCALE = 2.0  # 144 dpi for OCR
# PDFium is not thread-safe: every call into it (parsing here, rendering pages for the API) holds this lock. OCR,
# the slow part of a scan, runs outside it.
PDFIUM = threading.RLock()


@dataclass
class PageText:
    number: int
    width: float
    height: float
    lines: list[layout.Line]
    ocr: OcrPage | None = None


def parse_pdf(data: bytes, source: str, *, ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    if not data.lstrip()[:1024].startswith(b"%PDF") and b"%PDF-" not in data[:1024]:
        raise CorruptDocument(source, "not a PDF file (no %PDF header)")
    with PDFIUM:
        pdf = open_pdf(data, source)
    try:
        pages = list(_pages(pdf, ocr))
        with PDFIUM:
            meta_title = str(pdf.get_metadata_dict().get("Title") or "")
    finally:
        with PDFIUM:
            pdf.close()
    n = len(pages)
    lines, running = layout.strip_running_lines([p.lines for p in pages], [p.height for p in pages])
    body = layout.body_size(lines)
    out = SectionBuilder()
    for page, page_lines in zip(pages, lines, strict=True):
        out.page(page.number)
        out.layout(layout.blocks(page_lines, body), page.width, page.height, flat=True)
    out.flush()
    if not out.sections:
        raise NoTextLayer(source, _no_text(n, pages, ocr))
    _carry_table_headers(out.sections)
    first_heading = next((s.heading for s in out.sections if s.heading), None)
    title = meta_title.strip() if _usable_title(meta_title) else first_heading or _first_line(out.sections[0].text)
    metadata: dict[str, object] = {"pages": n}
    if running:
        metadata["page_furniture"] = " | ".join(running)[:1000]
    scanned = [p for p in pages if p.ocr is not None]
    if scanned:
        metadata["ocr_pages"] = len(scanned)
        metadata["ocr_confidence"] = round(min(p.ocr.confidence for p in scanned if p.ocr), 3)
        low = [p.number for p in scanned if p.ocr and p.ocr.low_confidence]
        if low:
            metadata["ocr_low_confidence_pages"] = ",".join(map(str, low))[:1000]
    return ParsedDocument(
        source=source, title=(title or stem(source))[:200], format="pdf", sections=out.sections, metadata=metadata
    )


def _carry_table_headers(sections: list[Section]) -> None:
    """A table that ends a page and goes on at the top of the next: the continuation, when it has no header of its
    own (or the same one), gets the first part's caption and header, so each part reads whole on its own page."""
    first_on_page: dict[int | None, int] = {}
    for i, section in enumerate(sections):
        first_on_page.setdefault(section.page, i)
    for i, (prev, cur) in enumerate(zip(sections, sections[1:], strict=False), start=1):
        if prev.kind != "table" or cur.kind != "table" or prev.page is None or cur.page != prev.page + 1:
            continue
        if first_on_page[cur.page] != i:
            continue  # not the first thing on its page
        p_head, cur_head = _header(prev), _header(cur)
        if p_head.count("|") != cur_head.count("|") or cur_head not in (p_head, _blank(p_head)):
            continue
        rows = cur.text.split("\n")[(1 if cur.caption else 0) + 2 :]
        caption = f"{prev.caption} (continued)" if prev.caption else "(continued)"
        cur.caption = caption
        cur.text = "\n".join([caption, p_head, prev.text.split("\n")[(1 if prev.caption else 0) + 1], *rows])


def _header(section: Section) -> str:
    return section.text.split("\n")[1 if section.caption else 0]


def _blank(header: str) -> str:
    return "|" + "|".join("  " for _ in range(header.count("|") - 1)) + "|"


def open_pdf(data: bytes, source: str) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
            raise EncryptedDocument(
                source, "the PDF is password-protected; remove the password and upload it again"
            ) from exc
        raise CorruptDocument(source, f"the PDF cannot be read ({exc})") from exc


def _pages(pdf: pdfium.PdfDocument, options: OcrOptions) -> Iterator[PageText]:
    mode = options.mode
    with PDFIUM:
        n = len(pdf)
    for index in range(n):
        scan = None
        with PDFIUM:
            page = pdf[index]
            try:
                width, height = page.get_size()
                words = layout.words_from_chars(_chars(page, height))
                if mode == "on" or (mode == "auto" and _needs_ocr(page, words)):
                    bitmap = page.render(scale=RENDER_SCALE)
                    scan = bitmap.to_pil().copy()  # its own pixels: the bitmap is freed here, under the lock
                    bitmap.close()
            finally:
                page.close()
        ocr = None
        if scan is not None:
            ocr = recognise(scan, scale=RENDER_SCALE, options=options)
            if ocr.words and not ocr.low_confidence:  # else the text layer stays, whatever it holds
                words = ocr.words
        lines = layout.reading_order(layout.group_lines(words), width)
        yield PageText(index + 1, width, height, lines, ocr)


def _chars(page: pdfium.PdfPage, height: float) -> Iterator[layout.Char]:
    """Every character of the page's text layer: text, box (top-left origin), size and whether it is bold. The box is
    PDFium's loose one (the font's advance and line height), so its height is the font size as drawn."""
    textpage = page.get_textpage()
    try:
        handle = textpage.raw
        rect = pdfium_c.FS_RECTF()
        high: tuple[int, float, float, float, float, float, bool] | None = None
        for i in range(textpage.count_chars()):
            code = pdfium_c.FPDFText_GetUnicode(handle, i)
            if code in (2, 0xAD) or pdfium_c.FPDFText_IsHyphen(handle, i) == 1:
                code = 0xAD  # a hyphen that breaks a word at the line's end: the paragraph joins the word again
            if code in (0, 0xFFFE, 0xFFFF) or pdfium_c.FPDFText_IsGenerated(handle, i) == 1:
                yield (" ", 0, 0, 0, 0, 0, False)
                continue
            angle = pdfium_c.FPDFText_GetCharAngle(handle, i)
            if 0.1 < angle < 6.18:  # rotated text (an arXiv stamp in the margin, an axis label) is not body text
                continue
            if 0xDC00 <= code <= 0xDFFF:  # the second half of a character beyond the BMP: joined to the first
                if high is not None:
                    yield (chr(0x10000 + ((high[0] - 0xD800) << 10) + (code - 0xDC00)), *high[1:])
                high = None
                continue
            high = None
            pdfium_c.FPDFText_GetLooseCharBox(handle, i, rect)
            top, bottom = height - rect.top, height - rect.bottom
            bold = pdfium_c.FPDFText_GetFontWeight(handle, i) >= 600
            if 0xD800 <= code <= 0xDBFF:  # PDFium gives UTF-16 units: wait for the second half
                high = (code, rect.left, top, rect.right, bottom, bottom - top, bold)
                continue
            yield (chr(code), rect.left, top, rect.right, bottom, bottom - top, bold)
    finally:
        textpage.close()


def _needs_ocr(page: pdfium.PdfPage, words: list[layout.Word]) -> bool:
    """A page whose text layer is (nearly) empty but which shows an image: a scan."""
    if sum(len(w.text) for w in words) >= MIN_TEXT_CHARS:
        return False
    return any(obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE for obj in page.get_objects(max_depth=2))


def _no_text(n: int, pages: list[PageText], options: OcrOptions) -> str:
    if options.mode == "off":
        return f"none of the {n} pages has a text layer (a scanned PDF?); OCR is off: set KB_OCR=auto to read it"
    scores = [p.ocr.confidence for p in pages if p.ocr is not None and p.ocr.words]
    if scores:
        return too_unsure(f"the {n} pages", max(scores), options)
    return f"none of the {n} pages has text, and OCR found none on them either"


def _usable_title(title: str) -> bool:
    t = title.strip()
    letters = sum(c.isalpha() for c in t)
    return (
        letters >= 3
        and letters >= len(t) / 3
        and not t.lower().startswith(("microsoft word", "untitled"))
        and not t.endswith((".doc", ".docx"))
    )


def _first_line(text: str) -> str:
    return next((line.strip()[:200] for line in text.splitlines() if line.strip()), "")
