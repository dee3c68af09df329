"""OpenAI's attribute filters: parsing with clear errors, the semantics of each comparison, and which filters go to
the store as they are."""

from __future__ import annotations

from typing import Any

import pytest

from kb_service.core.errors import InvalidInput
from kb_service.filesearch import filters
from kb_service.stores.filters import MAX_DOC_IDS, Filter

pytestmark = pytest.mark.unit

DOC = {"team": "support", "year": 2025, "draft": False, "score": 0.5}


def eq(key: str, value: Any, op: str = "eq") -> dict[str, Any]:
    return {"type": op, "key": key, "value": value}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (eq("team", "support"), True),
        (eq("team", "sales"), False),
        (eq("year", 2025.0), True),  # numbers by value
        (eq("year", "2025"), False),  # a string never equals a number
        (eq("draft", False), True),
        (eq("team", "support", "ne"), False),
        (eq("missing", "x", "ne"), True),  # a document without the key matches only ne and nin
        (eq("missing", "x"), False),
        (eq("year", 2024, "gt"), True),
        (eq("year", 2025, "gt"), False),
        (eq("year", 2025, "gte"), True),
        (eq("score", 0.5, "lt"), False),
        (eq("score", 0.5, "lte"), True),
        (eq("team", "r", "gt"), True),  # strings order as strings
        (eq("team", 1, "gt"), False),  # a string and a number do not order
        (eq("missing", 1, "lt"), False),
        (eq("team", ["sales", "support"], "in"), True),
        (eq("team", ["sales"], "nin"), True),
        (eq("missing", ["sales"], "nin"), True),
        ({"type": "and", "filters": [eq("team", "support"), eq("year", 2026, "lt")]}, True),
        ({"type": "and", "filters": [eq("team", "support"), eq("year", 2025, "lt")]}, False),
        ({"type": "or", "filters": [eq("team", "sales"), {"type": "and", "filters": [eq("draft", False)]}]}, True),
    ],
)
def test_each_comparison_and_compound(raw: dict[str, Any], expected: bool) -> None:
    node = filters.parse(raw)
    assert node is not None and node.matches(DOC) is expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "like", "key": "a", "value": 1}, "filters.type must be one of eq, ne, gt"),
        ({"type": "eq", "value": 1}, "filters.key must be a string"),
        ({"type": "in", "key": "a", "value": "x"}, "'in' compares with a list of values"),
        ({"type": "eq", "key": "a", "value": [1]}, "compares with one value, not a list (use 'in')"),
        ({"type": "gt", "key": "a", "value": True}, "'gt' compares numbers or strings"),
        ({"type": "and", "filters": []}, "filters: an 'and' filter takes a non-empty list 'filters'"),
        ({"type": "or", "filters": [{"type": "eq", "key": "a b", "value": 1}]}, "may only contain letters"),
        ({"type": "eq", "key": "a", "value": None}, "must be a string, number or boolean"),
        ("team = 1", "filters must be an object with 'type'"),
    ],
)
def test_bad_filters_say_what_is_wrong(raw: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        filters.parse(raw)


def test_deep_or_wide_filters_are_refused() -> None:
    deep: dict[str, Any] = eq("a", 1)
    for _ in range(10):
        deep = {"type": "and", "filters": [deep]}
    with pytest.raises(InvalidInput, match="nest at most 8 deep"):
        filters.parse(deep)
    with pytest.raises(InvalidInput, match="at most 64 comparisons"):
        filters.parse({"type": "or", "filters": [eq("a", i) for i in range(70)]})


def test_equalities_joined_by_and_go_to_the_store_as_they_are() -> None:
    node = filters.parse({"type": "and", "filters": [eq("team", "support"), eq("year", [2024, 2025], "in")]})
    assert filters.store_filter(node) == Filter.parse({"team": "support", "year": [2024, 2025]})
    assert filters.store_filter(filters.parse(eq("team", "support"))) == Filter.parse({"team": "support"})
    for other in (
        eq("team", "support", "ne"),
        eq("year", 1, "gt"),
        {"type": "or", "filters": [eq("team", "a"), eq("team", "b")]},
        {"type": "and", "filters": [eq("team", "a"), eq("team", "b")]},  # one key twice: not one condition
        eq("page", 1),  # an attribute here, a chunk column in the store's grammar
    ):
        assert filters.store_filter(filters.parse(other)) is None
    assert filters.store_filter(None) is None


def test_a_document_set_becomes_a_doc_id_filter_within_its_limit() -> None:
    assert filters.documents_filter([]) is None
    scope = filters.documents_filter(["d1", "d2"])
    assert scope == Filter.parse({"doc_id": ["d1", "d2"]})
    assert filters.documents_filter([f"d{i}" for i in range(MAX_DOC_IDS)]) is not None
    with pytest.raises(InvalidInput, match="narrow it"):
        filters.documents_filter([f"d{i}" for i in range(MAX_DOC_IDS + 1)])
