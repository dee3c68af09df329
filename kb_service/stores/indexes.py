"""How a knowledge base's registry entry records its indexes, for the stores that keep the entry as JSON (Milvus,
pgvector): the entry itself is the index serving; ``shadow`` is the one a re-index is building beside it;
``retired`` are those a switch replaced, kept until the searches that started on them are done. Each has its own
``revision``. Pure functions over the entry; the stores read and write it under their write lock."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from kb_service.core.errors import KnowledgeBaseNotFound, ReindexInProgress, ReindexNotFound
from kb_service.core.records import KnowledgeBase
from kb_service.stores import changes
from kb_service.stores.serialize import kb_from_json, kb_to_json

Info = dict[str, Any]


class Role(StrEnum):
    LIVE = "live"
    SHADOW = "shadow"
    RETIRED = "retired"


WRITABLE = (Role.LIVE, Role.SHADOW)  # a retired index takes no more writes: its writers go to its successor


def _ident(entry: Info) -> tuple[str, str]:
    return entry.get("uid", ""), entry.get("index", "")


def _entry(info: Info, kb: KnowledgeBase) -> tuple[Role, Info] | None:
    me = (kb.uid, kb.index)
    if _ident(info) == me:
        return Role.LIVE, info
    shadow = info.get("shadow")
    if shadow is not None and _ident(shadow) == me:
        return Role.SHADOW, shadow
    for entry in info.get("retired", []):
        if _ident(entry) == me:
            return Role.RETIRED, entry
    return None


def role(info: Info | None, kb: KnowledgeBase) -> Role | None:
    """What ``kb`` (that very index) is to the knowledge base whose entry is ``info``; None: nothing (dropped)."""
    found = _entry(info, kb) if info is not None else None
    return found[0] if found is not None else None


def revision(info: Info | None, kb: KnowledgeBase) -> str | None:
    found = _entry(info, kb) if info is not None else None
    return None if found is None else str(found[1].get("revision", ""))


def bump(info: Info, kb: KnowledgeBase, *, published: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
    """A new revision for ``kb``'s index (its READY chunks changed: ``published`` and ``removed`` documents), logged
    with what changed (``stores.changes``)."""
    found = _entry(info, kb)
    if found is not None:
        entry, new = found[1], uuid.uuid4().hex
        entry["log"] = changes.logged(entry.get("log"), str(entry.get("revision", "")), new, published, removed)
        entry["revision"] = new


def changes_since(info: Info | None, kb: KnowledgeBase, revision: str) -> changes.Changes | None:
    found = _entry(info, kb) if info is not None else None
    if found is None:
        return None
    return changes.since(found[1].get("log"), revision, str(found[1].get("revision", "")))


def begun(info: Info | None, kb: KnowledgeBase, shadow: KnowledgeBase, params: dict[str, Any]) -> Info:
    """The entry with ``shadow`` recorded beside ``kb``; KnowledgeBaseNotFound unless ``kb`` serves,
    ReindexInProgress when a shadow is recorded already."""
    if info is None or role(info, kb) != Role.LIVE:
        raise KnowledgeBaseNotFound(kb.name)
    if "shadow" in info:
        raise ReindexInProgress(f"a re-index of knowledge base {kb.name!r} is recorded already")
    return {**info, "shadow": {**json.loads(kb_to_json(shadow)), "params": params, "revision": uuid.uuid4().hex}}


def shadow_of(info: Info) -> tuple[KnowledgeBase, dict[str, Any]] | None:
    shadow = info.get("shadow")
    if shadow is None:
        return None
    return kb_from_json(json.dumps(shadow)), dict(shadow.get("params", {}))


def retired_of(info: Info) -> list[KnowledgeBase]:
    return [kb_from_json(json.dumps(entry)) for entry in info.get("retired", [])]


def switched(info: Info | None, kb: KnowledgeBase, revision: str) -> Info | None:
    """The entry once its shadow serves, or None when ``kb``'s revision is no longer ``revision``: the shadow's
    identity, model and revision (an index derived from the shadow, such as the lexical one, stays valid), the old
    index retired. KnowledgeBaseNotFound unless ``kb`` serves; ReindexNotFound without a shadow."""
    if info is None or role(info, kb) != Role.LIVE:
        raise KnowledgeBaseNotFound(kb.name)
    if "shadow" not in info:
        raise ReindexNotFound(f"knowledge base {kb.name!r} has no re-index to switch to")
    if str(info.get("revision", "")) != revision:
        return None
    shadow = dict(info["shadow"])
    shadow.pop("params", None)
    old = {k: v for k, v in info.items() if k not in ("shadow", "retired", "log")}  # retired: no more changes
    return {
        **shadow,
        "name": info["name"],
        "description": info.get("description", ""),
        "created_at": info["created_at"],
        "retired": [*info.get("retired", []), old],
    }


def discardable(info: Info | None, index: KnowledgeBase) -> bool:
    """Whether ``index`` is the shadow or a retired index of the knowledge base whose entry is ``info``."""
    return role(info, index) in (Role.SHADOW, Role.RETIRED)


def without(info: Info, index: KnowledgeBase) -> Info:
    """The entry without its record of ``index`` (a discarded shadow, a retired index whose collections are gone)."""
    out = {k: v for k, v in info.items() if k != "shadow" or _ident(v) != (index.uid, index.index)}
    out["retired"] = [e for e in info.get("retired", []) if _ident(e) != (index.uid, index.index)]
    if not out["retired"]:
        del out["retired"]
    return out
