"""Image files (PNG, JPEG, TIFF, BMP, WebP, GIF) through OCR; each frame of a multi-page TIFF is a page."""

from __future__ import annotations

import io

from kb_service.core.errors import CorruptDocument, NoTextLayer
from kb_service.core.records import ParsedDocument
from kb_service.ingest.parsers import layout
from kb_service.ingest.parsers.base import SectionBuilder, stem
from kb_service.ingest.parsers.ocr import DEFAULT_OCR, OcrOptions, recognise, too_unsure

MAX_PIXELS = 80_000_000  # a larger image is refused (a decompression bomb?) rather than decoded
MAX_FRAMES = 500


def parse_image(data: bytes, source: str, *, ocr: OcrOptions = DEFAULT_OCR) -> ParsedDocument:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if ocr.mode == "off":
        raise NoTextLayer(source, "an image has no text layer and OCR is off: set KB_OCR=auto to read it")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise CorruptDocument(
                source, f"the image is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,} pixels"
            )
        frames = [frame.copy() for _, frame in zip(range(MAX_FRAMES), ImageSequence.Iterator(image), strict=False)]
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDocument(source, f"the image cannot be read ({type(exc).__name__}: {exc})") from exc
    out = SectionBuilder()
    confidences, low = [], []
    for number, frame in enumerate(frames, start=1):
        width, height = frame.size
        page = recognise(frame, scale=1.0, options=ocr)
        if not page.words:
            continue
        confidences.append(page.confidence)
        if page.low_confidence:
            low.append(number)
            continue
        lines = layout.reading_order(layout.group_lines(page.words), width)
        out.page(number if len(frames) > 1 else 1)
        out.layout(layout.blocks(lines, layout.body_size([lines])), width, height, flat=True)
    out.flush()
    if not out.sections:
        detail = too_unsure("it", max(confidences), ocr) if confidences else "OCR found no text in it"
        raise NoTextLayer(source, detail)
    title = next((s.heading for s in out.sections if s.heading), None) or stem(source)
    metadata: dict[str, object] = {"pages": len(frames), "ocr_pages": len(frames)}
    metadata["ocr_confidence"] = round(min(confidences), 3)
    if low:
        metadata["ocr_low_confidence_pages"] = ",".join(map(str, low))[:1000]
    return ParsedDocument(source=source, title=title[:200], format="image", sections=out.sections, metadata=metadata)
