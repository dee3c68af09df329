"""The parser seam and helpers every parser shares."""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePath
from typing import Protocol

from kb_service.core.errors import ArchiveBomb, CorruptDocument
from kb_service.core.records import ParsedDocument, Section, union_box
from kb_service.ingest.parsers.layout import Block, markdown_table

Box = tuple[float, float, float, float]

# A zip entry set that expands past this, at a ratio past MAX_ZIP_RATIO, is refused as a likely zip bomb.
MAX_ZIP_BYTES = 500 * 1024 * 1024
MAX_ZIP_RATIO = 100


class Parser(Protocol):
    def __call__(self, data: bytes, source: str) -> ParsedDocument:
        """Parse raw file bytes; ``source`` is the file name used for titles and error messages."""


def stem(source: str) -> str:
    return PurePath(source).stem or source


def open_zip(data: bytes, source: str, kind: str) -> zipfile.ZipFile:
    """Open an OOXML/ODF/EPUB container, refusing corrupt archives and zip bombs with a clear reason."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise CorruptDocument(source, f"not a valid {kind} file (corrupt or truncated archive: {exc})") from exc
    check_expansion(archive.infolist(), len(data), source)
    return archive


def check_expansion(infos: list[zipfile.ZipInfo], size: int, source: str) -> None:
    """Refuse a likely zip bomb from the sizes its central directory declares (nothing is decompressed)."""
    expanded = sum(i.file_size for i in infos)
    if expanded > MAX_ZIP_BYTES and expanded > MAX_ZIP_RATIO * max(size, 1):
        raise ArchiveBomb(
            source,
            f"the archive would expand to {expanded:,} bytes from {size:,} (ratio > {MAX_ZIP_RATIO}, a zip bomb?); "
            "refused",
        )


class HeadingTracker:
    """Keeps the heading path (H1 > H2 > …) while a parser walks a document in order."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []

    def enter(self, level: int, text: str) -> None:
        self.path = [(lvl, t) for lvl, t in self.path if lvl < level]
        self.path.append((level, text))

    @property
    def heading(self) -> str | None:
        return " > ".join(t for _, t in self.path) or None


CAPTION_CHARS = 300  # text just above a table, up to this long, travels with it as its caption


class SectionBuilder:
    """Accumulates blocks of text into sections that break at every heading or page change."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.headings = HeadingTracker()
        self._blocks: list[str] = []
        self._boxes: list[Box] = []
        self._page: int | None = None

    def heading(self, level: int, text: str, *, box: Box | None = None) -> None:
        self.flush()
        self.headings.enter(level, text)
        self.block(text, box=box)

    def block(self, text: str, *, box: Box | None = None) -> None:
        if text.strip():
            self._blocks.append(text)
            if box is not None:
                self._boxes.append(box)

    def grid(self, rows: list[list[str]], *, caption: str = "") -> None:
        """A table given as rows of cell texts, the first row its header; a one-row or one-column table is text."""
        rows = [[" ".join(c.split()) for c in row] for row in rows]
        filled = [i for i, row in enumerate(rows) if any(row)]
        rows = rows[filled[0] : filled[-1] + 1] if filled else []  # empty rows inside the table stay
        width = max((len(r) for r in rows), default=0)
        while width and not any(len(r) >= width and r[width - 1] for r in rows):
            width -= 1  # trailing columns empty in every row
        rows = [(r + [""] * width)[:width] for r in rows]
        if len(rows) < 2 or width < 2:
            for row in rows:
                self.block(" | ".join(c for c in row if c))
            return
        self.table(markdown_table(rows[0], rows[1:]), caption=caption)

    def table(self, markdown: str, *, caption: str = "", box: Box | None = None) -> None:
        """A table is a section of its own, so the chunker can keep it whole or split it by rows. Its caption is what
        stands just above it, when short (a heading, the line that introduces it), and names its heading, so a
        chunk of the table alone still says what it is about."""
        lead = [b for b in self._blocks if b.strip()]
        if lead and sum(map(len, lead)) + len(caption) <= CAPTION_CHARS:
            caption = " — ".join(dict.fromkeys([*lead, caption] if caption else lead))
            if box is not None and self._boxes:
                box = union_box([*self._boxes, box])
            self._blocks, self._boxes = [], []
        self.flush()
        nearest = self.headings.path[-1][1] if self.headings.path else ""
        if nearest and nearest.lower() not in caption.lower():
            caption = f"{nearest} — {caption}" if caption else nearest
        caption = " ".join(caption.split())
        text = f"{caption}\n{markdown}" if caption else markdown
        self.sections.append(
            Section(text=text, page=self._page, heading=self.headings.heading, kind="table", caption=caption, box=box)
        )

    def page(self, number: int | None) -> None:
        self.flush()
        self._page = number

    def layout(self, blocks: list[Block], width: float, height: float, *, flat: bool = False) -> None:
        """A page's layout blocks (``layout.blocks``), their boxes turned into fractions of the page. ``flat``: a
        section's heading is the nearest heading above it, not a path (levels guessed from fonts nest badly)."""
        for block in blocks:
            x0, top, x1, bottom = block.box
            w, h = width or 1.0, height or 1.0
            box = (_unit(x0 / w), _unit(top / h), _unit(x1 / w), _unit(bottom / h))
            if block.kind == "heading":
                self.heading(1 if flat else block.level, block.text, box=box)
            elif block.kind == "table":
                self.table(block.text, caption=block.caption, box=box)
            else:
                self.block(block.text, box=box)

    def flush(self) -> None:
        text = "\n".join(self._blocks).strip()
        if text:
            box = union_box(self._boxes) if self._boxes else None
            self.sections.append(Section(text=text, page=self._page, heading=self.headings.heading, box=box))
        self._blocks = []
        self._boxes = []


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)
