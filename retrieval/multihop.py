"""Iterative multi-hop retrieval without a language model. A question such as "Who is the mother of the director
of film X?" names X, not the director: one search finds X's page, whose text names the director, whose own page
holds the answer. Each hop reads the entities its best passages name and the question does not (capitalised
names; for Chinese text, jieba's keywords), looks each up, and the hops' rankings are fused by reciprocal rank,
a lookup weighted by how strongly its entity was named (a strong bridge's page ranks beside the question's own best
hits). Bounded by ``hops`` and a time budget; the trace keeps every hop's queries and hits."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from kb_service.core.records import ScoredChunk
from kb_service.retrieval.options import Hop, SearchOptions, SearchResult, SearchTrace

SEED_HITS = 3  # a hop follows the entities of its best passages, this many
BRIDGES_PER_HOP = 3  # entities searched for in the next hop
FOLLOW_DEPTH = 5  # hits of an entity's lookup that count: its page is near the top, the rest is noise
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_WORD = re.compile(r"[^\W\d_][\w'’.\-]*", re.UNICODE)
# Lower-case words that may join the parts of a name: "Kingdom of Great Britain", "Ludwig van Beethoven".
_JOINERS = {"of", "the", "de", "del", "der", "di", "da", "du", "van", "von", "la", "le", "y", "al", "bin", "ibn"}
MAX_NAME_WORDS = 6  # longer runs are lists of names (a cast) or titles run together
# Capitalised words that start sentences, not names.
_NOT_NAMES = {
    "a", "an", "the", "he", "she", "it", "they", "his", "her", "its", "their", "this", "that", "these", "those",
    "in", "on", "at", "by", "for", "from", "with", "after", "before", "during", "as", "but", "and", "or", "when",
    "while", "there", "here", "who", "what", "which", "where", "why", "how", "is", "was", "are", "were", "i", "we",
    "you", "born", "also", "do", "does", "did", "has", "have", "had", "can", "will", "would", "could", "should",
    "however", "although", "since", "until", "not", "no", "one", "some", "all",
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
    "december",
}  # fmt: skip


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def names(text: str) -> list[str]:
    """Runs of capitalised words (with the joiners between them) in ``text``, in order of appearance."""
    out: list[str] = []
    run: list[str] = []
    for match in _WORD.finditer(text):
        raw = match.group()
        word = raw.rstrip(".'’-")
        gap = text[match.start() - 1] if match.start() else " "
        if run and gap not in " -":  # a comma, a bracket: the name ended
            out.append(" ".join(run))
            run = []
        capital = word[:1].isupper() and (bool(run) or word.lower() not in _NOT_NAMES)
        if capital or (run and word.lower() in _JOINERS):
            run.append(word)
        elif run:
            out.append(" ".join(run))
            run = []
        if run and raw.endswith(".") and (len(word) > 2 or word.isupper()):  # a full stop, not "St." or "Jr."
            out.append(" ".join(run))
            run = []
    if run:
        out.append(" ".join(run))
    trimmed = [_trim(n) for n in out]
    return [n for n in trimmed if n and len(n.split()) <= MAX_NAME_WORDS]


def _trim(name: str) -> str:
    """A name without the joiners it ended on, nor a last possessive (Frank Sinatra's → Frank Sinatra)."""
    parts = name.split()
    while parts and parts[-1].lower() in _JOINERS:
        parts.pop()
    return re.sub(r"['’]s$", "", " ".join(parts))


def bridges(question: str, hits: Sequence[ScoredChunk], asked: set[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` entities the passages ``hits`` name and the question does not, each with its weight (the best 1):
    names in better-ranked passages, named more often and earlier, weigh more. A passage's own subject is no
    bridge; ``asked`` (lower-cased) are left out and grow by the chosen ones."""
    known = _words(question)
    scores: dict[str, float] = {}
    for rank, hit in enumerate(hits):
        text = hit.chunk.text
        found = _keywords(text) if CJK.search(text) else names(text)
        # its own subject: the title, else the first name it gives (a heading, an encyclopedia's first words)
        own = (hit.title or (found[0] if found else "")).lower()
        for position, name in enumerate(found):
            key = name.lower()
            if key in asked or _words(name) <= known or len(name) < 2 or (own and (key in own or own in key)):
                continue
            # a name of several words is more likely a page's title; early mentions are the passage's subject
            weight = (1.5 if " " in name else 1.0) / (1 + rank) / (1 + 0.1 * position)
            scores[name] = scores.get(name, 0.0) + weight
    chosen = sorted(scores, key=lambda n: -scores[n])[:k]
    asked.update(n.lower() for n in chosen)
    return [(name, scores[name] / scores[chosen[0]]) for name in chosen]


def _keywords(text: str) -> list[str]:
    import jieba.analyse

    return list(jieba.analyse.extract_tags(text, topK=8))


def fuse(
    lists: Sequence[tuple[Sequence[ScoredChunk], float]], *, k: int, top_k: int, stage: str = "hops"
) -> list[ScoredChunk]:
    """Weighted reciprocal rank fusion of rankings by chunk (the hops': the question's own ranking weighs one, an
    entity's lookup its bridge's weight); the fused score is kept as ``stage`` in each hit's stages."""
    scores: dict[str, float] = {}
    first: dict[str, ScoredChunk] = {}
    for ranking, weight in lists:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk.id] = scores.get(hit.chunk.id, 0.0) + weight / (k + rank)
            first.setdefault(hit.chunk.id, hit)
    ordered = sorted(scores, key=lambda cid: -scores[cid])[:top_k]
    return [replace(first[c], score=scores[c], stages={**first[c].stages, stage: scores[c]}) for c in ordered]


Follow = Callable[[str, Sequence[str]], list[str]]  # (question, passages found) -> what to search for next


def iterative_search(
    search: Callable[[str, SearchOptions], SearchResult],
    question: str,
    options: SearchOptions,
    *,
    follow: Follow | None = None,
) -> SearchResult:
    """``options.hops`` rounds of ``search`` (one hop each: ``search`` must not iterate itself), the first with
    the question, each later one with the entities the previous round's best passages bridge to (or, given
    ``follow``, the queries it writes from the question and those passages: an LLM's); stops early when nothing
    new is named or ``options.hop_budget_ms`` has passed."""
    start = time.perf_counter()
    one = replace(options, hops=1)
    # later searches look entities up: a name needs no document gate, and no reranking against the question (a
    # bridge page does not answer it)
    lookup = replace(one, rerank=False, gate=False, trace=False, refine=(), top_k=min(options.top_k, FOLLOW_DEPTH))
    first = search(question, one)
    trace: SearchTrace = first.trace
    asked = {question.lower()}
    # A question that names several things (a comparison: "which was born first, X or Y?") is decomposed: the
    # first round also looks each of them up, so the next one follows the bridges of all of them.
    parts = list(dict.fromkeys(names(question))) if not CJK.search(question) else []
    parts = parts if len(parts) > 1 and options.hops > 1 else []
    asked.update(name.lower() for name in parts)
    looked_up = [search(name, lookup).hits for name in parts]
    hops = [Hop([question, *parts], [first.hits, *looked_up], (time.perf_counter() - start) * 1000)]
    lists: list[tuple[Sequence[ScoredChunk], float]] = [(first.hits, 1.0), *((found, 1.0) for found in looked_up)]
    frontier = first.hits[:SEED_HITS] + [found[0] for found in looked_up if found]
    for _ in range(options.hops - 1):
        if (time.perf_counter() - start) * 1000 >= options.hop_budget_ms:
            break
        if follow is not None:
            written = [q for q in follow(question, [h.chunk.text for h in frontier]) if q.lower() not in asked]
            chosen = [(q, 1.0) for q in written[:BRIDGES_PER_HOP]]
            asked.update(q.lower() for q, _ in chosen)
        else:
            chosen = bridges(question, frontier, asked, BRIDGES_PER_HOP + len(parts))
        if not chosen:
            break
        began = time.perf_counter()
        found = [search(entity, lookup).hits for entity, _ in chosen]
        hops.append(Hop([entity for entity, _ in chosen], found, (time.perf_counter() - began) * 1000))
        lists += [(ranking, weight) for ranking, (_, weight) in zip(found, chosen, strict=True)]
        frontier = [ranking[0] for ranking in found if ranking]
    hits = fuse(lists, k=options.rrf_k, top_k=options.top_k) if len(lists) > 1 else first.hits
    trace.hops = hops
    trace.timings_ms["hops"] = (time.perf_counter() - start) * 1000 - first.trace.timings_ms.get("total", 0.0)
    trace.timings_ms["total"] = (time.perf_counter() - start) * 1000
    return SearchResult(query=question, hits=hits, trace=trace)
