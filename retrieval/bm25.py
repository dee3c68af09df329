"""BM25 (Lucene's variant, scored as bm25s scores it) that takes rows in and out without being built again.

bm25s precomputes the score of every (row, term) pair with the corpus-wide IDF and average length baked in, so any
change to the corpus means indexing all of it again (9 s at 100k chunks, for a one-document upload). Here the term
frequencies are kept instead, in immutable column-major segments, with a mask of the live rows; the document
frequencies and the total length follow each change (a removal reads the postings of the segments it touches, in
one vectorised pass), and a query's scores are computed for its own terms only. New rows go into a new segment;
the newest segment is merged into the one before it while it is not much smaller (so a row is copied O(log n)
times in all), and removed rows stay masked until they are a large share, then one compaction drops them. The
scores equal bm25s' on the same corpus (tests/retrieval/test_bm25.py). Each value is a snapshot: a change returns
a new one, and searches running on the old one are unaffected.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse

K1 = 1.5  # bm25s' defaults, which the lexical index used
B = 0.75
MERGE_RATIO = 4  # the newest segment is merged into the one before while it is at least a quarter of its size
DEAD_SHARE = 0.3  # past this share of removed rows, ``dead_share`` tells the owner to compact


@dataclass(frozen=True, eq=False)
class _Segment:
    """Term frequencies of consecutive rows, column-major: term t's postings are ``rows[indptr[t]:indptr[t+1]]``
    (row numbers within the segment) with frequencies ``tf``. Terms added to the vocabulary later have none."""

    indptr: np.ndarray  # int64, one more than the terms known when it was built
    rows: np.ndarray  # int32
    tf: np.ndarray  # float32
    lengths: np.ndarray  # float32 tokens per row

    @classmethod
    def of(cls, token_ids: Sequence[Sequence[int]], n_terms: int) -> _Segment:
        lengths = np.fromiter((len(t) for t in token_ids), np.float32, len(token_ids))
        rows = np.repeat(np.arange(len(token_ids), dtype=np.int32), lengths.astype(np.int64))
        terms = np.fromiter(itertools.chain.from_iterable(token_ids), np.int64, len(rows))
        ones = np.ones(len(rows), dtype=np.float32)
        matrix = scipy.sparse.csc_matrix((ones, (rows, terms)), shape=(len(token_ids), n_terms))  # sums repeats
        return cls._of(matrix, lengths)

    @classmethod
    def _of(cls, matrix: scipy.sparse.csc_matrix, lengths: np.ndarray) -> _Segment:
        matrix.sum_duplicates()
        matrix.sort_indices()
        return cls(
            matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data.astype(np.float32), lengths
        )

    @property
    def n_rows(self) -> int:
        return len(self.lengths)

    @property
    def n_terms(self) -> int:
        return len(self.indptr) - 1

    def matrix(self, n_terms: int) -> scipy.sparse.csc_matrix:
        indptr = np.concatenate([self.indptr, np.full(n_terms - self.n_terms, self.indptr[-1], dtype=np.int64)])
        return scipy.sparse.csc_matrix((self.tf, self.rows, indptr), shape=(self.n_rows, n_terms))

    def doc_freqs(self, live: np.ndarray, n_terms: int) -> np.ndarray:
        """Per term, how many of this segment's live rows (``live``: its slice of the mask) contain it."""
        counts = np.zeros(n_terms, dtype=np.float64)
        sizes = np.diff(self.indptr)
        nonempty = np.flatnonzero(sizes)
        if len(nonempty):  # each range runs to the next non-empty term's start, the end of this term's postings
            counts[nonempty] = np.add.reduceat(live[self.rows].astype(np.float64), self.indptr[nonempty])
        return counts


def _merged(segments: Sequence[_Segment], n_terms: int, keep: np.ndarray | None = None) -> _Segment:
    """One segment of ``segments``' rows in order (only the rows ``keep`` marks, when given)."""
    matrix = scipy.sparse.vstack([s.matrix(n_terms) for s in segments], format="csr")
    lengths = np.concatenate([s.lengths for s in segments])
    if keep is not None:
        matrix, lengths = matrix[keep], lengths[keep]
    return _Segment._of(matrix.tocsc(), lengths)


@dataclass(frozen=True, eq=False)
class Bm25:
    """A BM25 index over rows of tokens. ``vocab`` grows and is shared by the snapshots derived from one another;
    each knows its own ``n_terms``. The counts (document frequencies over live rows, their total length) are kept
    up to date by each change: a removal reads only the postings of the segments it touches."""

    vocab: dict[str, int]
    segments: tuple[_Segment, ...]
    live: np.ndarray  # bool per row, over the segments in order
    n_terms: int
    doc_freqs: np.ndarray  # float64 per term, over live rows
    total_len: float  # tokens in live rows
    n_live: int

    @classmethod
    def build(cls, corpus: Sequence[Sequence[str]]) -> Bm25:
        return cls({}, (), np.zeros(0, dtype=bool), 0, np.zeros(0), 0.0, 0).added(corpus)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the vocabulary as this snapshot knows it: the shared dict grows under later snapshots (a
        catch-up on another thread) while a save of this one is being written."""
        state = dict(self.__dict__)
        vocab = self.vocab.copy()  # one C-level copy, which no other thread interrupts
        state["vocab"] = {t: i for t, i in vocab.items() if i < self.n_terms}
        return state

    @property
    def n_rows(self) -> int:
        return len(self.live)

    @property
    def avg_len(self) -> float:
        return self.total_len / self.n_live if self.n_live else 0.0

    @property
    def dead_share(self) -> float:
        return 1 - self.n_live / self.n_rows if self.n_rows else 0.0

    @cached_property
    def _starts(self) -> list[int]:
        return list(itertools.accumulate((s.n_rows for s in self.segments[:-1]), initial=0)) if self.segments else []

    @cached_property
    def _norms(self) -> list[np.ndarray]:
        """Per segment and row, the length part of the term-frequency component's denominator."""
        avg = self.avg_len or 1.0
        return [(K1 * ((1 - B) + B * s.lengths / avg)).astype(np.float32) for s in self.segments]

    def token_ids(self, tokens: Sequence[str]) -> list[int]:
        """The ids of the tokens this snapshot knows (repeats kept: a repeated query term counts twice)."""
        n = self.n_terms
        return [i for t in tokens if (i := self.vocab.get(t)) is not None and i < n]

    def idf(self, token_id: int) -> float:
        """The term's inverse document frequency over the live rows (0 for a term no live row has)."""
        df = self.doc_freqs[token_id]
        return math.log(1 + (self.n_live - df + 0.5) / (df + 0.5)) if df else 0.0

    def scores(self, token_ids: Sequence[int]) -> np.ndarray:
        """Every row's BM25 score for the query terms ``token_ids`` (0 for removed rows), float32."""
        out = np.zeros(self.n_rows, dtype=np.float32)
        if not self.n_live:
            return out
        for t in token_ids:
            if self.doc_freqs[t] == 0:
                continue
            idf = np.float32(self.idf(t))
            for segment, start, norm in zip(self.segments, self._starts, self._norms, strict=True):
                if t >= segment.n_terms:
                    continue
                lo, hi = segment.indptr[t], segment.indptr[t + 1]
                if lo == hi:
                    continue
                rows, tf = segment.rows[lo:hi], segment.tf[lo:hi]
                out[start + rows] += idf * tf / (norm[rows] + tf)
        if self.n_live < self.n_rows:
            out[~self.live] = 0
        return out

    def added(self, corpus: Sequence[Sequence[str]]) -> Bm25:
        """This index with ``corpus``'s rows after its own."""
        if not corpus:
            return self
        vocab = self.vocab
        ids = [[vocab.setdefault(t, len(vocab)) for t in row] for row in corpus]
        n_terms = len(vocab)
        new = _Segment.of(ids, n_terms)
        freqs = np.zeros(n_terms)
        freqs[: self.n_terms] = self.doc_freqs
        freqs += new.doc_freqs(np.ones(new.n_rows, dtype=bool), n_terms)
        segments = [*self.segments, new]
        while len(segments) > 1 and segments[-1].n_rows * MERGE_RATIO >= segments[-2].n_rows:
            segments[-2:] = [_merged(segments[-2:], n_terms)]
        live = np.concatenate([self.live, np.ones(len(corpus), dtype=bool)])
        total = self.total_len + float(new.lengths.sum(dtype=np.float64))
        return Bm25(vocab, tuple(segments), live, n_terms, freqs, total, self.n_live + new.n_rows)

    def removed(self, rows: np.ndarray) -> Bm25:
        """This index with ``rows`` (positions) masked out."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[self.live[rows]] if len(rows) else rows
        if not len(rows):
            return self
        live = self.live.copy()
        live[rows] = False
        freqs, total = self.doc_freqs.copy(), self.total_len
        for segment, start in zip(self.segments, self._starts, strict=True):
            local = rows[(rows >= start) & (rows < start + segment.n_rows)] - start
            if not len(local):
                continue
            dead = np.zeros(segment.n_rows, dtype=bool)
            dead[local] = True
            postings = np.flatnonzero(dead[segment.rows])  # one gather over this segment's postings
            terms = np.searchsorted(segment.indptr, postings, side="right") - 1
            freqs[: segment.n_terms] -= np.bincount(terms, minlength=segment.n_terms)
            total -= float(segment.lengths[local].sum(dtype=np.float64))
        return Bm25(self.vocab, self.segments, live, self.n_terms, freqs, total, self.n_live - len(rows))

    def compacted(self) -> tuple[Bm25, np.ndarray]:
        """The live rows alone, in one segment, and their positions here (in order)."""
        keep = np.flatnonzero(self.live)
        segment = _merged(self.segments, self.n_terms, keep) if self.segments else None
        segments = (segment,) if segment is not None and segment.n_rows else ()
        live = np.ones(len(keep), dtype=bool)
        return Bm25(self.vocab, segments, live, self.n_terms, self.doc_freqs, self.total_len, len(keep)), keep
