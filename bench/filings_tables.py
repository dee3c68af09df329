"""Questions over real filings answered by one table cell: page hit@5 and whether a retrieved chunk shows the row
label, the column header and the number together (and whether it holds the number as the cell of that row and
column of a table), for the page-text PDF parser we had (pypdf, one section per page)
and the layout parser (tables as Markdown grids), side by side in one run. Prints JSON.

    python bench/filings_tables.py                      # ../shared/data/filings, 43 questions
    python bench/filings_tables.py --filings DIR --questions FILE
    python bench/filings_tables.py --quick              # the McDonald's release only (a smoke test)

The questions (examples/filings-tables/questions.jsonl) are ours, written from the filings' tables: each names the
file, the answer as printed, the page, the row label and the column. A page counts as gold when its text layer holds
both the row label and the answer (so a number repeated in another statement counts there too); the stated page
must be one of them, or the question is refused as wrong.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kb_service.client.local import LocalClient
from kb_service.core.records import ParsedDocument, Section
from kb_service.evaluation.tables import aligned, gold_pages, load_questions, together
from kb_service.ingest.sources import SourceItem

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "examples" / "filings-tables" / "questions.jsonl"
FILINGS = ROOT.parent / "shared" / "data" / "filings"
TOP_K = 5


class PageTextItem(SourceItem):
    """A PDF parsed the way we did before the layout parser: pypdf's ``extract_text`` page by page."""

    def parse(self, **_options: Any) -> ParsedDocument:
        from pypdf import PdfReader

        assert self.path is not None
        reader = PdfReader(io.BytesIO(self.path.read_bytes()))
        sections = [
            Section(text=text, page=n) for n, page in enumerate(reader.pages, 1) if (text := page.extract_text() or "")
        ]
        return ParsedDocument(self.name, self.path.stem, "pdf", sections, {"pages": len(reader.pages)})


def run(parser: str, filings: Path, questions: list[dict[str, Any]], gold: dict[str, set[int]]) -> dict[str, Any]:
    settings = {"backend": "milvus", "rerank_backend": "none", "llm_backend": "none"}
    with tempfile.TemporaryDirectory() as data, LocalClient(data_dir=Path(data), **settings) as client:
        client.create_kb("filings")
        files = sorted({q["file"] for q in questions})
        item = PageTextItem if parser == "page-text" else SourceItem
        started = time.perf_counter()
        client._ingest("filings", [item(name=f, path=filings / f) for f in files])
        ingest_s = time.perf_counter() - started
        hits = shown = cells = 0
        misses, off_page = [], []
        for q in questions:
            found = client.search("filings", q["question"], top_k=TOP_K).hits
            on_page = [h for h in found if h.source == q["file"] and h.page in gold[q["id"]]]
            hits += bool(on_page)
            if not on_page:
                off_page.append(q["id"])
            ok = any(together(h.text, q) for h in on_page)
            shown += ok
            cells += any(aligned(h.text, q) for h in on_page)
            if not ok:
                misses.append(q["id"])
        n = len(questions)
        return {
            "questions": n,
            f"page_hit@{TOP_K}": round(hits / n, 3),
            f"row_column_number_together@{TOP_K}": round(shown / n, 3),
            f"answer_in_its_table_cell@{TOP_K}": round(cells / n, 3),
            "chunks": sum(d.chunk_count for d in client.documents("filings")),
            "ingest_s": round(ingest_s, 1),
            "missed_page": off_page,
            "missed_together": misses,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filings", type=Path, default=FILINGS)
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--quick", action="store_true", help="the 4-page McDonald's release only (a smoke test)")
    parser.add_argument("--parsers", nargs="+", choices=["page-text", "layout"], default=["page-text", "layout"])
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: the report is always JSON")
    args = parser.parse_args()
    if not args.filings.is_dir():
        raise SystemExit(f"no filings at {args.filings}: pass --filings DIR (the PDFs the questions name)")
    questions = load_questions(args.questions)
    if args.quick:
        questions = [q for q in questions if q["file"] == "MCDONALDS_2023Q1_EARNINGS.pdf"]
    gold: dict[str, set[int]] = {}
    for file in sorted({q["file"] for q in questions}):
        gold |= gold_pages(args.filings / file, [q for q in questions if q["file"] == file])
    report = {p: run(p, args.filings, questions, gold) for p in args.parsers}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
