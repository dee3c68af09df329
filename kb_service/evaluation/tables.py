"""Table-cell questions over PDFs: which pages hold the answer, and whether a retrieved chunk shows the row label,
the column header and the number together (bench/filings_tables.py, bench/scan_ocr.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium


def load_questions(path: Path) -> list[dict[str, Any]]:
    """JSON lines of ``{id, file, question, answer, page, row, column}``."""
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def squash(text: str) -> str:
    """Lower case, one space for any run of spaces, none before ``%`` or ``)`` (a text layer's "(4 )")."""
    text = re.sub(r"\s+", " ", text.replace("’", "'")).strip().lower()
    return re.sub(r" ([%)])", r"\1", text)


def gold_pages(path: Path, questions: list[dict[str, Any]]) -> dict[str, set[int]]:
    """For each question, the pages whose text layer has its row label and its answer."""
    pdf = pdfium.PdfDocument(path)
    texts = [squash(pdf[i].get_textpage().get_text_bounded()) for i in range(len(pdf))]
    pdf.close()
    out = {}
    for q in questions:
        pages = {n for n, text in enumerate(texts, 1) if squash(q["row"]) in text and squash(q["answer"]) in text}
        if q["page"] not in pages:
            shows = f"{q['row']!r} and {q['answer']!r}"
            raise ValueError(f"{q['id']}: page {q['page']} of {q['file']} does not show {shows}")
        out[q["id"]] = pages
    return out


def column_key(column: str) -> str:
    years = re.findall(r"(?:19|20)\d\d", column)
    return years[-1] if years else column


def together(text: str, q: dict[str, Any]) -> bool:
    """The chunk shows the row label, the column header and the number (on one table row, as printed)."""
    t = squash(text)
    return all(squash(part) in t for part in (q["row"], column_key(q["column"]), q["answer"]))


def aligned(text: str, q: dict[str, Any]) -> bool:
    """The chunk holds the answer as a table cell: on the row of the row label, in the column whose header names
    the question's column (Markdown grids only; plain text cannot show which number belongs to which column)."""
    key = squash(column_key(q["column"]))
    for table in _grids(text):
        header = table[0]
        for row in table[1:]:
            if squash(row[0]).rstrip(":") != squash(q["row"]) and squash(q["row"]) not in squash(row[0]):
                continue
            for k, cell in enumerate(row[1:], 1):
                if squash(q["answer"]) in squash(cell) and k < len(header) and key in squash(header[k]):
                    return True
    return False


def _grids(text: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.split("\n"), ""]:
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables
