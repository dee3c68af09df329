"""The stores' log of what each revision changed: chained from any revision it still holds, bounded, and silent
(None) wherever it cannot tell."""

from __future__ import annotations

import pytest

from kb_service.stores import changes
from kb_service.stores.changes import Changes

pytestmark = pytest.mark.unit


def test_steps_chain_and_later_steps_win() -> None:
    log = changes.logged(None, "r0", "r1", ["a", "b"], [])
    log = changes.logged(log, "r1", "r2", ["c"], ["a"])  # a replaced by c
    log = changes.logged(log, "r2", "r3", ["a"], ["b"])  # a back, b deleted
    assert changes.since(log, "r3", "r3") == Changes("r3", frozenset(), frozenset())
    assert changes.since(log, "r2", "r3") == Changes("r3", frozenset({"a"}), frozenset({"b"}))
    assert changes.since(log, "r0", "r3") == Changes("r3", frozenset({"a", "c"}), frozenset({"a", "b"}))
    assert changes.since(log, "r1", "r3") == Changes("r3", frozenset({"a", "c"}), frozenset({"a", "b"}))
    assert changes.since(log, "unknown", "r3") is None
    assert changes.since(log, "r1", "r9") is None  # the log does not lead to the current revision
    assert not changes.since(log, "r3", "r3")


def test_bounded_and_overflow() -> None:
    log: changes.Log = []
    for i in range(changes.STEPS + 5):
        log = changes.logged(log, f"r{i}", f"r{i + 1}", [f"d{i}"], [])
    assert len(log) == changes.STEPS
    assert changes.since(log, "r0", f"r{changes.STEPS + 5}") is None  # trimmed away
    assert changes.since(log, "r10", f"r{changes.STEPS + 5}") is not None
    big = changes.logged(log, f"r{changes.STEPS + 5}", "big", [f"x{i}" for i in range(changes.IDS + 1)], [])
    assert changes.since(big, "r10", "big") is None  # a bulk publish is not logged id by id
    after = changes.logged(big, "big", "next", ["y"], [])
    assert changes.since(after, "big", "next") == Changes("next", frozenset({"y"}), frozenset())
    many = changes.logged(None, "s0", "s1", [f"e{i}" for i in range(changes.IDS - 10)], [])
    many = changes.logged(many, "s1", "s2", [f"f{i}" for i in range(20)], [])
    assert len(many) == 1 and changes.since(many, "s1", "s2") is not None  # the ids bound drops the oldest steps
