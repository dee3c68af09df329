"""OCR for scanned pages and images: RapidOCR (Apache-2.0) with the PP-OCRv6 models its wheel ships (Chinese and
English, ONNX Runtime on the CPU), loaded once on first use.

Recognised lines come back as positioned ``layout.Word`` pieces in page units, so a scan goes through the same
reading-order, heading and table analysis as a text layer. A page whose mean confidence is below the threshold is
reported (``low_confidence``) and its text is not kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from kb_service.ingest.parsers import layout

log = logging.getLogger(__name__)

_engine: Any = None
_lock = threading.Lock()


@dataclass(frozen=True)
class OcrOptions:
    """``mode``: ``auto`` reads only pages without a usable text layer (and image files), ``on`` every page,
    ``off`` none. ``min_confidence``: a page recognised with a lower mean confidence is reported, not kept."""

    mode: str = "auto"
    min_confidence: float = 0.6


DEFAULT_OCR = OcrOptions()


@dataclass
class OcrPage:
    words: list[layout.Word] = field(default_factory=list)
    confidence: float = 0.0  # mean line confidence, weighted by characters
    low_confidence: bool = False


def engine() -> Any:
    """The one RapidOCR engine of this process (models load in about two seconds)."""
    global _engine
    with _lock:
        if _engine is None:
            from rapidocr import RapidOCR

            logging.getLogger("RapidOCR").setLevel(logging.ERROR)
            _engine = RapidOCR(params={"Global.log_level": "error"})
        return _engine


def recognise(image: Any, *, scale: float, options: OcrOptions) -> OcrPage:
    """OCR one page image (PIL). ``scale`` is image pixels per page unit, so boxes come back in page units."""
    import numpy as np

    ocr = engine()
    with _lock:  # ONNX Runtime sessions run one image at a time here; its own threads use the cores
        result = ocr(np.asarray(image.convert("RGB")), return_word_box=True)
    groups = getattr(result, "word_results", None) or ()
    words = []
    for group in groups:  # one group per recognised text line: its words (CJK: characters) with boxes
        for entry in group if group and not isinstance(group[0], str) else (group,):
            if len(entry) != 3 or not str(entry[0]).strip():
                continue
            text, score, box = entry
            xs, ys = [float(p[0]) / scale for p in box], [float(p[1]) / scale for p in box]
            top, bottom = min(ys), max(ys)
            words.append(layout.Word(str(text).strip(), min(xs), top, max(xs), bottom, bottom - top, float(score)))
    if not words:
        return OcrPage()
    # Vertical text (a margin stamp, an axis label) would join every line it stands beside; the text layer's
    # rotated characters are skipped the same way.
    height = sorted(w.bottom - w.top for w in words)[len(words) // 2]
    words = [w for w in words if not (w.bottom - w.top > 2 * height and w.bottom - w.top > 1.5 * (w.x1 - w.x0))]
    chars = sum(len(w.text) for w in words) or 1
    confidence = sum(w.confidence * len(w.text) for w in words) / chars
    return OcrPage(words, round(confidence, 4), confidence < options.min_confidence)


def too_unsure(what: str, best: float, options: OcrOptions) -> str:
    """Why a scan was not kept: OCR read ``what`` with confidence ``best`` at most, under the threshold."""
    return (
        f"OCR read {what} with a mean confidence of {best:.4f} at best, below the threshold {options.min_confidence} "
        "(KB_OCR_MIN_CONFIDENCE); a sharper scan would read better"
    )
