"""Plain text, CSV and RTF; text in any encoding (BOMs, UTF-16, cp1252, latin-1 …) is detected."""

from __future__ import annotations

import codecs
import csv
import io

from charset_normalizer import from_bytes

from kb_service.core.errors import UnsupportedFormat
from kb_service.core.records import ParsedDocument, Section
from kb_service.ingest.parsers.base import SectionBuilder, stem

BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
MAX_CONTROL_RATIO = 0.01


def decode_text(data: bytes, source: str) -> str:
    """Decode bytes of unknown encoding; binary content raises UnsupportedFormat."""
    text: str | None = None
    for bom, encoding in BOMS:
        if data.startswith(bom):
            text = data.decode(encoding, errors="replace")
            break
    if text is None and b"\x00" in data:
        text = _bomless_utf16(data)
    if text is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            best = from_bytes(data).best()
            if best is None:
                raise UnsupportedFormat(source, "binary content, not text in any known encoding") from None
            text = str(best)
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if text and controls / len(text) > MAX_CONTROL_RATIO:
        raise UnsupportedFormat(source, "binary content, not text (control characters throughout)")
    return text


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: NUL bytes sit on one parity of positions (even for big-endian ASCII)."""
    sample = data[:4096]
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    half = len(sample) // 2
    encoding = (
        "utf-16-be" if even > 0.3 * half and odd == 0 else "utf-16-le" if odd > 0.3 * half and even == 0 else None
    )
    if encoding is None:
        return None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def first_line_title(text: str, source: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return stem(source)


def parse_text(data: bytes, source: str) -> ParsedDocument:
    text = decode_text(data, source)
    return ParsedDocument(
        source=source, title=first_line_title(text, source), format="text", sections=[Section(text=text)]
    )


def parse_csv(data: bytes, source: str) -> ParsedDocument:
    text = decode_text(data, source)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    out = SectionBuilder()
    out.grid([[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text), dialect)])  # row 1: header
    out.flush()
    return ParsedDocument(source=source, title=stem(source), format="csv", sections=out.sections)


def parse_rtf(data: bytes, source: str) -> ParsedDocument:
    from striprtf.striprtf import rtf_to_text

    if not data.lstrip().startswith(b"{\\rtf"):
        raise UnsupportedFormat(source, "not an RTF file (missing '{\\rtf' header)")
    text = rtf_to_text(data.decode("latin-1"), errors="ignore")
    return ParsedDocument(source=source, title=first_line_title(text, source), format="rtf", sections=[Section(text)])
