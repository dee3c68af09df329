"""The incremental BM25 scores exactly as bm25s does over the same rows, however it got them: built at once, added
in pieces, with rows removed, compacted."""

from __future__ import annotations

import pickle
from pathlib import Path

import bm25s
import numpy as np
import pytest

from kb_service.retrieval.bm25 import Bm25
from kb_service.retrieval.lexical import lexical_tokens

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
QUERIES = ["re-index embedding model", "Milvus Lite search latency", "PostgreSQL pgvector HNSW index", "知识库 检索"]


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    """Real text: the paragraphs of this repository's own documents (English, some Chinese), and an empty row."""
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", ROOT / "docs" / "BENCHMARKS.md"])
    rows = [lexical_tokens(p) for p in text.split("\n\n") if p.strip()]
    assert len(rows) > 200
    return [*rows, []]


def _reference(rows: list[list[str]]) -> bm25s.BM25:
    ref = bm25s.BM25()
    ref.index(rows, show_progress=False)
    return ref


def _same_scores(ours: Bm25, rows: list[list[str]], positions: np.ndarray | None = None) -> None:
    ref = _reference(rows)
    for query in QUERIES + [" ".join(rows[3][:4]), "index index index"]:
        tokens = lexical_tokens(query)
        expected = np.asarray(ref.get_scores_from_ids(ref.get_tokens_ids(tokens)))
        got = ours.scores(ours.token_ids(tokens))
        got = got if positions is None else got[positions]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert expected.max() > 0 or query.startswith("知识库")


def test_built_at_once_and_in_pieces(corpus: list[list[str]]) -> None:
    _same_scores(Bm25.build(corpus), corpus)
    grown = Bm25.build(corpus[:100])
    for start in range(100, len(corpus), 7):
        grown = grown.added(corpus[start : start + 7])
    assert len(grown.segments) < 12  # small segments merged into larger ones as they come
    _same_scores(grown, corpus)


def test_removed_rows_and_compaction(corpus: list[list[str]]) -> None:
    index = Bm25.build(corpus)
    gone = np.arange(0, len(corpus), 5)
    keep = np.setdiff1d(np.arange(len(corpus)), gone)
    kept_rows = [corpus[i] for i in keep]
    removed = index.removed(gone)
    assert removed.n_live == len(keep) and index.n_live == len(corpus)  # a new snapshot; the old one unchanged
    _same_scores(index, corpus)
    _same_scores(removed, kept_rows, keep)
    assert float(removed.scores(removed.token_ids(corpus[0]))[0]) == 0.0
    compacted, positions = removed.compacted()
    np.testing.assert_array_equal(positions, keep)
    assert compacted.n_rows == len(keep) and len(compacted.segments) == 1
    _same_scores(compacted, kept_rows)
    again = compacted.added(corpus[:10])  # rows come back after a compaction, with terms the vocabulary knows
    _same_scores(again, kept_rows + corpus[:10])


def test_everything_removed_and_unknown_terms() -> None:
    index = Bm25.build([["alpha", "beta"], ["beta"]])
    assert index.token_ids(["gamma", "beta", "beta"]) == [1, 1]
    empty = index.removed(np.array([0, 1]))
    assert empty.n_live == 0 and not empty.scores(empty.token_ids(["beta"])).any()
    later = index.added([["gamma"]])
    assert index.token_ids(["gamma"]) == []  # a snapshot knows the terms of its own rows only
    assert later.token_ids(["gamma"]) == [2]
    assert Bm25.build([]).scores([]).shape == (0,)


def test_a_snapshot_pickles_with_its_own_vocabulary(corpus: list[list[str]]) -> None:
    older = Bm25.build(corpus[:50])
    newer = older.added([["zyzzyva", "quokka"], *corpus[50:]])  # grows the vocabulary the two share
    loaded = pickle.loads(pickle.dumps(older))
    assert "zyzzyva" in older.vocab and "zyzzyva" not in loaded.vocab and len(loaded.vocab) == older.n_terms
    _same_scores(loaded, corpus[:50])
    assert pickle.loads(pickle.dumps(newer)).token_ids(["quokka"]) == newer.token_ids(["quokka"])
