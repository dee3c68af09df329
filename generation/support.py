"""Whether a source supports a claim, and where: the claim's facts (numbers, dates, names) must all occur in the
source, and the best window of one or two consecutive source sentences must hold most of the claim's content
terms (stemmed English words without stopwords; Chinese as character bigrams, which need no word segmentation).

The score is that share (0..1). The window is the evidence span quoted with the citation, as character offsets
into the source text."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from kb_service.generation.claims import Span, sentences, strip_markers
from kb_service.generation.prompt import Language
from kb_service.retrieval.lexical import _stemmer, _stopwords

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
_NAME = re.compile(r"(?<![\w])[A-Z][\w'’\-]*[A-Za-z0-9]")
WINDOW = 2  # consecutive source sentences a claim may draw on
# A claim with fewer content terms and no facts says nothing that needs a source ("Here is what I found:").
MIN_TERMS = 3
MIN_CJK_TERMS = 4  # character bigrams: "保修期为两年" has five
_ZH_FUNCTION = frozenset("的了是在和与及或也就都而被把将对为以于之其这那个些中上下")


@cache
def _question_words() -> frozenset[str]:
    words = "what which who whom whose when where why how does do did is are was were answer source sources"
    return frozenset(_stemmer().stemWords(words.split()))


@cache
def _asking_words() -> frozenset[str]:
    """Words that say what a question asks for ("how long", "what year"), not what it is about."""
    words = "long many much old far big often tall year date time number kind type called"
    return _question_words() | frozenset(_stemmer().stemWords(words.split()))


# What a Chinese question asks with, not about; cut out before its bigrams are taken.
_ZH_QUESTION = re.compile(
    r"请问|为什么|怎么样|怎么|怎样|如何|什么|多长|多少|多久|多大|多高|多远|哪里|哪儿|哪些|哪个|哪一|哪|是否|几|吗|呢|谁|何时"
)


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def terms(text: str) -> set[str]:
    """Content terms: stemmed Latin-script words without stopwords, and CJK character bigrams (a lone Han
    character counts as itself)."""
    words: list[str] = []
    out: set[str] = set()
    for run in _RUN.findall(fold(text)):
        if "\u3400" <= run[0] <= "\ufaff":
            grams = {run[i : i + 2] for i in range(len(run) - 1)}
            out.update(g for g in grams if not (g[0] in _ZH_FUNCTION and g[1] in _ZH_FUNCTION))
            if len(run) == 1:
                out.add(run)
        elif len(run) > 1 and run not in _stopwords() and not run.isdigit():
            words.append(run)
    if words:
        out.update(_stemmer().stemWords(words))
    return out


def numbers(text: str) -> set[str]:
    """Numbers as written, without thousands separators ("1,250" → "1250"); list and citation numbers aside."""
    text = strip_markers(text)
    text = re.sub(r"^\s*\d{1,2}[.)、]\s+", "", text)
    return {_plain_number(n) for n in _NUMBER.findall(fold(text))}


def _plain_number(n: str) -> str:
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", n):
        n = n.replace(",", "")
    return n.rstrip(".")


def names(text: str) -> set[str]:
    """Capitalised words that are not the first word of their sentence (a rough but language-free name test)."""
    body = strip_markers(text).strip()
    found: set[str] = set()
    for match in _NAME.finditer(body):
        before = body[: match.start()].rstrip()
        if not before or before[-1] in ".!?:;\n\"'“(":
            continue  # a sentence's first word is capitalised anyway
        word = match.group(0).lower()
        if word not in _stopwords():
            found.add(word)
    return found


@dataclass
class Evidence:
    """How well one source supports one claim, and the span of the source that does."""

    score: float
    start: int
    end: int
    text: str
    missing: list[str] = field(default_factory=list)  # facts of the claim that the source lacks

    @property
    def facts_ok(self) -> bool:
        return not self.missing


@dataclass
class SourceText:
    """A source prepared once per answer: its sentences, their terms, its facts."""

    text: str
    spans: list[Span]  # the sentences that can be quoted (headings are not)
    span_terms: list[set[str]]
    context: list[set[str]]  # the terms of the heading each sentence stands under: they scope it
    folded: str
    numbers: set[str]
    words: set[str]

    @classmethod
    def of(cls, text: str, lang: Language) -> SourceText:
        spans, context, heading = [], [], set()
        for span in sentences(text, lang):
            if span.text.lstrip().startswith("#"):
                heading = terms(span.text)
            elif span.text.strip():
                spans.append(span)
                context.append(heading)
        if not spans:
            spans, context = [Span(0, len(text), text)], [set()]
        folded = fold(text)
        return cls(
            text=text,
            spans=spans,
            span_terms=[terms(s.text) for s in spans],
            context=context,
            folded=folded,
            numbers={_plain_number(n) for n in _NUMBER.findall(folded)},
            words=set(re.findall(r"[^\W_]+(?:['’\-][^\W_]+)*", folded)),
        )


def untrimmed(text: str) -> str:
    """A source's text without the "…" that the prompt builder puts after a source it trimmed."""
    return text[:-1] if text.endswith("…") else text


def claim_terms(claim: str) -> set[str]:
    """The content terms of a claim."""
    return terms(strip_markers(claim)) - _question_words()


def question_terms(question: str) -> set[str]:
    """The content terms of a question: what it asks about, without the words it asks with."""
    return terms(_ZH_QUESTION.sub(" ", question)) - _asking_words()


def is_substantive(claim: str) -> bool:
    """Whether a claim states something a source must support: enough content terms, or a fact. A clause that
    ends in a colon introduces what follows ("Here are the steps:", "根据资料：") and states nothing itself."""
    body = strip_markers(claim).strip()
    if body.endswith((":", "：")):
        return False
    got = claim_terms(body)
    cjk = sum(1 for t in got if "\u3400" <= t[0] <= "\ufaff")
    return len(got) - cjk >= MIN_TERMS or cjk >= MIN_CJK_TERMS or bool(numbers(body)) or bool(names(body))


def support(claim: str, source: SourceText) -> Evidence:
    """The claim's support by ``source``: the best window's share of the claim's content terms, 0 when a number
    or a name of the claim is not in the source."""
    body = strip_markers(claim)
    missing = sorted(n for n in numbers(body) if n not in source.numbers)
    missing += sorted(w for w in names(body) if not _has_name(source, w))
    wanted = claim_terms(body)
    best, best_at = 0.0, (0, 1)
    if wanted:
        for width in range(1, WINDOW + 1):  # a wider window must add support to be preferred
            for i in range(len(source.spans) - width + 1):
                got = set().union(*source.span_terms[i : i + width], source.context[i]) & wanted
                share = len(got) / len(wanted)
                if share > best + 1e-9:
                    best, best_at = share, (i, i + width)
    first, last = source.spans[best_at[0]], source.spans[best_at[1] - 1]
    start, end = _trim(source.text, first.start, last.end)
    score = 0.0 if missing else best
    return Evidence(score=round(score, 4), start=start, end=end, text=source.text[start:end], missing=missing)


def _has_name(source: SourceText, word: str) -> bool:
    if word in source.words:
        return True
    parts = re.split(r"['’\-]", word)
    return all(p in source.words for p in parts if p)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def best_supporting(claim: str, sources: Sequence[SourceText]) -> tuple[int, Evidence] | None:
    """The index of the source that supports ``claim`` best (facts first, then score), and its evidence."""
    scored = [(i, support(claim, s)) for i, s in enumerate(sources)]
    if not scored:
        return None
    return max(scored, key=lambda item: (item[1].facts_ok, item[1].score, -item[0]))
