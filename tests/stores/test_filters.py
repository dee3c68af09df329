"""The filter grammar: validation with messages that say what is wrong, and the reference evaluator."""

from __future__ import annotations

import re

import pytest

from kb_service.core.errors import InvalidInput
from kb_service.core.records import Chunk
from kb_service.stores.filters import Condition, Filter

pytestmark = pytest.mark.unit

CHUNK = Chunk(
    id="d1:0",
    doc_id="d1",
    ord=0,
    text="x",
    hash="h",
    page=1,
    section="Intro",
    start=0,
    end=1,
    metadata={"source": "d1.txt", "lang": "en", "n": 2, "flag": True},
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"source": "d1.txt", "lang": ["de", "en"]}, True),
        ({"doc_id": "d1", "page": 1, "section": "Intro"}, True),
        ({"n": 2.0}, True),
        ({"n": [1, 2]}, True),
        ({"flag": True}, True),
        ({"flag": 1}, True),  # a boolean equals the number it stands for
        ({"flag": 0}, False),
        ({"n": True}, False),
        ({"n": "2"}, False),  # a string never equals a number
        ({"lang": "zh"}, False),
        ({"missing": "x"}, False),
        ({"lang": "en", "page": 2}, False),  # every field must match
    ],
)
def test_reference_semantics(raw: dict[str, object], expected: bool) -> None:
    where = Filter.parse(raw)
    assert where is not None and where.matches(CHUNK) is expected


def test_no_filter() -> None:
    assert Filter.parse(None) is None and Filter.parse({}) is None
    where = Filter.parse({"lang": ["en", "de"], "page": 1})
    assert Filter.parse(where) is where
    assert where is not None and where.to_json() == {"lang": ["en", "de"], "page": 1}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"a b": "x"}, "filter key 'a b' may only contain letters, digits, '_' and '-'"),
        ({'x"]or 1': "x"}, "may only contain letters"),
        ({"k" * 65: "x"}, "may only contain letters"),
        ({"topic": {"$gt": 1}}, "filter 'topic' must be a string, number or boolean, or a list of them"),
        ({"topic": [None]}, "must be a string, number or boolean"),
        ({"topic": []}, "filter 'topic' has an empty list of values; it would match nothing"),
        ({"topic": list(range(300))}, "filter 'topic' takes at most 256 values, got 300"),
        ({f"k{i}": 1 for i in range(33)}, "filters take at most 32 fields, got 33"),
        (["lang", "en"], "filters must be an object of field -> value(s)"),
        ({"page": "abc"}, "filter 'page' compares with a page number (a whole number from 1), got ['abc']"),
        ({"page": True}, "filter 'page' compares with a page number"),
        ({"page": 1.5}, "filter 'page' compares with a page number"),
        ({"page": -1}, "filter 'page' takes page numbers, which start at 1"),
        ({"doc_id": 7}, "filter 'doc_id' compares with a string, got [7]"),
        ({"team": "a\u0001b"}, "filter 'team' contains a control character or a lone surrogate"),
        ({"team": "\ud800"}, "contains a control character or a lone surrogate"),
        ({"n": float("nan")}, "filter 'n': nan is not a finite number"),
        ({"n": float("inf")}, "filter 'n': inf is not a finite number"),
        ({"n": 2**63}, f"filter 'n': {2**63} does not fit in 64 bits"),
    ],
)
def test_invalid_filters_say_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        Filter.parse(raw)  # type: ignore[arg-type]


def test_a_condition_is_valid_by_construction() -> None:
    with pytest.raises(InvalidInput, match="may only contain letters"):
        Condition('lang"] or 1 == 1 or metadata["x', ("en",))


def test_numeric_twins_for_backends_that_keep_booleans_apart() -> None:
    from kb_service.stores.filters import with_numeric_twins

    assert with_numeric_twins((True, "x", 2)) == [True, "x", 2, 1]
    assert with_numeric_twins((0, 1.0, False)) == [0, 1.0, False, True]
