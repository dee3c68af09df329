"""Page layout from positioned text: words → lines → columns → paragraphs, headings and tables.

The input is what a PDF's text layer or an OCR engine gives: pieces of text with their boxes on the page. The output
is a page's blocks in reading order (two-column pages read column by column), financial-style tables rebuilt as
Markdown grids with their header rows, and each block's box on the page. Repeated page headers and footers are found
across pages by :func:`strip_running_lines`.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]  # x0, top, x1, bottom in page units, origin top-left


@dataclass
class Word:
    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    size: float  # font size (or line height, for OCR)
    confidence: float = 1.0
    bold: bool = False


@dataclass
class Line:
    words: list[Word]

    @property
    def x0(self) -> float:
        return min(w.x0 for w in self.words)

    @property
    def x1(self) -> float:
        return max(w.x1 for w in self.words)

    @property
    def top(self) -> float:
        return min(w.top for w in self.words)

    @property
    def bottom(self) -> float:
        return max(w.bottom for w in self.words)

    @property
    def size(self) -> float:
        return statistics.median(w.size for w in self.words)

    @property
    def text(self) -> str:
        return join_words(w.text for w in self.words)

    @property
    def box(self) -> Box:
        return (self.x0, self.top, self.x1, self.bottom)

    def cells(self) -> list[Cell]:
        """The line cut where the horizontal gap is wider than a table's column gap; a lone currency sign joins the
        number after it and a lone percent sign the number before it."""
        cells: list[Cell] = []
        for word in self.words:
            gap = word.x0 - cells[-1].x1 if cells else 0.0
            joins = gap < CELL_GAP * max(word.size, 1.0) and word.text not in CURRENCY
            if cells and (joins or cells[-1].text in CURRENCY or word.text in ("%", ")")):
                cells[-1].add(word)
            else:
                cells.append(Cell([word]))
        return cells


@dataclass
class Cell:
    words: list[Word]

    def add(self, word: Word) -> None:
        self.words.append(word)

    @property
    def text(self) -> str:
        out = ""
        for word in self.words:
            joined = out in CURRENCY or word.text in ("%", ")") or not out or _cjk(out[-1]) and _cjk(word.text[0])
            out = out + word.text if joined else f"{out} {word.text}"
        return out

    @property
    def x0(self) -> float:
        return self.words[0].x0

    @property
    def x1(self) -> float:
        return self.words[-1].x1

    @property
    def numeric(self) -> bool:
        return bool(NUMERIC.match(self.text))


@dataclass
class Block:
    """A paragraph, heading or table of one page, in reading order, with its box."""

    kind: str  # "text" | "heading" | "table"
    text: str
    box: Box
    level: int = 0  # heading level
    caption: str = ""  # a table's caption (the text just above it)
    lines: list[Line] = field(default_factory=list)


CELL_GAP = 1.0  # a gap wider than this many font sizes separates table cells
CURRENCY = {"$", "€", "£", "¥", "US$", "RMB"}
NUMERIC = re.compile(
    r"^(?:[(\-–—+]?\s*(?:US)?[$€£¥]?\s*\(?[-–]?\d[\d,.\s]*\)?\s*(?:%|x|bps|pts)?\)?|[—–-]{1,3}|n/?[am]\.?|nm|NM)$"
)
YEAR = re.compile(r"^(?:19|20)\d\d$")
PAGE_NUMBER = re.compile(r"^(?:page\s*)?[-–]?\s*(?:\d{1,4}|[ivxlc]{1,6})\s*[-–]?(?:\s*(?:of|/)\s*\d{1,4})?$", re.I)


Char = tuple[str, float, float, float, float, float, bool]  # text, x0, top, x1, bottom, font size, bold


def _cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\uffef"


def join_words(words: Iterable[str]) -> str:
    """Words with a space between them, except between CJK characters (OCR gives those one by one)."""
    out = ""
    for word in words:
        out = out + word if not out or _cjk(out[-1]) and _cjk(word[0]) else f"{out} {word}"
    return out


def words_from_chars(chars: Iterable[Char]) -> list[Word]:
    """Group positioned characters into words, in content order: a word ends at a space, a jump to another line or
    backwards, or a gap wider than a fraction of the font size."""
    words: list[Word] = []
    buf: list[str] = []
    box: list[float] = []
    size = 0.0
    bold = False

    def flush() -> None:
        if buf:
            text = "".join(buf)
            if text.strip():
                words.append(Word(text.strip(), box[0], box[1], box[2], box[3], size, bold=bold))
            buf.clear()

    for ch, x0, top, x1, bottom, font_size, heavy in chars:
        if ch.isspace() or x1 <= x0:
            flush()
            continue
        if buf:
            height = max(box[3] - box[1], bottom - top, 1.0)
            same_line = abs((top + bottom) / 2 - (box[1] + box[3]) / 2) < 0.6 * height
            gap = x0 - box[2]
            if not same_line or gap > 0.3 * max(font_size, size, 1.0) or x0 < box[2] - max(font_size, 1.0):
                flush()
        if not buf:
            box = [x0, top, x1, bottom]
            size = font_size or (bottom - top)
            bold = heavy
        else:
            box = [min(box[0], x0), min(box[1], top), max(box[2], x1), max(box[3], bottom)]
        buf.append(ch)
    flush()
    return words


def group_lines(words: Sequence[Word]) -> list[Line]:
    """Words whose vertical extents overlap by half the smaller height form one line, read left to right."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: ((w.top + w.bottom) / 2, w.x0)):
        mid = (word.top + word.bottom) / 2
        for line in reversed(lines[-3:]):
            # the line's extent is its typical word's, so one tall or stray piece cannot stretch it over the next
            top, bottom = statistics.median(w.top for w in line), statistics.median(w.bottom for w in line)
            height = min(bottom - top, word.bottom - word.top) or 1.0
            overlap = min(bottom, word.bottom) - max(top, word.top)
            if overlap >= 0.5 * height or top <= mid <= bottom and overlap > 0:
                line.append(word)
                break
        else:
            lines.append([word])
    out = [Line(sorted(line, key=lambda w: w.x0)) for line in lines]
    return sorted(out, key=lambda line: (line.top, line.x0))


def reading_order(lines: list[Line], width: float) -> list[Line]:
    """Lines in reading order: on a two-column page (a gutter that prose lines on both sides leave empty) each
    band between full-width lines is read left column first, then right."""
    gutter = _gutter(lines, width)
    if gutter is None:
        return lines
    out: list[Line] = []
    left: list[Line] = []
    right: list[Line] = []
    for line in lines:
        lw = [w for w in line.words if w.x1 <= gutter]
        rw = [w for w in line.words if w.x0 >= gutter]
        if len(lw) + len(rw) < len(line.words):  # crosses the gutter: a full-width line ends the band
            out += left + right + [line]
            left, right = [], []
            continue
        if lw:
            left.append(Line(lw))
        if rw:
            right.append(Line(rw))
    return out + left + right


def _gutter(lines: list[Line], width: float) -> float | None:
    prose = [line for line in lines if len(line.words) >= 4]
    if len(prose) < 8:
        return None
    best: tuple[int, int, float] | None = None  # fewest lines across it, then most prose on both sides
    for x in range(int(width * 0.3), int(width * 0.7), 2):
        crossing = sum(1 for line in prose if any(w.x0 < x < w.x1 for w in line.words))
        if crossing > 0.2 * len(prose):
            continue
        both = sum(
            1
            for line in prose
            if _wordy([w for w in line.words if w.x1 <= x]) and _wordy([w for w in line.words if w.x0 >= x])
        )
        if both >= 0.4 * len(prose) and (best is None or (-crossing, both) > best[:2]):
            best = (-crossing, both, float(x))
    return best[2] if best else None


def _wordy(words: list[Word]) -> bool:
    """Three or more words, mostly words of letters (a column of prose, not a table's numbers)."""
    return len(words) >= 3 and sum(any(c.isalpha() for c in w.text) for w in words) >= 0.7 * len(words)


def strip_running_lines(pages: list[list[Line]], heights: list[float]) -> tuple[list[list[Line]], list[str]]:
    """Remove page headers, footers and page numbers: lines at a page's top or bottom (in its margins, or its first
    or last two lines) whose text repeats on many pages (with its numbers, or without them on half the pages), and
    lone page numbers there. Returns the pages without them and the texts removed."""

    def key(line: Line) -> str:
        return re.sub(r"\d+", "#", line.text.lower()).strip()

    def edges(lines: list[Line], height: float) -> list[Line]:
        ends = lines[:2] + lines[-2:]
        return [line for line in lines if line.bottom < height * 0.1 or line.top > height * 0.9 or line in ends]

    exact: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    for lines, height in zip(pages, heights, strict=True):
        candidates = edges(lines, height)
        exact.update({line.text for line in candidates})
        shapes.update({key(line) for line in candidates if any(c.isdigit() for c in line.text)})
    n = len(pages)

    def repeated(count: int) -> bool:
        return count >= 3 or (n <= 5 and count >= 2 and count >= n / 2)

    removed: list[str] = []
    seen: set[str] = set()
    out = []
    for lines, height in zip(pages, heights, strict=True):
        at_edges = {id(line) for line in edges(lines, height)}
        kept = []
        for line in lines:
            if id(line) in at_edges:
                if PAGE_NUMBER.match(line.text.strip()):
                    continue
                margin = line.bottom < height * 0.1 or line.top > height * 0.9
                # in the margins, a line on 3 pages (and a tenth of them) is a header or footer; a page's first or
                # last lines inside its body only when they repeat on half the pages
                often = exact[line.text] >= max(3, n / 2) or (n <= 5 and repeated(exact[line.text]))
                running = repeated(exact[line.text]) and exact[line.text] >= n / 10  # not a statement title
                if (margin and running) or often or (n >= 4 and shapes[key(line)] >= max(3, n / 2)):
                    if key(line) not in seen:
                        seen.add(key(line))
                        removed.append(line.text)
                    continue
            kept.append(line)
        out.append(kept)
    return out, removed


def blocks(lines: list[Line], body_size: float) -> list[Block]:
    """A page's lines (in reading order) as paragraphs, headings and tables. Tables are found first, each with the
    header rows above its first row of numbers (column titles, years, dates) and the label rows between them
    ("ASSETS", "Current assets:"); the rest is paragraphs and headings."""
    tables: dict[int, tuple[list[Line], list[Line], int]] = {}  # start → (header lines, body lines, end)
    i, floor = 0, 0
    while i < len(lines):
        end = _table_run(lines, i)
        if not end:
            i += 1
            continue
        first = i
        while first < end - 1 and all(YEAR.match(c.text) for c in lines[first].cells()) and _is_row(lines[first + 1]):
            first += 1  # a row of years ("2023  2022") heads the table; its numbers start below
        start, header, labels = _table_top(lines, first, floor)
        tables[start] = (header, labels + lines[first:end], end)
        i = floor = end
    out: list[Block] = []
    para: list[Line] = []

    def end_paragraph() -> None:
        if para:
            out.append(Block("text", join_lines(para), _union(para), lines=list(para)))
            para.clear()

    i = 0
    while i < len(lines):
        if i in tables:
            header, body, end = tables[i]
            table = _table_block(header, body)
            if table is not None:
                end_paragraph()
                _attach_caption(out, table)
                out.append(table)
                i = end
                continue
        line = lines[i]
        level = _heading_level(line, body_size)
        gap = line.top - para[-1].bottom if para else 0.0
        if level:
            end_paragraph()
            out.append(Block("heading", line.text, line.box, level=level, lines=[line]))
        else:
            if para and gap > 0.9 * max(line.size, para[-1].size):
                end_paragraph()
            para.append(line)
        i += 1
    end_paragraph()
    return out


def _table_top(lines: list[Line], first: int, floor: int) -> tuple[int, list[Line], list[Line]]:
    """Where a table whose first row of numbers is ``first`` begins: up through label rows and header rows (at most
    six lines, none of them prose, no wide gap), to its topmost header row. Returns that index, the header rows and
    the label rows below them (which belong to the body)."""
    cells = lines[first].cells()
    label_edge, values_x0 = cells[0].x1, cells[1].x0
    j = first
    kinds: list[str] = []
    while j > floor and first - j < 6:
        line, below = lines[j - 1], lines[j]
        if below.top - line.bottom > 2.0 * max(line.size, below.size) or _prose(line.text):
            break
        row = line.cells()
        if line.text.rstrip().endswith(".") or any(len(c.text) > 60 for c in row):
            break
        over_values = any(c.x1 > values_x0 - 1 and c.x0 > label_edge - 1 for c in row) or YEAR.match(line.text)
        if over_values or (len(row) >= 2 and not line.text.rstrip().endswith(":")):
            kinds.append("header")
        elif len(row) == 1 and row[0].x1 < values_x0:  # a row label ("Current assets:") or a centred "ASSETS"
            kinds.append("label")
        else:
            break
        j -= 1
    kinds.reverse()  # top to bottom, lines[j:first]
    if "header" not in kinds:  # label rows only: they open the body
        return j, [], list(lines[j:first])
    top = kinds.index("header")
    region = list(zip(lines[j + top : first], kinds[top:], strict=True))
    return (
        j + top,
        [line for line, kind in region if kind == "header"],
        [line for line, kind in region if kind == "label"],
    )


SOFT_HYPHEN = "\u00ad"


def join_lines(lines: Sequence[Line]) -> str:
    """Lines of a paragraph, one per line; a word hyphenated at a line's end is joined again."""
    out = ""
    for line in lines:
        text = line.text
        if out.endswith(SOFT_HYPHEN):  # "ef-" + "ficient" is one word; "Lucene-" + "BM25" keeps its hyphen
            out = out[:-1] + ("" if text[:1].islower() else "-") + text
        elif out.endswith("-") and out[-2:-1].isalpha() and text[:1].islower():  # OCR has no hyphen marks
            out = out[:-1] + text
        else:
            out = f"{out}\n{text}" if out else text
    return out.replace(SOFT_HYPHEN, "")


def _is_row(line: Line) -> bool:
    cells = line.cells()
    return len(cells) >= 2 and any(c.numeric for c in cells[1:]) and not (len(cells) == 2 and _prose(cells[0].text))


def _prose(text: str) -> bool:
    return len(text) > 90 or text.count(" ") > 14


def _table_run(lines: list[Line], start: int) -> int:
    """The end of a table that starts at ``start`` (rows with numbers, and label-only rows between them), or 0."""
    if not _is_row(lines[start]):
        return 0
    end, rows, i = start + 1, 1, start + 1
    while i < len(lines):
        line, prev = lines[i], lines[i - 1]
        if line.top - prev.bottom > 2.5 * max(line.size, prev.size):
            break
        if _is_row(line):
            rows += 1
            end = i + 1
        elif len(line.cells()) <= 2 and (_prose(line.text) or line.text.rstrip().endswith(".")):
            break  # a sentence ends the table; a label-only row or a sub-header does not
        i += 1
        if i - end > 2:
            break
    return end if rows >= 2 else 0


def _table_block(header: list[Line], body: list[Line]) -> Block | None:
    rows = [line.cells() for line in body]
    label_x1 = max((r[0].x1 for r in rows if not r[0].numeric), default=min(r[0].x0 for r in rows))
    columns: list[list[float]] = []  # [x0, x1] of each value column, left to right
    for cells in rows:
        for cell in cells:
            if cell.x0 < label_x1 - 1 and not cell.numeric:
                continue
            for col in columns:
                if cell.x0 <= col[1] and cell.x1 >= col[0]:
                    col[0], col[1] = min(col[0], cell.x0), max(col[1], cell.x1)
                    break
            else:
                columns.append([cell.x0, cell.x1])
    columns = _merge_overlapping(sorted(columns))
    if not columns:
        return None
    headers = [""] * (len(columns) + 1)
    for line in header:
        for cell in line.cells():
            targets = [k for k, col in enumerate(columns) if cell.x0 <= col[1] + 2 and cell.x1 >= col[0] - 2]
            # a cell set tight across several columns: its words go to the columns they sit over
            parts = [Cell([w]) for w in cell.words] if len(targets) > 1 and len(cell.words) > 1 else [cell]
            for part in parts:
                spans = [k for k, col in enumerate(columns) if part.x0 <= col[1] + 2 and part.x1 >= col[0] - 2]
                if len(parts) > 1 or not spans:
                    spans = [_nearest(columns, part)] if part.x1 > label_x1 + 1 else [-1]
                for k in spans:
                    headers[k + 1] = join_words([headers[k + 1], part.text]).strip()
    grid = []
    for cells in rows:
        row = [""] * (len(columns) + 1)
        for cell in cells:
            if cell.x1 <= label_x1 + 1 and not (cell.numeric and cell.x0 > columns[0][0] - 1):
                row[0] = f"{row[0]} {cell.text}".strip()
            else:
                k = _nearest(columns, cell) + 1
                row[k] = f"{row[k]} {cell.text}".strip()
        grid.append(row)
    lead: list[str] = []  # label-only rows above a header row found in the body: the table's title
    while grid:
        first = next((n for n, r in enumerate(grid) if any(r[1:])), None)
        if first is None or not all(not c or YEAR.match(c) or not NUMERIC.match(c) for c in grid[first][1:]):
            break
        lead += [r[0] for r in grid[:first] if r[0]]
        headers = [f"{h} {c}".strip() for h, c in zip(headers, grid[first], strict=True)]
        grid = grid[first + 1 :]
    if not grid:
        return None
    keep = [k for k in range(len(headers)) if k == 0 or headers[k] or any(r[k] for r in grid)]
    headers = [headers[k] for k in keep]
    grid = [[r[k] for k in keep] for r in grid]
    table = Block("table", markdown_table(headers, grid), _union(header + body), lines=header + body)
    table.caption = " — ".join(lead)
    return table


def _merge_overlapping(columns: list[list[float]]) -> list[list[float]]:
    merged: list[list[float]] = []
    for col in columns:
        if merged and col[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], col[1])
        else:
            merged.append(list(col))
    return merged


def _nearest(columns: list[list[float]], cell: Cell) -> int:
    for k, col in enumerate(columns):
        if cell.x0 <= col[1] and cell.x1 >= col[0]:
            return k
    centre = (cell.x0 + cell.x1) / 2
    return min(range(len(columns)), key=lambda k: abs((columns[k][0] + columns[k][1]) / 2 - centre))


def _attach_caption(out: list[Block], table: Block) -> None:
    """The paragraph just above a table, when short, is its caption and travels with it."""
    above = ""
    if out and out[-1].kind == "text" and len(out[-1].text) <= 400 and table.box[1] - out[-1].box[3] < 30:
        above = out.pop().text.replace("\n", " ")
    elif out and out[-1].kind == "heading":
        above = out[-1].text
    table.caption = " — ".join(c for c in (above, table.caption) if c)


def _heading_level(line: Line, body_size: float) -> int:
    text = line.text.strip()
    if len(text) > 100 or len(text.split()) > 14 or text.endswith((".", ",", ";")) or len(line.cells()) > 2:
        return 0
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 2:
        return 0
    if line.size >= 1.5 * body_size:
        return 1
    if line.size >= 1.15 * body_size:
        return 2
    if all(c.isupper() for c in letters) and len(letters) >= 4:
        return 3
    if all(w.bold for w in line.words) and not text.endswith(":") and not NUMERIC.match(line.words[-1].text):
        return 3
    return 0


def _union(lines: Sequence[Line]) -> Box:
    return (
        min(line.x0 for line in lines),
        min(line.top for line in lines),
        max(line.x1 for line in lines),
        max(line.bottom for line in lines),
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (GFM) table; pipes and line breaks inside cells are escaped."""

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ").strip() for c in cells) + " |"

    width = max([len(header)] + [len(r) for r in rows])

    def pad(cells: Sequence[str]) -> list[str]:
        return list(cells) + [""] * (width - len(cells))

    return "\n".join([fmt(pad(header)), fmt(["---"] * width)] + [fmt(pad(r)) for r in rows])


def body_size(pages: Iterable[list[Line]]) -> float:
    """The most common font size of the document's text, weighted by characters."""
    sizes: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            for w in line.words:
                sizes[round(w.size, 1)] += len(w.text)
    return sizes.most_common(1)[0][0] if sizes else 10.0
