"""Tables from DOCX, PPTX, XLSX, HTML and CSV against docling's reference Markdown for the same files: the same
tables, the same shape (rows × columns), and the same cells, compared as plain text."""

from __future__ import annotations

import re
import unicodedata

import pytest

from kb_service.ingest.parsers import parse_file
from tests.conftest import DOCUMENTS, needs_shared

pytestmark = [pytest.mark.unit, needs_shared]

DOCLING = DOCUMENTS / "docling"
# file → how many of its reference tables we reproduce cell for cell. The others have the reference's shape and
# differ in formatting we drop (list bullets inside cells, an image's alt text) or in a body cell spanning columns,
# whose text we repeat in each (as docling does for header cells).
FILES = {
    "docx/word_sample.docx": 1,
    "docx/word_tables.docx": 7,
    "html/example_03.html": 1,
    "html/example_08.html": 3,
    "html/html_rich_table_cells.html": 2,
    "html/kvp_data_example.html": 1,
    "html/table_06.html": 1,
    "html/wiki_duck.html": 0,
    "pptx/powerpoint_sample.pptx": 1,
    "csv/csv-comma.csv": 1,
}


def grids(markdown: str) -> list[list[list[str]]]:
    """The Markdown tables of a text, as rows of plain cell texts."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.split("\n"), ""]:
        if line.startswith("|"):
            cells = [plain(c) for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c) or not any(cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def plain(cell: str) -> str:
    """Markdown formatting, links and image markers away; quotes, dashes and spaces unified."""
    cell = re.sub(r"<!--.*?-->", "", cell)
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    cell = re.sub(r"[*_`~\\]", "", unicodedata.normalize("NFKC", cell))
    cell = cell.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "‑": "-", "‐": "-", "–": "-"}))
    return " ".join(cell.split())


def ours(rel: str) -> list[list[list[str]]]:
    doc = parse_file(DOCLING / rel, source=rel)
    text = "\n\n".join(
        "\n".join(s.text.split("\n")[1 if s.caption else 0 :]) for s in doc.sections if s.kind == "table"
    )
    return grids(text)


@pytest.mark.parametrize("rel", sorted(FILES))
def test_tables_match_the_reference(rel: str) -> None:
    reference = grids((DOCLING / rel).parent.joinpath("groundtruth_md", f"{(DOCLING / rel).name}.md").read_text())
    found = ours(rel)
    assert len(found) == len(reference)
    assert [(len(t), len(t[0])) for t in found] == [(len(t), len(t[0])) for t in reference]
    assert sum(t == r for t, r in zip(found, reference, strict=True)) == FILES[rel]


def test_a_sheet_keeps_its_header_and_whole_numbers() -> None:
    [first, *_] = ours("xlsx/xlsx_01.xlsx")
    assert first[0] == ["first", "second", "third"] and first[1] == ["1", "5", "9"]
