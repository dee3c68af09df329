"""The one filter grammar for chunk searches, its validation and its reference evaluator.

A filter is a JSON object of ``field -> value`` or ``field -> [value, ...]``:

- ``field`` is a chunk column (``doc_id`` and ``section`` take strings, ``page`` page numbers from 1) or a metadata
  key (``source``, ``lang``, any key a document was ingested with): 1-64 letters, digits, ``_`` or ``-``;
- a value is a string (no control characters), a finite number (whole numbers within 64 bits) or a boolean; a list
  matches when the field equals any of its items (it must not be empty); numbers compare by value (``2`` equals
  ``2.0``) and a boolean equals the number it stands for (``true`` equals ``1``), as in Milvus's JSON fields and
  Python; a string never equals a number;
- every field must match (AND); a chunk without the field does not match.

``Filter.matches`` is the reference: each backend only translates a ``Filter`` into its own query language (a Milvus
expression, SQL) and the contract suite checks them against it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kb_service.core.errors import InvalidInput
from kb_service.core.metadata import check_number
from kb_service.core.records import Chunk

Scalar = str | int | float | bool
FilterInput = Mapping[str, Any]  # the JSON form, as the API, the CLI and the clients take it
CHUNK_FIELDS = ("doc_id", "page", "section")
COLUMN_TYPES: dict[str, type] = {"doc_id": str, "page": int, "section": str}
_FIELD = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CONDITIONS = 32
MAX_VALUES = 256
MAX_DOC_IDS = 10_000  # a set of documents chosen beforehand (an OpenAI attribute filter, evaluated per document)


@dataclass(frozen=True)
class Condition:
    """``field`` equals one of ``values``; valid by construction (backends splice ``field`` into their queries)."""

    field: str
    values: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not _FIELD.fullmatch(self.field):
            raise InvalidInput(f"filter key {self.field!r} may only contain letters, digits, '_' and '-'")
        if not self.values:
            raise InvalidInput(f"filter {self.field!r} has an empty list of values; it would match nothing")
        limit = MAX_DOC_IDS if self.field == "doc_id" else MAX_VALUES
        if len(self.values) > limit:
            raise InvalidInput(f"filter {self.field!r} takes at most {limit} values, got {len(self.values)}")
        if not all(isinstance(v, str | int | float | bool) for v in self.values):
            raise InvalidInput(f"filter {self.field!r} must be a string, number or boolean, or a list of them")
        for v in self.values:
            _check_value(self.field, v)
        column = COLUMN_TYPES.get(self.field)
        if column is not None and not all(isinstance(v, column) and not isinstance(v, bool) for v in self.values):
            kind = "a page number (a whole number from 1)" if column is int else "a string"
            raise InvalidInput(f"filter {self.field!r} compares with {kind}, got {list(self.values)!r}")
        if self.field == "page" and any(isinstance(v, int) and v < 1 for v in self.values):
            raise InvalidInput("filter 'page' takes page numbers, which start at 1")

    @property
    def is_column(self) -> bool:
        """A chunk column rather than a metadata key."""
        return self.field in CHUNK_FIELDS

    def matches(self, actual: object) -> bool:
        return any(_equal(actual, v) for v in self.values)


@dataclass(frozen=True)
class Filter:
    """A validated filter: all ``conditions`` must hold."""

    conditions: tuple[Condition, ...]

    @classmethod
    def parse(cls, raw: Filter | FilterInput | None) -> Filter | None:
        """Validate the JSON form; None and ``{}`` mean no filter. Raises InvalidInput saying what is wrong."""
        if raw is None or isinstance(raw, Filter):
            return raw or None
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"filters must be an object of field -> value(s), got {raw!r}")
        if len(raw) > MAX_CONDITIONS:
            raise InvalidInput(f"filters take at most {MAX_CONDITIONS} fields, got {len(raw)}")
        conditions = tuple(Condition(k, tuple(v) if isinstance(v, list) else (v,)) for k, v in raw.items())
        return cls(conditions) or None

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, chunk: Chunk) -> bool:
        """The reference semantics, on one chunk."""
        for condition in self.conditions:
            if condition.is_column:
                actual = getattr(chunk, condition.field)
            elif condition.field in chunk.metadata:
                actual = chunk.metadata[condition.field]
            else:
                return False
            if not condition.matches(actual):
                return False
        return True

    def to_json(self) -> dict[str, Scalar | list[Scalar]]:
        return {c.field: list(c.values) if len(c.values) > 1 else c.values[0] for c in self.conditions}


def _check_value(field: str, v: Scalar) -> None:
    """What every store can compare exactly: finite numbers within 64 bits, text without control characters."""
    if isinstance(v, int | float):
        check_number(f"filter {field!r}", v)
    if isinstance(v, str) and any(unicodedata.category(c) in ("Cc", "Cs") for c in v):
        raise InvalidInput(f"filter {field!r} contains a control character or a lone surrogate: {v!r}")


def _equal(actual: object, expected: Scalar) -> bool:
    return isinstance(actual, str | int | float) and actual == expected


def with_numeric_twins(values: tuple[Scalar, ...]) -> list[Scalar]:
    """``values`` plus the number each boolean stands for and the boolean of each 0 or 1: for a backend whose
    equality keeps them apart (JSONB: ``true`` is not ``1``)."""
    out: list[Scalar] = list(values)
    for v in values:
        if isinstance(v, bool):
            out.append(int(v))
        elif isinstance(v, int | float) and v in (0, 1):
            out.append(bool(v))
    return [v for _, v in dict.fromkeys((type(v), v) for v in out)]
