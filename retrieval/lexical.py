"""The lexical side of hybrid retrieval: BM25 (``retrieval/bm25.py``) over English words (stemmed, stopwords
removed) and Chinese words (jieba's search-mode segmentation), one index per knowledge base.

The index is derived from the store and follows its revision token for the knowledge base (publish, replace,
delete move it): caught up by the documents the store logged as published and removed since (``stores.changes``),
or built again from every chunk where the log does not reach back. It is persisted under the data directory so a
restart does not rebuild it. Any number of API processes can share one store this way; each keeps its own copy of
the derived index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import threading
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from kb_service.core.records import Chunk, KnowledgeBase, ScoredChunk, document_context
from kb_service.retrieval.bm25 import DEAD_SHARE, Bm25
from kb_service.stores.base import Revisioned, VectorStore, chunks_of
from kb_service.stores.changes import Changes
from kb_service.stores.filters import Filter

log = logging.getLogger(__name__)

# Chunks per store read when an index is built: Milvus Lite sorts a query iterator's remaining rows for each page, so
# large pages read an index's chunks in half the time of small ones.
READ_BATCH = 16_000
SAVED = "index.pkl"  # the saved index in its folder
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


@cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@cache
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def lexical_tokens(text: str) -> list[str]:
    """Terms for BM25: NFKC-folded, lowercased; Latin-script words stemmed without stopwords, CJK runs segmented
    into words (search mode, so long words also yield their parts)."""
    words: list[str] = []
    out: list[str] = []
    for run in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if "\u3400" <= run[0] <= "\ufaff":
            out.extend(w for w in _jieba().lcut_for_search(run) if w.strip())
        elif run not in _stopwords():
            words.append(run)
    return _stemmer().stemWords(words) + out if words else out


@dataclass(frozen=True, eq=False)
class _Rows:
    """The chunks of an index's rows, and where they are, so that masks and lookups need no walk over the rows. The
    two dicts are shared by the snapshots derived from one another and only grow: an entry may point past an earlier
    snapshot's rows, or to a row it has removed, and lookups check."""

    chunks: list[Chunk]
    doc_of_row: np.ndarray  # int32: each row's document number
    doc_number: dict[str, int]  # document id -> its number (stable across snapshots)
    row_of: dict[str, int]  # chunk id -> its latest row

    @classmethod
    def of(cls, chunks: list[Chunk]) -> _Rows:
        return cls([], np.zeros(0, dtype=np.int32), {}, {}).extended(chunks)

    def extended(self, chunks: Sequence[Chunk]) -> _Rows:
        numbers, row_of, base = self.doc_number, self.row_of, len(self.chunks)
        docs = np.fromiter((numbers.setdefault(c.doc_id, len(numbers)) for c in chunks), np.int32, len(chunks))
        row_of.update((c.id, base + i) for i, c in enumerate(chunks))
        return _Rows([*self.chunks, *chunks], np.concatenate([self.doc_of_row, docs]), numbers, row_of)

    def kept(self, positions: np.ndarray) -> _Rows:
        """Only the rows at ``positions``, numbered anew (after a compaction)."""
        return _Rows.of([self.chunks[i] for i in positions])

    def of_documents(self, doc_ids: Iterable[str]) -> np.ndarray:
        """The rows of these documents."""
        numbers = [n for d in doc_ids if (n := self.doc_number.get(d)) is not None]
        return np.flatnonzero(np.isin(self.doc_of_row, numbers)) if numbers else np.zeros(0, dtype=np.int64)


@dataclass
class LexicalIndex:
    """BM25 over the chunks of one knowledge base at one revision, and over whole documents (all their chunks'
    terms together) for the document gate. ``updated`` brings it to a later revision from what changed."""

    revision: str
    rows: _Rows  # one per row of ``bm25``, removed ones included until a compaction
    bm25: Bm25 | None  # None when the knowledge base has no chunks
    doc_ids: list[str] = field(default_factory=list)  # one per row of ``doc_bm25``
    doc_bm25: Bm25 | None = None
    # The last query's chunk scores: a search scores the same query globally and inside the gate.
    _last: tuple[str, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, chunks: list[Chunk], revision: str, titles: Mapping[str, str] | None = None) -> LexicalIndex:
        """``titles`` (document id -> context line): each chunk is indexed under its document's context too."""
        if not chunks:
            return cls(revision, _Rows.of([]), None)
        tokens, doc_ids, doc_tokens = _rows(chunks, titles)
        return cls(revision, _Rows.of(chunks), Bm25.build(tokens), doc_ids, Bm25.build(doc_tokens))

    def updated(
        self, changes: Changes, published: list[Chunk], titles: Mapping[str, str] | None = None
    ) -> LexicalIndex:
        """This index at ``changes.revision``: the chunks of ``changes.removed`` out, ``published`` (the chunks of
        ``changes.published``, READY) in."""
        gone = changes.removed | changes.published  # a document published again replaces its earlier rows
        rows, bm25, doc_ids, doc_bm25 = self.rows, self.bm25, self.doc_ids, self.doc_bm25
        if bm25 is not None and doc_bm25 is not None:
            bm25 = bm25.removed(rows.of_documents(gone))
            doc_bm25 = doc_bm25.removed(np.fromiter((i for i, d in enumerate(doc_ids) if d in gone), np.int64))
        if published:
            tokens, new_docs, doc_tokens = _rows(published, titles)
            bm25 = bm25.added(tokens) if bm25 is not None else Bm25.build(tokens)
            doc_bm25 = doc_bm25.added(doc_tokens) if doc_bm25 is not None else Bm25.build(doc_tokens)
            rows, doc_ids = rows.extended(published), [*doc_ids, *new_docs]
        if bm25 is None or not bm25.n_live:
            return LexicalIndex(changes.revision, _Rows.of([]), None)
        if bm25.dead_share > DEAD_SHARE:
            bm25, kept = bm25.compacted()
            rows = rows.kept(kept)
        if doc_bm25 is not None and doc_bm25.dead_share > DEAD_SHARE:
            doc_bm25, kept = doc_bm25.compacted()
            doc_ids = [doc_ids[i] for i in kept]
        return LexicalIndex(changes.revision, rows, bm25, doc_ids, doc_bm25)

    @property
    def _live(self) -> np.ndarray:
        return self.bm25.live if self.bm25 is not None else np.zeros(0, dtype=bool)

    @property
    def chunks(self) -> list[Chunk]:
        """The chunks indexed (live ones)."""
        return [self.rows.chunks[i] for i in np.flatnonzero(self._live)]

    def chunk(self, chunk_id: str) -> Chunk | None:
        """The indexed chunk of that id (for dense hits), or None."""
        row = self.rows.row_of.get(chunk_id)
        if row is None or row >= len(self.rows.chunks) or not self._live[row]:
            return None
        found = self.rows.chunks[row]
        return found if found.id == chunk_id else None

    def entries(self, doc_id: str) -> int:
        """How many indexed chunks belong to ``doc_id`` (0 once it is deleted)."""
        return int(np.count_nonzero(self._live[self.rows.of_documents([doc_id])]))

    def idf(self, word: str) -> float:
        """How rare ``word`` is among the chunks: the highest BM25 idf of its terms (0 when none is indexed)."""
        if self.bm25 is None:
            return 0.0
        return max((self.bm25.idf(i) for i in self.bm25.token_ids(lexical_tokens(word))), default=0.0)

    def search_documents(self, query: str, *, top_k: int) -> list[tuple[str, float]]:
        """Document ids ranked by BM25 over each document's whole text, best first."""
        if self.doc_bm25 is None:
            return []
        ids = self.doc_bm25.token_ids(lexical_tokens(query))
        if not ids:
            return []
        scores = self.doc_bm25.scores(ids)
        return [(self.doc_ids[i], float(scores[i])) for i in _top_positive(scores, top_k)]

    def search(
        self, query: str, *, top_k: int, doc_ids: Sequence[str] | None = None, filters: Filter | None = None
    ) -> list[ScoredChunk]:
        """Chunks ranked by descending BM25 score; chunks without any query term are left out."""
        scores = self._chunk_scores(query)
        if scores is None:
            return []
        if doc_ids is not None or filters:
            scores = scores * self._mask(doc_ids, filters)
        chunks = self.rows.chunks
        return [
            ScoredChunk(chunk=chunks[i], score=float(scores[i]), source=chunks[i].metadata.get("source", ""))
            for i in _top_positive(scores, top_k)
        ]

    def _chunk_scores(self, query: str) -> np.ndarray | None:
        """BM25 score of every row (None when no query term is indexed), reused for a repeated query."""
        last = self._last  # one read: another thread may replace it
        if last is not None and last[0] == query:
            return last[1]
        if self.bm25 is None:
            return None
        ids = self.bm25.token_ids(lexical_tokens(query))
        if not ids:
            return None
        scores = self.bm25.scores(ids)
        self._last = (query, scores)
        return scores

    def _mask(self, doc_ids: Sequence[str] | None, filters: Filter | None) -> np.ndarray:
        chunks = self.rows.chunks
        mask = np.ones(len(chunks), dtype=np.float32)
        if doc_ids is not None:
            inside = np.zeros(len(chunks), dtype=np.float32)
            inside[self.rows.of_documents(doc_ids)] = 1
            mask *= inside
        if filters:
            mask *= np.fromiter((filters.matches(c) for c in chunks), np.float32, len(chunks))
        return mask

    def save(self, folder: Path) -> None:
        """Written aside, then moved into place: several processes on one data directory may save at once."""
        mine = f"{os.getpid()}-{threading.get_ident()}"
        tmp = folder.with_name(f"{folder.name}.{mine}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with (tmp / SAVED).open("wb") as f:
            state = (self.revision, self.rows.chunks, self.bm25, self.doc_ids, self.doc_bm25)
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        old = folder.with_name(f"{folder.name}.{mine}.old")
        with contextlib.suppress(FileNotFoundError):
            folder.rename(old)
        try:
            tmp.rename(folder)
        except OSError:  # another process has just put its index there: as good as this one
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        with (folder / SAVED).open("rb") as f:
            revision, chunks, bm25, doc_ids, doc_bm25 = pickle.load(f)
        return cls(revision, _Rows.of(chunks), bm25, doc_ids, doc_bm25)


def _rows(
    chunks: Sequence[Chunk], titles: Mapping[str, str] | None
) -> tuple[list[list[str]], list[str], list[list[str]]]:
    """The terms of each chunk (under its document's context line, with ``titles``), and of each document of them
    (its context once, then all its chunks' terms) with the documents' ids in order."""
    plain = [lexical_tokens(c.text) for c in chunks]
    tokens = plain
    by_doc: dict[str, list[str]] = {}
    if titles is not None:  # each chunk under its document's context; the document itself holds it once
        heads = {d: lexical_tokens(t) for d, t in titles.items()}
        tokens = [
            terms if c.text.startswith(titles.get(c.doc_id, "")) else heads.get(c.doc_id, []) + terms
            for c, terms in zip(chunks, plain, strict=True)
        ]
        by_doc = {d: list(heads.get(d, [])) for d in dict.fromkeys(c.doc_id for c in chunks)}
    for chunk, terms in zip(chunks, plain, strict=True):  # the gate's whole-document BM25
        by_doc.setdefault(chunk.doc_id, []).extend(terms)
    return tokens, list(by_doc), list(by_doc.values())


def _saved_index(folder: Path) -> LexicalIndex | None:
    """The index saved in ``folder``, or None. Another process may be replacing it this moment: a load that fails is
    tried once more before the cache counts as damaged (rebuilt, never fatal)."""
    for attempt in (1, 2):
        if not (folder / SAVED).exists():
            return None  # none yet (or one saved by an earlier version, which is rebuilt)
        try:
            return LexicalIndex.load(folder)
        except Exception as exc:
            if attempt == 2:
                log.warning("lexical index cache at %s unreadable (%s); rebuilding", folder, exc)
                return None
            time.sleep(0.2)
    return None


def _top_positive(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Positions of the ``top_k`` highest scores above zero, best first (ties keep index order)."""
    k = min(top_k, int(np.count_nonzero(scores)))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


class LexicalIndexes:
    """One LexicalIndex per knowledge base, kept current with the store's revision token: caught up from the
    store's log of changes when it reaches back to the index's revision, else built again from every chunk."""

    def __init__(self, store: VectorStore, root: Path, *, chunk_context: str = "none") -> None:
        self.store = store
        self.root = root
        self.titled = chunk_context == "document"
        self._indexes: dict[str, LexicalIndex] = {}
        self._lock = threading.Lock()
        self._saving: dict[str, threading.Thread] = {}  # per knowledge base, the save under way

    def get(self, kb: KnowledgeBase) -> LexicalIndex:
        if not isinstance(self.store, Revisioned):  # no way to tell the index is current: read the chunks again
            return self._build(kb, "")
        revision = self.store.kb_revision(kb)
        index = self._indexes.get(kb.key)
        if index is not None and index.revision == revision:
            return index
        with self._lock:
            index = self._indexes.get(kb.key)
            if index is None or index.revision != revision:
                index = self._current(kb, index, revision)
                self._indexes[kb.key] = index
        return index

    def cached(self, kb: KnowledgeBase) -> LexicalIndex | None:
        """The index held in memory for ``kb``, whatever its revision (None when none), without reading the store."""
        return self._indexes.get(kb.key)

    def _current(self, kb: KnowledgeBase, index: LexicalIndex | None, revision: str) -> LexicalIndex:
        folder = self._folder(kb)
        if index is None:
            index = _saved_index(folder)
            if index is not None and index.revision == revision:
                return index
        caught_up = self._caught_up(kb, index) if index is not None else None
        if caught_up is not None:
            self._save_later(kb, caught_up, folder)
            return caught_up
        index = self._build(kb, revision)
        index.save(folder)
        return index

    def _caught_up(self, kb: KnowledgeBase, index: LexicalIndex) -> LexicalIndex | None:
        """``index`` brought to the store's current revision by what changed, or None when the store cannot say."""
        assert isinstance(self.store, Revisioned)
        changes = self.store.changes_since(kb, index.revision)
        if changes is None:
            return None
        docs = self.store.get_documents(kb, sorted(changes.published))
        published = chunks_of(self.store, kb, list(docs.values()))
        titles = {d.id: document_context(d.title, d.source) for d in docs.values()} if self.titled else None
        return index.updated(changes, published, titles)

    def _save_later(self, kb: KnowledgeBase, index: LexicalIndex, folder: Path) -> None:
        """Save a caught-up index in the background (a save is O(chunks), a catch-up is not); one at a time per
        knowledge base, and a save skipped meanwhile is not missed much: the next start catches up from it."""
        running = self._saving.get(kb.key)
        if running is not None and running.is_alive():
            return

        def save() -> None:
            try:
                index.save(folder)
            except OSError as exc:  # the data directory went away (the knowledge base was dropped): nothing to keep
                log.debug("lexical index of %s not saved: %s", kb.name, exc)
            except Exception:  # never fatal: the next start catches up from an older copy, or rebuilds
                log.warning("lexical index of %s not saved", kb.name, exc_info=True)

        thread = threading.Thread(target=save, name=f"lexical-save-{kb.key}", daemon=True)
        self._saving[kb.key] = thread
        thread.start()

    def _build(self, kb: KnowledgeBase, revision: str) -> LexicalIndex:
        chunks = [c for batch in self.store.iter_chunks(kb, batch_size=READ_BATCH) for c in batch]
        if not self.titled:
            return LexicalIndex.build(chunks, revision)
        ids = list(dict.fromkeys(c.doc_id for c in chunks))
        titles: dict[str, str] = {}
        for start in range(0, len(ids), READ_BATCH):
            docs = self.store.get_documents(kb, ids[start : start + READ_BATCH])
            titles.update((doc_id, document_context(doc.title, doc.source)) for doc_id, doc in docs.items())
        return LexicalIndex.build(chunks, revision, titles)

    def _folder(self, kb: KnowledgeBase) -> Path:
        """Where ``kb``'s index is saved: one folder per way of indexing, so a changed setting never loads the
        other's index."""
        return self.root / (f"{kb.key}.titled" if self.titled else kb.key)

    def forget(self, kb: KnowledgeBase) -> None:
        """Drop the cached index of a knowledge base (when it is dropped)."""
        with self._lock:
            self._indexes.pop(kb.key, None)
            running = self._saving.pop(kb.key, None)
            if running is not None:
                running.join()
            shutil.rmtree(self.root / kb.key, ignore_errors=True)
            shutil.rmtree(self.root / f"{kb.key}.titled", ignore_errors=True)
