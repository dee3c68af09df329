"""Document summaries for the document-level retrieval stage: extractive by default, an LLM when configured."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer

from core.records import Chunk, ParsedDocument

SENTENCE_END = re.compile(r"(?<=[。！？；!?])|(?<=[.;])\s+|\n+")
MAX_SENTENCES = 4000
HEADINGS_SHARE = 0.25


class Summarizer(Protocol):
    def summarize(self, doc: ParsedDocument, chunks: Sequence[Chunk]) -> str:
        """A text (within the embedding model's token limit) standing for the whole document."""


class ExtractiveSummarizer:
    """Title, headings and the sentences most central to the document (TF-IDF cosine to its centroid),
    kept in document order within a token budget. Character n-grams make it work for Chinese too."""

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
        """Sentence indices, most central first: TF-IDF (sublinear tf) cosine to the document's mean vector."""
        if len(sentences) < 2:
            return list(range(len(sentences)))
        counts = _term_counts(sentences)
        if counts.nnz == 0:  # nothing but punctuation
            return list(range(len(sentences)))
        matrix = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
        centroid = np.asarray(matrix.mean(axis=0)).ravel()
        scores = matrix @ centroid
        return list(np.argsort(-scores, kind="stable"))


# Character 2–3-grams within word boundaries (scikit-learn's ``char_wb``), lowercased: language-agnostic, so Chinese
# needs no segmenter. On SciFact they make better summaries than words (two-stage + rerank nDCG@10 0.742 vs 0.739).
_terms = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)).build_analyzer()


def _term_counts(sentences: Sequence[str]) -> sp.csr_matrix:
    """Sentence × term counts. Built directly: a per-document ``CountVectorizer`` costs more in set-up than in work
    (this and the TF-IDF weighting run once per multi-chunk document, beside the embedding model)."""
    vocabulary: dict[str, int] = {}
    indices: list[int] = []
    indptr = [0]
    for sentence in sentences:
        indices.extend(vocabulary.setdefault(term, len(vocabulary)) for term in _terms(sentence))
        indptr.append(len(indices))
    matrix = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(sentences), max(1, len(vocabulary))))
    matrix.sum_duplicates()
    return matrix
