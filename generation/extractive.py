"""The query-focused extractive composer: an honest answer without a capable language model.

The sentences of the retrieved sources are scored by how much of the question's content they hold (its terms
weighted by their rarity among those sentences, a sentence's neighbour counting for half, numbers required when
the question asks for one). The best few, near-duplicates left out, are quoted in source order, each cited, after
a short lead-in in the question's language. When no sentence holds enough of the question, it declines."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kb_service.generation.claims import list_prefix, sentences
from kb_service.generation.prompt import REFUSAL, Language, Source
from kb_service.generation.support import question_terms, terms, untrimmed

MAX_SENTENCES = 3
DECLINE_BELOW = 0.5  # weighted share of the question's terms that the best sentence (and neighbour) must hold
KEEP_RATIO = 0.8  # further sentences must score this share of the best one
DUPLICATE = 0.7  # share of the shorter sentence's terms in a chosen one above which it repeats that one
MAX_SENTENCE_CHARS = 600
LEAD_IN = {"en": "According to the sources:", "zh": "根据资料："}
_ASKS_NUMBER = re.compile(
    r"\bhow (many|much|long|old|far|big|tall)\b|\bwhat (year|date|percentage|number)\b|\bwhen\b|"
    r"多少|几[个年月日天次人岁名家]|哪一?年|何时|什么时候|人数|数量|比例|金额",
    re.IGNORECASE,
)
_NUMBERISH = re.compile(r"\d|[零一二两三四五六七八九十百千万亿]")


@dataclass
class Pick:
    source: Source
    text: str
    score: float
    position: int


def compose(question: str, sources: Sequence[Source], lang: Language) -> tuple[str, bool]:
    """(answer text with markers, declined)."""
    picks = rank_sentences(question, sources, lang)
    if not picks or picks[0].score < DECLINE_BELOW:
        return REFUSAL[lang], True
    best = picks[0].score
    chosen: list[Pick] = []
    for pick in picks:
        if len(chosen) == MAX_SENTENCES or pick.score < KEEP_RATIO * best:
            break
        got = terms(pick.text)
        if any(_overlap(got, terms(c.text)) >= DUPLICATE for c in chosen):
            continue
        chosen.append(pick)
    chosen.sort(key=lambda p: (p.source.rank, p.position))
    lines = [LEAD_IN[lang]] + [f"- {_clip(p.text)} [{p.source.number}]" for p in chosen]
    return "\n".join(lines), False


def rank_sentences(question: str, sources: Sequence[Source], lang: Language) -> list[Pick]:
    """The quotable sentences of ``sources``, best first, scored against ``question`` (0..1)."""
    wanted = question_terms(question)
    candidates: list[tuple[Source, int, str, set[str]]] = []
    headings: list[set[str]] = []  # the terms of the heading each candidate stands under
    for source in sorted(sources, key=lambda s: s.rank):
        text = untrimmed(source.text)
        heading: set[str] = set()
        for i, span in enumerate(sentences(text, lang)):
            if span.text.lstrip().startswith("#"):
                heading = terms(span.text)
            elif _quotable(span.text):
                candidates.append((source, i, span.text.strip(), terms(span.text)))
                headings.append(heading)
    if not candidates or not wanted:
        return []
    df: dict[str, int] = {}
    for *_, got in candidates:
        for t in got & wanted:
            df[t] = df.get(t, 0) + 1
    weight = {t: math.log(1 + (len(candidates) + 1) / (1 + df.get(t, 0))) for t in wanted}
    total = sum(weight.values())
    asks_number = bool(_ASKS_NUMBER.search(question))
    picks: list[Pick] = []
    for k, (source, i, text, got) in enumerate(candidates):
        neighbours: set[str] = set(headings[k])  # a neighbour or the heading counts for half
        for j in (k - 1, k + 1):
            if 0 <= j < len(candidates) and candidates[j][0] is source:
                neighbours |= candidates[j][3]
        score = sum(weight[t] for t in got & wanted) + 0.5 * sum(weight[t] for t in (neighbours - got) & wanted)
        score /= total
        if asks_number and not _NUMBERISH.search(text):
            score *= 0.5
        picks.append(Pick(source, text, score - 0.01 * (source.rank - 1), i))
    picks.sort(key=lambda p: -p.score)
    return picks


def _quotable(sentence: str) -> bool:
    text = sentence.strip()
    return len(re.findall(r"\w", text)) >= 6 and not text.startswith(("#", "|")) and list_prefix(text) != text


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SENTENCE_CHARS else text[: MAX_SENTENCE_CHARS - 1] + "…"


def _overlap(a: set[str], b: set[str]) -> float:
    """Shared terms over the smaller set's: a sentence quoted inside a longer one repeats it."""
    return len(a & b) / min(len(a), len(b)) if a and b else 1.0
