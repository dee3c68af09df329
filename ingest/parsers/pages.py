"""A page of a kept original as a PNG, so that a client can show the page a citation names: a PDF page rendered by
PDFium, or a frame of an image file (a TIFF's pages), scaled to the width asked for."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import pypdfium2 as pdfium

from kb_service.core.errors import CorruptDocument, PageNotFound
from kb_service.ingest.parsers.image import MAX_FRAMES
from kb_service.ingest.parsers.pdf import PDFIUM

if TYPE_CHECKING:
    from PIL.Image import Image

PAGED_FORMATS = ("pdf", "image")
MAX_PIXELS = 40_000_000  # a page far taller than wide is capped here, whatever the width asked for


def page_png(path: Path, fmt: str, page: int, width: int, *, name: str = "document") -> bytes:
    """PNG bytes of page ``page`` (1-based) of the file at ``path`` (parsed as ``fmt``), ``width`` pixels wide.
    Raises PageNotFound for a format without pages or a page the document does not have."""
    if fmt not in PAGED_FORMATS:
        raise PageNotFound(f"{name} is a {fmt} document: only PDF and image documents have pages to render")
    image = _pdf_page(path, page, width, name) if fmt == "pdf" else _image_frame(path, page, width, name)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _pdf_page(path: Path, page: int, width: int, name: str) -> Image:
    with PDFIUM:
        try:
            pdf = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            raise CorruptDocument(name, f"the kept PDF cannot be opened ({exc})") from exc
        try:
            _check(page, len(pdf), name)
            sheet = pdf[page - 1]
            try:
                w, h = sheet.get_size()
                scale = min(width / w, (MAX_PIXELS / (w * h)) ** 0.5)
                bitmap = sheet.render(scale=scale, draw_annots=True)
                image: Image = bitmap.to_pil().copy()
                bitmap.close()
            finally:
                sheet.close()
        finally:
            pdf.close()
    return image


def _image_frame(path: Path, page: int, width: int, name: str) -> Image:
    from PIL import Image as PILImage
    from PIL import ImageSequence, UnidentifiedImageError

    try:
        with PILImage.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            _check(page, min(frames, MAX_FRAMES), name)
            frame = next(f for i, f in enumerate(ImageSequence.Iterator(image), start=1) if i == page).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CorruptDocument(name, f"the kept image cannot be read ({exc})") from exc
    if frame.mode not in ("RGB", "RGBA", "L", "LA"):
        frame = frame.convert("RGBA" if "transparency" in frame.info else "RGB")
    w, h = frame.size
    scale = min(width / w, (MAX_PIXELS / (w * h)) ** 0.5)
    if abs(scale - 1) > 0.01:
        frame = frame.resize((max(1, round(w * scale)), max(1, round(h * scale))), PILImage.Resampling.LANCZOS)
    return frame


def _check(page: int, pages: int, name: str) -> None:
    if not 1 <= page <= pages:
        raise PageNotFound(f"{name} has {pages} page{'s' if pages != 1 else ''}; there is no page {page}")
