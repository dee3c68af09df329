"""Query refinement before retrieval: the question is searched together with queries derived from it, and the
rankings are fused by reciprocal rank (RAG-Fusion). Four ways to derive them:

- ``keywords`` (no LLM): pseudo-relevance feedback: the terms that the first search's best passages use most and
  the question does not (weighted by their rarity in the knowledge base), appended to the question;
- ``multi_query``: the configured LLM rewrites the question a few ways;
- ``hyde``: the LLM writes a short passage that would answer it (a hypothetical document), which is searched;
- ``decompose``: the LLM splits it into simpler sub-questions, each searched.

The question's own ranking weighs as much as all its variants together, so a poor variant (a small model's
paraphrase) can reorder the question's hits but not replace them. Every derived query and its hits are traced."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from kb_service.core.errors import InvalidInput
from kb_service.core.records import ScoredChunk
from kb_service.retrieval.lexical import lexical_tokens
from kb_service.retrieval.multihop import CJK, fuse
from kb_service.retrieval.options import MAX_QUERY_CHARS, Refinement, SearchOptions, SearchResult

NEEDS_LLM = frozenset({"multi_query", "hyde", "decompose"})
FEEDBACK_HITS = 3  # ``keywords`` reads this many of the question's best passages
EXPANSION_TERMS = 5  # and appends this many of their terms
MAX_VARIANTS = 3  # queries an LLM may add per kind
FUSE_DEPTH = 30  # hits of each ranking that take part in the fusion
_WORD = re.compile(r"[^\W\d_][\w'’\-]{2,}", re.UNICODE)


class QueryWriter(Protocol):
    """Writes queries for a question with a language model (generation/query_writer.py)."""

    def write(self, kind: str, question: str) -> list[str]:
        """At most ``MAX_VARIANTS`` queries of ``kind`` (multi_query, hyde or decompose) for ``question``."""
        ...

    def follow(self, question: str, passages: Sequence[str]) -> list[str]:
        """At most ``MAX_VARIANTS`` queries for what ``question`` still needs, given the ``passages`` found."""
        ...


WriterSource = Callable[[], "QueryWriter | None"]  # loads the model on first use; None: no model configured


def feedback_terms(
    question: str, hits: Sequence[ScoredChunk], idf: Callable[[str], float], *, k: int = EXPANSION_TERMS
) -> list[str]:
    """The ``k`` words the best passages ``hits`` use most, that the question does not, weighted by ``idf`` (a
    word's rarity in the knowledge base; 0 for one that is not indexed), by the passage's rank and by how much of
    the question the passage holds (its share of the question's terms, by rarity: a passage that the embedding
    alone found, sharing no term with the question, lends no words)."""
    asked = set(lexical_tokens(question))
    weights = {t: idf(t) for t in asked}
    total = sum(weights.values())
    scores: dict[str, float] = {}
    for rank, hit in enumerate(hits[:FEEDBACK_HITS]):
        text = hit.chunk.text
        words = _cjk_words(text) if CJK.search(text) else _WORD.findall(text)
        held = set(lexical_tokens(text)) & asked
        coverage = sum(weights[t] for t in held) / total if total else 1.0
        if not words or not coverage:
            continue
        for word, count in Counter(words).items():  # in order of appearance: ties go to the earlier word
            terms = lexical_tokens(word)
            if not terms or set(terms) <= asked:
                continue
            tf = count / len(words)
            scores[word] = scores.get(word, 0.0) + tf * idf(word) * coverage / (1 + rank)
    seen: set[str] = set()
    out: list[str] = []
    for word in sorted(scores, key=lambda w: -scores[w]):
        key = word.lower()
        if scores[word] > 0 and key not in seen:
            seen.add(key)
            out.append(word)
        if len(out) == k:
            break
    return out


def _cjk_words(text: str) -> list[str]:
    return [w for w in lexical_tokens(text) if len(w) > 1]


def _model(writer: WriterSource | None, what: str) -> QueryWriter:
    """The query writer, loading the model now; InvalidInput naming ``what`` needs it when there is none."""
    model = writer() if writer is not None else None
    if model is None:
        raise InvalidInput(f"{what} needs a language model: set KB_LLM_BACKEND or KB_LLM_API_BASE")
    return model


def follow_up(writer: WriterSource | None) -> Callable[[str, Sequence[str]], list[str]]:
    """The LLM's next-hop queries (multi-hop with ``hop_strategy: llm``), loading the model now."""
    return _model(writer, "hop_strategy 'llm'").follow


def refined_search(
    search: Callable[[str, SearchOptions], SearchResult],
    question: str,
    options: SearchOptions,
    *,
    idf: Callable[[str], float],
    writer: WriterSource | None,
) -> SearchResult:
    """The question searched with ``search`` (which must not refine itself), then each refinement's queries, all
    fused. The variants skip the reranker: only the question's ranking is re-scored against the question."""
    start = time.perf_counter()
    depth = max(options.top_k, FUSE_DEPTH)
    one = replace(options, refine=(), top_k=depth)
    variant = replace(one, rerank=False, trace=False)
    needs_llm = [k for k in options.refine if k in NEEDS_LLM]
    model = _model(writer, f"refine {needs_llm[0]!r}") if needs_llm else None
    first = search(question, one)
    trace = first.trace
    rankings: list[tuple[Sequence[ScoredChunk], float]] = []
    for kind in options.refine:
        began = time.perf_counter()
        if kind == "keywords":
            terms = feedback_terms(question, first.hits, idf)
            queries = [f"{question} {' '.join(terms)}"] if terms else []
        else:
            assert model is not None
            queries = _usable(model.write(kind, question), question)
        found = [search(q, variant).hits for q in queries]
        trace.refinements.append(Refinement(kind, queries, found, (time.perf_counter() - began) * 1000))
        rankings += [(hits, 1.0) for hits in found]
    hits = first.hits[: options.top_k]
    if rankings:
        weight = float(len(rankings))  # the question weighs as much as its variants together
        hits = fuse([(first.hits, weight), *rankings], k=options.rrf_k, top_k=options.top_k, stage="refine")
    trace.timings_ms["refine"] = (time.perf_counter() - start) * 1000 - first.trace.timings_ms.get("total", 0.0)
    trace.timings_ms["total"] = (time.perf_counter() - start) * 1000
    return SearchResult(query=question, hits=hits, trace=trace)


def _usable(queries: Sequence[str], question: str) -> list[str]:
    """The model's queries that are new, not empty, and short enough to search."""
    out: list[str] = []
    seen = {question.strip().lower()}
    for q in queries:
        q = q.strip()[:MAX_QUERY_CHARS]
        if q and q.lower() not in seen:
            seen.add(q.lower())
            out.append(q)
    return out[:MAX_VARIANTS]
