"""PDF through pypdf (BSD): one section per page, page numbers kept for citations."""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import PdfReadError, PyPdfError

from kb_service.core.errors import CorruptDocument, EncryptedDocument, NoTextLayer
from kb_service.core.records import ParsedDocument, Section
from kb_service.ingest.parsers.base import stem

logging.getLogger("pypdf").setLevel(logging.ERROR)


def parse_pdf(data: bytes, source: str) -> ParsedDocument:
    if not data.lstrip()[:1024].startswith(b"%PDF") and b"%PDF-" not in data[:1024]:
        raise CorruptDocument(source, "not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise EncryptedDocument(source, "the PDF is password-protected; remove the password and upload it again")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            if text.strip():
                sections.append(Section(text=text, page=number))
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
        pages = len(reader.pages)
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise CorruptDocument(source, f"the PDF cannot be read ({type(exc).__name__}: {exc})") from exc
    if not sections:
        raise NoTextLayer(
            source, f"none of the {pages} pages has a text layer (a scanned PDF?); run OCR on it and upload again"
        )
    title = meta_title.strip() if _usable_title(meta_title) else _first_line(sections[0].text) or stem(source)
    return ParsedDocument(source=source, title=title, format="pdf", sections=sections, metadata={"pages": pages})


def _usable_title(title: str) -> bool:
    t = title.strip()
    return bool(t) and not t.lower().startswith(("microsoft word", "untitled")) and not t.endswith((".doc", ".docx"))


def _first_line(text: str) -> str:
    return next((line.strip()[:200] for line in text.splitlines() if line.strip()), "")
