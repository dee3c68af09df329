"""Scanned copies of real PDFs for the OCR checks: pages rendered as a scanner would give them (144 dpi), and whole
files rebuilt from those images with no text layer."""

from __future__ import annotations

import io
from pathlib import Path

import pypdfium2 as pdfium

SCALE = 2.0  # 144 dpi


def render(path: Path, pages: list[int] | None = None) -> list[bytes]:
    """PNG images of the pages (0-based indexes; all when None)."""
    pdf = pdfium.PdfDocument(path)
    out = []
    for index in pages or range(len(pdf)):
        buf = io.BytesIO()
        pdf[index].render(scale=SCALE).to_pil().save(buf, format="PNG")
        out.append(buf.getvalue())
    pdf.close()
    return out


def image_pdf(path: Path) -> bytes:
    """The file rebuilt from page images only: a scan, with no text layer."""
    from PIL import Image

    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in render(path)]
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:], resolution=72 * SCALE)
    return buf.getvalue()
