"""What changed in a knowledge base's searchable documents from one revision to another.

A store that keeps revisions (``stores.base.Revisioned``) logs, beside the revision itself, which documents each of
its last few revisions published and removed. An index derived from the store (the lexical one) then catches up by
what changed instead of reading every chunk again. The log is bounded: a revision it no longer reaches back to, or
a step too large to log (a bulk publish), answers None, and the derived index is rebuilt as before. Pure functions
over the log, a list of JSON objects that the stores keep where they keep the revision."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

STEPS = 16  # revisions logged at most
# Document ids the whole log holds at most: on Milvus the registry entry, with the logs of the index serving and of a
# re-index's shadow, is one string of at most 64 KiB (an id is 64 hex digits).
IDS = 256

Log = list[dict[str, Any]]


@dataclass(frozen=True)
class Changes:
    """From an earlier revision to ``revision``: ``removed``, the documents whose chunks left the search (deleted or
    replaced; some may never have been searchable); ``published``, the documents searchable now that were not, or
    that came back after a removal. Apply the removals first."""

    revision: str
    published: frozenset[str]
    removed: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.published or self.removed)


def logged(log: Log | None, before: str, after: str, published: Iterable[str], removed: Iterable[str]) -> Log:
    """``log`` with the step from revision ``before`` to ``after``, trimmed to its bounds."""
    added, gone = sorted(set(published)), sorted(set(removed))
    step: dict[str, Any] = {"from": before, "to": after, "published": added, "removed": gone}
    if len(added) + len(gone) > IDS:
        step = {"from": before, "to": after, "overflow": True}  # nothing before it can be caught up from
    out = [*(log or []), step][-STEPS:]
    while len(out) > 1 and sum(len(s.get("published", ())) + len(s.get("removed", ())) for s in out) > IDS:
        out.pop(0)
    return out


def since(log: Log | None, revision: str, current: str) -> Changes | None:
    """The changes from ``revision`` to ``current``, or None when the log does not reach back to ``revision``."""
    if revision == current:
        return Changes(current, frozenset(), frozenset())
    steps = log or []
    start = next((i for i, step in enumerate(steps) if step.get("from") == revision), None)
    if start is None:
        return None
    published: set[str] = set()
    removed: set[str] = set()
    at = revision
    for step in steps[start:]:
        if step.get("from") != at or step.get("overflow"):
            return None
        gone = set(step["removed"])
        removed |= gone
        published = (published - gone) | set(step["published"])
        at = step["to"]
    return Changes(at, frozenset(published), frozenset(removed)) if at == current else None
