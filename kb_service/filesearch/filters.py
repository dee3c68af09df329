"""OpenAI's attribute filters (``{"type": "eq", "key": …, "value": …}``, ``{"type": "and" | "or", "filters": […]}``)
on documents' metadata, and how a search applies one.

A filter our store grammar can say (equalities and ``in`` lists joined by ``and``) goes to the store as it is. Any
other (``ne``, ``gt``…, ``nin``, ``or``) is evaluated here on every ready document's metadata, and the search is then
limited to the documents that match (a store filter on ``doc_id``). Attributes belong to a whole file, so both give
the same chunks.

Semantics: ``eq`` / ``in`` compare as the store does (numbers by value, a string never equals a number);
``gt`` / ``gte`` / ``lt`` / ``lte`` compare numbers with numbers and strings with strings; a document without the key
matches only ``ne`` and ``nin``."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kb_service.core.errors import InvalidInput
from kb_service.stores.filters import MAX_DOC_IDS, Condition, Filter

Scalar = str | int | float | bool
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS = ("and", "or")
MAX_DEPTH = 8
MAX_NODES = 64
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


@dataclass(frozen=True)
class Comparison:
    op: str
    key: str
    values: tuple[Scalar, ...]  # one value, or the list of ``in`` / ``nin``

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.key not in metadata:
            return self.op in ("ne", "nin")
        actual = metadata[self.key]
        if self.op in ("eq", "in", "ne", "nin"):
            equal = Condition(self.key, self.values).matches(actual)
            return equal if self.op in ("eq", "in") else not equal
        expected = self.values[0]
        if _kind(actual) != _kind(expected) or _kind(actual) is None:
            return False
        return _ORDER[self.op](actual, expected)


@dataclass(frozen=True)
class Compound:
    op: str  # and | or
    parts: tuple[Comparison | Compound, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        results = (p.matches(metadata) for p in self.parts)
        return all(results) if self.op == "and" else any(results)


Node = Comparison | Compound


def parse(raw: object) -> Node | None:
    """Validate OpenAI's JSON form (None: no filter); InvalidInput names the bad part by its path."""
    if raw is None:
        return None
    count = [0]
    return _parse(raw, "filters", 0, count)


def _parse(raw: object, where: str, depth: int, count: list[int]) -> Node:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise InvalidInput(f"filters: at most {MAX_NODES} comparisons and compounds in all")
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{where}: filters nest at most {MAX_DEPTH} deep")
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where} must be an object with 'type', got {raw!r}")
    kind = raw.get("type")
    if kind in COMPOUNDS:
        parts = raw.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidInput(f"{where}: an {kind!r} filter takes a non-empty list 'filters'")
        return Compound(kind, tuple(_parse(p, f"{where}.filters[{i}]", depth + 1, count) for i, p in enumerate(parts)))
    if kind not in COMPARISONS:
        raise InvalidInput(f"{where}.type must be one of {', '.join(COMPARISONS + COMPOUNDS)}; got {kind!r}")
    key, value = raw.get("key"), raw.get("value")
    if not isinstance(key, str):
        raise InvalidInput(f"{where}.key must be a string, got {key!r}")
    if kind in ("in", "nin"):
        if not isinstance(value, list):
            raise InvalidInput(f"{where}: {kind!r} compares with a list of values, got {value!r}")
        values = tuple(value)
    else:
        if isinstance(value, list):
            raise InvalidInput(f"{where}: {kind!r} compares with one value, not a list (use 'in')")
        values = (value,)
    Condition(key, values)  # the key's and values' shape, as every filter of ours checks them
    if kind in _ORDER and _kind(values[0]) is None:
        raise InvalidInput(f"{where}: {kind!r} compares numbers or strings, got {values[0]!r}")
    return Comparison(kind, key, values)


def _kind(value: object) -> type | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float
    return str if isinstance(value, str) else None


def store_filter(node: Node | None) -> Filter | None:
    """The same filter in the store's grammar, where it can say it (equalities joined by ``and``); else None."""
    if node is None:
        return None
    parts = node.parts if isinstance(node, Compound) and node.op == "and" else (node,)
    conditions: dict[str, tuple[Scalar, ...]] = {}
    for part in parts:
        if not isinstance(part, Comparison) or part.op not in ("eq", "in") or part.key in conditions:
            return None
        if part.key in ("doc_id", "page", "section"):  # chunk columns in our grammar, attributes here
            return None
        conditions[part.key] = part.values
    return Filter(tuple(Condition(k, v) for k, v in conditions.items()))


def documents_filter(doc_ids: list[str]) -> Filter | None:
    """A store filter limiting a search to ``doc_ids`` (None: no document matched, nothing to search)."""
    if not doc_ids:
        return None
    if len(doc_ids) > MAX_DOC_IDS:
        raise InvalidInput(
            f"the filter matches {len(doc_ids)} files; a filter that is not only 'eq' and 'in' joined by 'and' may "
            f"match at most {MAX_DOC_IDS}: narrow it"
        )
    return Filter((Condition("doc_id", tuple(doc_ids)),))
