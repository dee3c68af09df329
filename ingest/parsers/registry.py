"""Format detection (extension, then content) and dispatch to the parser of each format."""

from __future__ import annotations

import dataclasses
import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePath

from kb_service.core.errors import CorruptDocument, EmptyDocument, FileTooLarge, ParseError, UnsupportedFormat
from kb_service.core.records import ParsedDocument, normalise_text
from kb_service.ingest.parsers.base import Parser, check_expansion
from kb_service.ingest.parsers.html import parse_epub, parse_html
from kb_service.ingest.parsers.image import parse_image
from kb_service.ingest.parsers.markdown import parse_markdown
from kb_service.ingest.parsers.ocr import OcrOptions
from kb_service.ingest.parsers.office import parse_docx, parse_odt, parse_pptx, parse_xlsx, refuse_legacy_office
from kb_service.ingest.parsers.pdf import parse_pdf
from kb_service.ingest.parsers.text import parse_csv, parse_rtf, parse_text

log = logging.getLogger(__name__)

PARSERS: dict[str, Parser] = {
    "docx": parse_docx,
    "pptx": parse_pptx,
    "xlsx": parse_xlsx,
    "odt": parse_odt,
    "epub": parse_epub,
    "html": parse_html,
    "markdown": parse_markdown,
    "text": parse_text,
    "csv": parse_csv,
    "rtf": parse_rtf,
    "legacy-office": refuse_legacy_office,
}
OCR_PARSERS: dict[str, Callable[..., ParsedDocument]] = {"pdf": parse_pdf, "image": parse_image}  # take OCR options

EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".odt": "odt",
    ".epub": "epub",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".rst": "text",
    ".json": "text",
    ".jsonl": "text",
    ".csv": "csv",
    ".tsv": "csv",
    ".rtf": "rtf",
    ".doc": "legacy-office",
    ".xls": "legacy-office",
    ".ppt": "legacy-office",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tif": "image",
    ".tiff": "image",
    ".bmp": "image",
    ".webp": "image",
    ".gif": "image",
}
SUPPORTED_EXTENSIONS = frozenset(ext for ext, fmt in EXTENSIONS.items() if fmt != "legacy-office")
MEDIA_EXTENSIONS = {
    ".mp3",
    ".mp4",
    ".wav",
    ".zip",
    ".gz",
    ".tar",
    ".7z",
    ".exe",
    ".dll",
    ".so",
    ".bin",
}
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a")
BMP_HEADERS = {12, 40, 52, 56, 64, 108, 124}  # sizes of the DIB header that follows a BMP's 14-byte file header
ZIP_FORMATS = {"word/document.xml": "docx", "ppt/presentation.xml": "pptx", "xl/workbook.xml": "xlsx"}


def _is_bmp(data: bytes) -> bool:
    """``BM`` alone is no proof (a text may start "BMI was …"): the reserved bytes must be zero and the DIB header
    one of the known sizes."""
    return (
        data[:2] == b"BM"
        and len(data) >= 18
        and data[6:10] == b"\x00\x00\x00\x00"
        and int.from_bytes(data[14:18], "little") in BMP_HEADERS
    )


def detect_format(data: bytes, source: str) -> str:
    """The format key for ``data``; magic bytes win over a misleading extension."""
    ext = PurePath(source).suffix.lower()
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF"):
        return "pdf"
    if data.startswith(OLE_MAGIC):
        return "legacy-office"
    if data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP") or _is_bmp(data):
        return "image"
    if data.startswith(b"PK\x03\x04"):
        return _zip_format(data, source, EXTENSIONS.get(ext))
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    if ext in MEDIA_EXTENSIONS:
        raise UnsupportedFormat(source, f"{ext} files are not supported (supported: {_supported()})")
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if head[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"  # decode_text refuses binary content with a clear reason


def _zip_format(data: bytes, source: str, by_extension: str | None) -> str:
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile as exc:
        raise CorruptDocument(source, f"corrupt or truncated archive ({exc})") from exc
    check_expansion(infos, len(data), source)
    names = {info.filename for info in infos}
    for member, fmt in ZIP_FORMATS.items():
        if member in names:
            return fmt
    if "META-INF/container.xml" in names and by_extension == "epub":
        return "epub"
    if "content.xml" in names and by_extension == "odt":
        return "odt"
    if by_extension in ("epub", "odt"):
        return by_extension
    raise UnsupportedFormat(source, f"a ZIP archive that is not a document (supported: {_supported()})")


def _supported() -> str:
    return " ".join(sorted(SUPPORTED_EXTENSIONS))


def parse_bytes(
    data: bytes, source: str, *, max_bytes: int | None = None, ocr: OcrOptions | None = None
) -> ParsedDocument:
    """Parse one file's bytes into sections of normalised text, or raise a specific ParseError."""
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLarge(source, f"the file is {len(data)} bytes; the limit is {max_bytes}")
    if not data.strip():
        raise EmptyDocument(source, "the file is empty")
    fmt = detect_format(data, source)
    try:
        if fmt in OCR_PARSERS:
            parsed = OCR_PARSERS[fmt](data, source, ocr=ocr or OcrOptions())
        else:
            parsed = PARSERS[fmt](data, source)
    except ParseError:
        raise
    except Exception as exc:  # a library failing on malformed input: report it as corrupt, never crash
        log.warning("parser %s failed on %s", fmt, source, exc_info=True)
        raise CorruptDocument(source, f"the {fmt} file cannot be read ({type(exc).__name__}: {exc})") from exc
    sections = [dataclasses.replace(s, text=text) for s in parsed.sections if (text := normalise_text(s.text))]
    if not sections:
        raise EmptyDocument(source, f"no text found in this {fmt} file")
    parsed.sections = sections
    parsed.title = normalise_text(parsed.title) or PurePath(source).stem
    return parsed


def parse_file(
    path: Path, *, source: str | None = None, max_bytes: int | None = None, ocr: OcrOptions | None = None
) -> ParsedDocument:
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise FileTooLarge(source or path.name, f"the file is {path.stat().st_size} bytes; the limit is {max_bytes}")
    return parse_bytes(path.read_bytes(), source or path.name, max_bytes=max_bytes, ocr=ocr)
