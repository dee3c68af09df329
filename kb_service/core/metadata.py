"""The shape of a document's metadata, checked once where it enters (an upload, a client call, the CLI).

Metadata is a flat JSON object: at most ``MAX_KEYS`` keys, each 1-64 letters, digits, ``_`` or ``-`` (the keys a
filter can name); each value a string (at most ``MAX_STRING_CHARS`` characters, no control characters other than tab
and newlines), a finite number (a whole number within 64 bits), or a boolean; at most ``MAX_BYTES`` in all as UTF-8
JSON. Nested objects, lists, null, NaN and Infinity are refused, so that every value can be filtered on and has one
meaning on every store; every chunk of the document carries it (the stores filter chunks by it), so it stays
small."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from kb_service.core.errors import InvalidInput

Scalar = str | int | float | bool
MAX_KEYS = 64
MAX_STRING_CHARS = 2_048
MAX_BYTES = 8 * 1024
KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
INT64 = 2**63
ALLOWED_CONTROLS = frozenset("\t\n\r")


def check_metadata(raw: object) -> dict[str, Scalar]:
    """``raw`` as valid metadata (a new dict), or InvalidInput saying what is wrong."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"metadata must be a JSON object of key -> value, got {type(raw).__name__}")
    if len(raw) > MAX_KEYS:
        raise InvalidInput(f"metadata takes at most {MAX_KEYS} keys, got {len(raw)}")
    out: dict[str, Scalar] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise InvalidInput(f"metadata key {key!r} must be 1-64 letters, digits, '_' or '-'")
        out[key] = _value(key, value)
    size = len(json.dumps(out, ensure_ascii=False).encode("utf-8"))
    if size > MAX_BYTES:
        raise InvalidInput(f"metadata is {size} bytes as JSON; the limit is {MAX_BYTES}")
    return out


def check_number(what: str, value: int | float) -> None:
    """What every store compares exactly: a finite number, a whole one within 64 bits (``what`` names the value in
    the message: "metadata 'year'", "filter 'page'")."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{what}: {value} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        raise InvalidInput(f"{what}: {value} does not fit in 64 bits")


def _value(key: str, value: Any) -> Scalar:
    if isinstance(value, int | float):  # booleans included: always valid
        check_number(f"metadata {key!r}", value)
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise InvalidInput(f"metadata {key!r} is {len(value)} characters long; the limit is {MAX_STRING_CHARS}")
        for c in value:
            if unicodedata.category(c) == "Cs":
                raise InvalidInput(f"metadata {key!r} contains a lone surrogate (not valid Unicode text)")
            if unicodedata.category(c) == "Cc" and c not in ALLOWED_CONTROLS:
                raise InvalidInput(f"metadata {key!r} contains the control character {c!r}")
        return value
    kind = "null" if value is None else type(value).__name__
    raise InvalidInput(f"metadata {key!r} must be a string, a number or a boolean, not {kind}")


def parse_metadata(text: str) -> dict[str, Scalar]:
    """Metadata sent as JSON text (a multipart form field, a CLI option), checked."""
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"metadata is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInput("metadata is nested too deeply; it must be a flat JSON object") from exc
    return check_metadata(raw)


def _no_constant(name: str) -> float:
    raise InvalidInput(f"metadata may not contain {name}: it is not a JSON number")
