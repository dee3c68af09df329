"""OCR against the text layer, and retrieval on scanned copies against the originals, in one run. Prints JSON.

    python bench/scan_ocr.py            # filing pages (English) and a Chinese page; two filings scanned whole
    python bench/scan_ocr.py --quick    # three pages, no retrieval (a smoke test)

Each page is rendered to an image (144 dpi, as a scanner would give it), read by OCR through the image parser, and
compared with the same page's text layer parsed by the PDF parser: character error rate (Levenshtein distance over
the reference length, whitespace ignored). Parse speed is reported as pages/s for text PDFs and for OCR. For the
retrieval check, whole filings are rebuilt as image-only PDFs and the table questions of bench/filings_tables.py
that concern them are asked of each copy.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from kb_service.client.local import LocalClient
from kb_service.evaluation.scans import image_pdf, render
from kb_service.evaluation.tables import gold_pages, load_questions, together
from kb_service.ingest.parsers import parse_bytes, parse_file

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FILINGS = SHARED_DATA / "filings"
QUESTIONS = ROOT / "examples" / "filings-tables" / "questions.jsonl"

PAGES = [  # (file, 1-based page)
    (FILINGS / "FEDEX_2023_10K.pdf", 65),
    (FILINGS / "APPLE_2022_10K.pdf", 24),
    (FILINGS / "APPLE_2022_10K.pdf", 32),
    (FILINGS / "MCDONALDS_2023Q1_EARNINGS.pdf", 4),
    (FILINGS / "EBAY_2023Q1_EARNINGS.pdf", 3),
    (FILINGS / "SALESFORCE_2023Q3_10Q.pdf", 4),
    (FILINGS / "PG_E_2016_10K.pdf", 48),
    (SHARED_DATA / "documents" / "unstructured/pdf/multi-column-2p.pdf", 1),
    (SHARED_DATA / "documents" / "chatchat_zh/ocr_test.pdf", 1),
]
SCANNED = ["MCDONALDS_2023Q1_EARNINGS.pdf", "EBAY_2023Q1_EARNINGS.pdf"]


def plain(text: str) -> str:
    return re.sub(r"[\s|-]+", "", text)  # no whitespace, and no Markdown table rules (both sides have them)


def cer(pages: list[tuple[Path, int]]) -> dict[str, Any]:
    rows, seconds = [], 0.0
    for path, number in pages:
        layer = "".join(s.text for s in parse_file(path).sections if s.page == number)
        [png] = render(path, [number - 1])
        started = time.perf_counter()
        scanned = parse_bytes(png, f"{path.stem}-p{number}.png")
        seconds += time.perf_counter() - started
        ref, hyp = plain(layer), plain(scanned.text)
        rows.append(
            {
                "page": f"{path.name}#{number}",
                "cer": round(Levenshtein.distance(ref, hyp) / max(1, len(ref)), 4),
                "chars": len(ref),
                "confidence": scanned.metadata["ocr_confidence"],
            }
        )
    total = sum(r["chars"] for r in rows)
    return {
        "pages": rows,
        "cer_weighted": round(sum(r["cer"] * r["chars"] for r in rows) / max(1, total), 4),
        "ocr_pages_per_s": round(len(pages) / seconds, 3),
    }


def text_speed() -> dict[str, Any]:
    """Text-layer PDFs parsed, beside the same pages' chunks embedded by the knowledge base's model: which stage
    bounds ingestion."""
    from kb_service.core.config import Settings
    from kb_service.embeddings import EmbedderPool
    from kb_service.ingest.chunking import TokenChunker

    docs, started = [], time.perf_counter()
    for path in sorted(FILINGS.glob("*.pdf")):
        docs.append(parse_file(path))
    parse_s = time.perf_counter() - started
    pages = sum(d.metadata["pages"] for d in docs)
    embedder = EmbedderPool(Settings()).get()
    chunker = TokenChunker(embedder.count_tokens, chunk_size=256, chunk_overlap=32, max_tokens=embedder.info.max_tokens)
    texts = [c.text for d in docs for c in chunker.split(d, "d")]
    embedder.embed_documents(texts[:64])  # warm-up
    started = time.perf_counter()
    embedder.embed_documents(texts)
    embed_s = time.perf_counter() - started
    return {
        "pages": pages,
        "chunks": len(texts),
        "text_pdf_pages_per_s": round(pages / parse_s, 1),
        "embed_pages_per_s": round(pages / embed_s, 1),
        "embed_chunks_per_s": round(len(texts) / embed_s, 1),
    }


def retrieval() -> dict[str, Any]:
    questions = [q for q in load_questions(QUESTIONS) if q["file"] in SCANNED]
    gold: dict[str, set[int]] = {}
    for file in SCANNED:
        gold |= gold_pages(FILINGS / file, [q for q in questions if q["file"] == file])
    report = {}
    settings = {"backend": "milvus", "rerank_backend": "none", "llm_backend": "none"}
    for copy in ("original", "scanned"):
        with tempfile.TemporaryDirectory() as data, LocalClient(data_dir=Path(data), **settings) as client:
            client.create_kb("filings")
            started = time.perf_counter()
            for file in SCANNED:
                data_bytes = (FILINGS / file).read_bytes() if copy == "original" else image_pdf(FILINGS / file)
                client.add_files("filings", {file: _write(Path(data) / file, data_bytes)})
            elapsed = time.perf_counter() - started
            hits = shown = 0
            for q in questions:
                found = client.search("filings", q["question"], top_k=5).hits
                on_page = [h for h in found if h.source == q["file"] and h.page in gold[q["id"]]]
                hits += bool(on_page)
                shown += any(together(h.text, q) for h in on_page)
            report[copy] = {
                "questions": len(questions),
                "page_hit@5": round(hits / len(questions), 3),
                "row_column_number_together@5": round(shown / len(questions), 3),
                "ingest_s": round(elapsed, 1),
            }
    return report


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three pages, no retrieval")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: the report is always JSON")
    quick = parser.parse_args().quick
    if not FILINGS.is_dir():
        raise SystemExit(f"no filings at {FILINGS}: this benchmark reads ../shared/data (our CI's evaluation data)")
    report: dict[str, Any] = {"ocr": cer(PAGES[:1] + PAGES[-2:] if quick else PAGES)}
    if not quick:
        report["text_layer"] = text_speed()
        report["retrieval"] = retrieval()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
