"""Document summaries for the document-level retrieval stage: extractive by default, an LLM when configured."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from kb_service.core.records import Chunk, ParsedDocument

SENTENCE_END = re.compile(r"(?<=[。！？；!?])|(?<=[.;])\s+|\n+")
MAX_SENTENCES = 4000
HEADINGS_SHARE = 0.25


class Summarizer(Protocol):
    @property
    def concurrency(self) -> int:
        """Documents the ingest pipeline may prepare at once (a model server takes several requests in flight)."""

    @property
    def calls_model(self) -> bool:
        """Whether a summary costs a model call: the pipeline then reuses the stored summary of known content."""

    def summarize(self, doc: ParsedDocument, chunks: Sequence[Chunk]) -> str:
        """A text (within the embedding model's token limit) standing for the whole document."""


class ExtractiveSummarizer:
    """Title, headings and the sentences most central to the document (TF-IDF cosine to its centroid),
    kept in document order within a token budget. Character n-grams make it work for Chinese too."""

    concurrency = 1
    calls_model = False

    def __init__(self, count_tokens: Callable[[str], int], *, budget_tokens: int) -> None:
        self.count_tokens = count_tokens
        self.budget = budget_tokens

    def summarize(self, doc: ParsedDocument, chunks: Sequence[Chunk]) -> str:
        if len(chunks) == 1:
            return chunks[0].text  # a one-chunk document is its own best summary (and reuses its vector)
        parts = [doc.title]
        used = self.count_tokens(doc.title)
        for heading in dict.fromkeys(h.split(" > ")[-1] for s in doc.sections if (h := s.heading)):
            cost = self.count_tokens(heading)
            if heading == doc.title or used + cost > self.budget * HEADINGS_SHARE:
                continue
            parts.append(heading)
            used += cost
        sentences = self._sentences(doc.text)
        chosen: list[int] = []
        for i in self._rank(sentences):
            cost = self.count_tokens(sentences[i])
            if used + cost <= self.budget:
                chosen.append(i)
                used += cost
            if used >= self.budget * 0.95:
                break
        parts.extend(sentences[i] for i in sorted(chosen))
        return "\n".join(parts)

    @staticmethod
    def _sentences(text: str) -> list[str]:
        sentences = [s.strip() for s in SENTENCE_END.split(text) if s and len(s.strip()) > 1]
        if len(sentences) > MAX_SENTENCES:  # very long documents: an even sample keeps the cost bounded
            step = len(sentences) / MAX_SENTENCES
            sentences = [sentences[int(i * step)] for i in range(MAX_SENTENCES)]
        return sentences

    @staticmethod
    def _rank(sentences: list[str]) -> list[int]:
        """Sentence indices, most central first: TF-IDF cosine to the document's mean vector (scikit-learn's
        ``TfidfTransformer(sublinear_tf=True)`` weighting: tf 1 + ln(count), smoothed idf, rows of unit length)."""
        n = len(sentences)
        if n < 2:
            return list(range(n))
        rows, terms, counts = _term_counts(sentences)
        if len(counts) == 0:  # nothing but punctuation
            return list(range(n))
        df = np.bincount(terms)
        weights = (np.log(counts) + 1.0) * (np.log((1.0 + n) / (1.0 + df)) + 1.0)[terms]
        weights /= np.sqrt(np.bincount(rows, weights * weights, minlength=n))[rows]
        centroid = np.bincount(terms, weights) / n
        scores = np.bincount(rows, weights * centroid[terms], minlength=n)
        return list(np.argsort(-scores, kind="stable"))


# Character 2–3-grams within word boundaries, lowercased, exactly as scikit-learn's ``char_wb`` analyzer cuts them:
# language-agnostic, so Chinese needs no segmenter. On SciFact they make better summaries than words (two-stage +
# rerank nDCG@10 0.742 vs 0.739).
_SPACE = 32


def _term_counts(sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sentence, term, count) for every term of every sentence, ordered by sentence then term.

    Vectorised over the document: its words, lowercased and padded with a space each side as ``char_wb`` pads them,
    are laid end to end as code points; an n-gram belongs to one word exactly when it holds no two adjacent spaces
    (a word has none inside, and two padded words meet at two). Each n-gram is packed into one integer, 21 bits per
    code point; a trigram's first code point is counted from 1, so no trigram shares a number with a bigram.

    scikit-learn's analyzer and ``TfidfTransformer`` took several times longer (their per-call set-up outweighs the
    work on a document of ten sentences; docs/BENCHMARKS.md); the counts are the same, and the order differs only
    between sentences whose scores tie exactly."""
    padded = [" " + "  ".join(words) + " " if (words := s.lower().split()) else "" for s in sentences]
    chars = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(chars) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    sentence = np.repeat(np.arange(len(sentences)), [len(p) for p in padded])
    space = chars == _SPACE
    bigram_ok = ~(space[:-1] & space[1:])
    trigram_ok = bigram_ok[:-1] & bigram_ok[1:]
    shift = np.uint64(21)
    bigrams = (chars[:-1] << shift) | chars[1:]  # below 2**42
    trigrams = ((chars[:-2] + np.uint64(1)) << (shift + shift)) | (chars[1:-1] << shift) | chars[2:]  # 2**42 and up
    grams = np.concatenate([bigrams[bigram_ok], trigrams[trigram_ok]])
    owners = np.concatenate([sentence[:-1][bigram_ok], sentence[:-2][trigram_ok]])
    vocabulary, terms = np.unique(grams, return_inverse=True)
    pairs, counts = np.unique(owners * len(vocabulary) + terms.ravel(), return_counts=True)
    return pairs // len(vocabulary), pairs % len(vocabulary), counts
