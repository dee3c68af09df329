"""The documented shape of metadata: what is accepted, and what is refused with a message saying why."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb_service.core.errors import InvalidInput
from kb_service.core.metadata import MAX_BYTES, check_metadata, parse_metadata
from kb_service.ingest.sources import SourceItem
from kb_service.stores.filters import Filter

pytestmark = pytest.mark.unit


def test_flat_scalars_are_accepted() -> None:
    meta = {"team": "support", "year": 2024, "score": 0.5, "public": False, "note": "tab\tand\nnewline", "n": 2**63 - 1}
    assert check_metadata(meta) == meta
    assert parse_metadata('{"lang": "zh", "title": "泵的维护"}') == {"lang": "zh", "title": "泵的维护"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1, 2], "metadata must be a JSON object of key -> value, got list"),
        ({"a": {"b": 1}}, "metadata 'a' must be a string, a number or a boolean, not dict"),
        ({"a": [1, 2]}, "metadata 'a' must be a string, a number or a boolean, not list"),
        ({"a": None}, "not null"),
        ({"a b": 1}, "metadata key 'a b' must be 1-64 letters, digits, '_' or '-'"),
        ({"": 1}, "metadata key '' must be"),
        ({f"k{i}": i for i in range(65)}, "metadata takes at most 64 keys, got 65"),
        ({"a": float("nan")}, "metadata 'a': nan is not a finite number"),
        ({"a": float("-inf")}, "metadata 'a': -inf is not a finite number"),
        ({"a": 2**63}, "does not fit in 64 bits"),
        ({"a": "x\u0001y"}, "metadata 'a' contains the control character '\\x01'"),
        ({"a": "\ud800"}, "metadata 'a' contains a lone surrogate"),
        ({"a": "x" * 2049}, "metadata 'a' is 2049 characters long; the limit is 2048"),
        ({f"k{i}": "x" * 200 for i in range(50)}, f"the limit is {MAX_BYTES}"),
    ],
)
def test_bad_metadata_says_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        check_metadata(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{" * 5000, "metadata is"),
        ("[" * 100_000, "metadata is nested too deeply"),
        ('{"a": NaN}', "metadata may not contain NaN"),
        ('{"a": Infinity}', "metadata may not contain Infinity"),
        ("{not json", "metadata is not valid JSON"),
        ("1" * 10, "metadata must be a JSON object"),
    ],
)
def test_metadata_text_is_parsed_safely(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse_metadata(text)


def test_a_source_item_checks_its_metadata() -> None:
    with pytest.raises(InvalidInput, match="metadata 'deep'"):
        SourceItem("a.txt", text="x", metadata={"deep": {"er": 1}})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=70), inner, max_size=4),
    max_leaves=20,
)


@given(raw=JSON)
@settings(max_examples=500, deadline=None)
def test_any_json_is_valid_metadata_or_a_clear_refusal(raw: object) -> None:
    """Whatever a caller sends, the answer is valid metadata (storable on every store as it is) or InvalidInput."""
    try:
        meta = check_metadata(raw)
    except InvalidInput as exc:
        assert str(exc).startswith("metadata")
        return
    assert json.loads(json.dumps(meta, allow_nan=False)) == meta


@given(raw=JSON)
@settings(max_examples=500, deadline=None)
def test_any_json_is_a_valid_filter_or_a_clear_refusal(raw: object) -> None:
    try:
        where = Filter.parse(raw)  # type: ignore[arg-type]
    except InvalidInput as exc:
        assert "filter" in str(exc)
        return
    if where is not None:
        json.dumps(where.to_json(), allow_nan=False)
