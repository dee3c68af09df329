"""The extractive summariser: its vectorised n-gram counts and TF-IDF ranking against scikit-learn's, and what a
summary holds."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

from kb_service.core.records import Chunk, ParsedDocument, Section
from kb_service.ingest.summarize import ExtractiveSummarizer, _term_counts

SENTENCES = [
    "Pumps MOVE water.",
    "The  pump\tmoves water quickly; a b c.",
    "泵把水从低处送到高处。",
    "",
    "Ünïcödé wörds and 😀 emoji, too!",
    "!!",
    "x",
    "Water moves through the pump and the pipe.",
]


def test_term_counts_are_scikit_learns_char_wb_counts() -> None:
    expected = CountVectorizer(analyzer="char_wb", ngram_range=(2, 3)).fit_transform(SENTENCES)
    rows, terms, counts = _term_counts(SENTENCES)
    ours = sp.csr_matrix((counts, (rows, terms)), shape=(len(SENTENCES), int(terms.max()) + 1))
    # The same terms up to the order of the columns: equal per-sentence counts and equal overlaps between sentences.
    for i in range(len(SENTENCES)):
        assert sorted(ours[i].data) == sorted(expected[i].data), SENTENCES[i]
    assert ((ours @ ours.T) != (expected @ expected.T)).nnz == 0
    assert np.all(np.diff(rows) >= 0)  # ordered by sentence


def test_ranking_is_tfidf_cosine_to_the_centroid() -> None:
    sentences = [s for s in SENTENCES if s]
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(
        CountVectorizer(analyzer="char_wb", ngram_range=(2, 3)).fit_transform(sentences)
    )
    scores = tfidf @ np.asarray(tfidf.mean(axis=0)).ravel()
    assert ExtractiveSummarizer._rank(sentences) == list(np.argsort(-scores, kind="stable"))
    assert ExtractiveSummarizer._rank(["!", "?"]) == [0, 1]  # no terms at all: document order


def _chunk(text: str, ord_: int) -> Chunk:
    return Chunk(id=f"d:{ord_}", doc_id="d", ord=ord_, text=text, hash=str(ord_))


def test_summary_holds_title_headings_and_central_sentences_in_order_within_budget() -> None:
    text = (
        "Pumps move water. Centrifugal pumps move water with an impeller. "
        "Lunch is served at noon. Pumps need priming before they move water. "
        "The car park closes at six."
    )
    doc = ParsedDocument(
        source="p.md", title="Pumps", format="markdown", sections=[Section(text, heading="Pumps > Priming")]
    )
    summarizer = ExtractiveSummarizer(lambda t: len(t.split()), budget_tokens=20)
    summary = summarizer.summarize(doc, [_chunk("a", 0), _chunk("b", 1)])
    lines = summary.split("\n")
    assert lines[:2] == ["Pumps", "Priming"]
    assert sum(len(line.split()) for line in lines) <= 20
    assert "Pumps need priming before they move water." in lines  # the most central sentences are kept
    assert "The car park closes at six." not in lines and "Lunch is served at noon." not in lines
    kept = [text.index(line) for line in lines[2:]]
    assert kept == sorted(kept)  # in document order
    assert summarizer.summarize(doc, [_chunk("only chunk", 0)]) == "only chunk"  # one chunk: the chunk itself
