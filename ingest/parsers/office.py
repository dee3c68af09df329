"""Office formats: DOCX (python-docx), PPTX (python-pptx), XLSX (openpyxl), ODT (its content.xml)."""

from __future__ import annotations

import datetime
import io
import zipfile
from typing import Any

from lxml import etree

from kb_service.core.errors import CorruptDocument, UnsupportedFormat
from kb_service.core.records import ParsedDocument
from kb_service.ingest.parsers.base import SectionBuilder, open_zip, stem

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
W = f"{{{W_NS}}}"


def _check_member(archive: zipfile.ZipFile, member: str, source: str, kind: str) -> None:
    if member not in archive.namelist():
        raise CorruptDocument(source, f"not a valid {kind} file (no {member} inside the archive)")


def parse_docx(data: bytes, source: str) -> ParsedDocument:
    import docx

    _check_member(open_zip(data, source, "DOCX"), "word/document.xml", source, "DOCX")
    try:
        document = docx.Document(io.BytesIO(data))
    except (KeyError, ValueError, etree.XMLSyntaxError, zipfile.BadZipFile) as exc:
        raise CorruptDocument(source, f"the DOCX cannot be read ({type(exc).__name__}: {exc})") from exc
    styles = {s.style_id: (s.name or "") for s in document.styles}
    out = SectionBuilder()
    first_heading = ""
    for element in document.element.body.iterchildren():
        if element.tag == f"{W}p":
            text = "".join(t.text or "" for t in element.iter(f"{W}t")).strip()
            level = _heading_level(element, styles)
            if level and text:
                out.heading(level, text)
                first_heading = first_heading or text
            else:
                out.block(text)
        elif element.tag == f"{W}tbl":
            out.grid(_docx_table(element))
    out.flush()
    title = (document.core_properties.title or "").strip() or first_heading or stem(source)
    return ParsedDocument(source=source, title=title, format="docx", sections=out.sections)


def _heading_level(paragraph: Any, styles: dict[str, str]) -> int:
    style = paragraph.find(f"{W}pPr/{W}pStyle")
    name = styles.get(style.get(f"{W}val"), "") if style is not None else ""
    if name == "Title":
        return 1
    if name.lower().startswith("heading"):
        digits = "".join(ch for ch in name if ch.isdigit())
        return int(digits) if digits else 1
    outline = paragraph.find(f"{W}pPr/{W}outlineLvl")
    return int(outline.get(f"{W}val")) + 1 if outline is not None else 0


def _docx_table(table: Any) -> list[list[str]]:
    """The table's grid: a cell spanning columns (gridSpan) or continuing a vertical merge (vMerge) repeats its text
    in each grid cell it covers, so every row has the header's columns."""
    rows: list[list[str]] = []
    for tr in table.iterchildren(f"{W}tr"):  # not a nested table's rows: their text stays in their cell
        before = tr.find(f"{W}trPr/{W}gridBefore")
        row: list[str] = [""] * (int(before.get(f"{W}val", "0")) if before is not None else 0)
        for tc in tr.iterchildren(f"{W}tc"):
            text = " ".join("".join(t.text or "" for t in p.iter(f"{W}t")) for p in tc.iter(f"{W}p")).strip()
            props = tc.find(f"{W}tcPr")
            span = props.find(f"{W}gridSpan") if props is not None else None
            merge = props.find(f"{W}vMerge") if props is not None else None
            if merge is not None and merge.get(f"{W}val") != "restart" and rows:
                above = rows[-1]
                text = above[len(row)] if len(row) < len(above) else text
            row += [text] * (int(span.get(f"{W}val", "1")) if span is not None else 1)
        rows.append(row)
    return rows


def parse_pptx(data: bytes, source: str) -> ParsedDocument:
    from pptx import Presentation

    _check_member(open_zip(data, source, "PPTX"), "ppt/presentation.xml", source, "PPTX")
    try:
        deck = Presentation(io.BytesIO(data))
    except (KeyError, ValueError, etree.XMLSyntaxError) as exc:
        raise CorruptDocument(source, f"the PPTX cannot be read ({type(exc).__name__}: {exc})") from exc
    out = SectionBuilder()
    for number, slide in enumerate(deck.slides, start=1):
        out.page(number)
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text.strip() if title_shape is not None and title_shape.has_text_frame else ""
        if title:
            out.heading(1, title)
        for shape in slide.shapes:
            if shape is title_shape:
                continue
            if getattr(shape, "has_table", False) and shape.has_table:
                out.grid(_pptx_grid(shape.table))
                continue
            for text in _shape_texts(shape):
                out.block(text)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            out.block(slide.notes_slide.notes_text_frame.text)
    out.flush()
    title = (deck.core_properties.title or "").strip() or next(
        (s.heading for s in out.sections if s.heading), stem(source)
    )
    return ParsedDocument(
        source=source, title=title, format="pptx", sections=out.sections, metadata={"slides": len(deck.slides)}
    )


def _pptx_grid(table: Any) -> list[list[str]]:
    """A slide table's grid, a merged cell's text in each cell it covers."""
    grid = [[cell.text.strip() for cell in row.cells] for row in table.rows]
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            if cell.is_merge_origin:
                for dr in range(cell.span_height):
                    for dc in range(cell.span_width):
                        if r + dr < len(grid) and c + dc < len(grid[r + dr]):
                            grid[r + dr][c + dc] = grid[r][c]
    return grid


def _shape_texts(shape: Any) -> list[str]:
    if getattr(shape, "shapes", None) is not None:  # a group shape
        return [t for child in shape.shapes for t in _shape_texts(child)]
    if getattr(shape, "has_table", False) and shape.has_table:
        return ["\n".join(" | ".join(c.text.strip() for c in row.cells) for row in shape.table.rows)]
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        return [shape.text_frame.text]
    return []


def cell_text(value: object) -> str:
    """A spreadsheet cell as a person reads it: whole numbers without ``.0`` (XLSX stores every number as a float),
    dates without a midnight time."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep=" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value).strip()


def parse_xlsx(data: bytes, source: str) -> ParsedDocument:
    import openpyxl

    _check_member(open_zip(data, source, "XLSX"), "xl/workbook.xml", source, "XLSX")
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (KeyError, ValueError, etree.XMLSyntaxError, zipfile.BadZipFile) as exc:
        raise CorruptDocument(source, f"the XLSX cannot be read ({type(exc).__name__}: {exc})") from exc
    out = SectionBuilder()
    for sheet in book.worksheets:
        out.heading(1, f"Sheet: {sheet.title}")
        rows = [["" if v is None else cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
        rows = [row for row in rows if any(row)]
        first = min((next(i for i, c in enumerate(row) if c) for row in rows), default=0)
        out.grid([row[first:] for row in rows])  # the sheet's first row is its header
    out.flush()
    book.close()
    return ParsedDocument(source=source, title=stem(source), format="xlsx", sections=out.sections)


ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"


def parse_odt(data: bytes, source: str) -> ParsedDocument:
    archive = open_zip(data, source, "ODT")
    _check_member(archive, "content.xml", source, "ODT")
    try:
        root = etree.fromstring(archive.read("content.xml"))
    except etree.XMLSyntaxError as exc:
        raise CorruptDocument(source, f"the ODT cannot be read ({exc})") from exc
    out = SectionBuilder()
    first_heading = ""
    for el in root.iter(f"{{{ODF_TEXT}}}h", f"{{{ODF_TEXT}}}p"):
        text = "".join(el.itertext()).strip()
        if el.tag.endswith("}h") and text:
            out.heading(int(el.get(f"{{{ODF_TEXT}}}outline-level", "1")), text)
            first_heading = first_heading or text
        else:
            out.block(text)
    out.flush()
    return ParsedDocument(source=source, title=first_heading or stem(source), format="odt", sections=out.sections)


def refuse_legacy_office(data: bytes, source: str) -> ParsedDocument:
    raise UnsupportedFormat(
        source,
        "legacy Office 97-2003 binary files (.doc/.xls/.ppt) are not supported; save as .docx/.xlsx/.pptx",
    )
