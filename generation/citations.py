"""Citations in a generated answer: markers like [1], [2, 3] or 【1】 are checked against the sources the model was
given (numbers that do not exist are dropped and reported), each valid one is tied to the source sentence that
supports it, and an answer the model left uncited can have citations attributed by textual support."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from generation.prompt import Source

MARKER = re.compile(r"\s?[\[【]\s*(\d{1,3}(?:\s*[,，、;]\s*\d{1,3})*)\s*[\]】]")
SENTENCE = re.compile(r"[^。！？!?\n]+?(?:[。！？!?]+|\.(?=\s|$)|\n|$)")
SNIPPET_CHARS = 300
MIN_SNIPPET_CHARS = 12
ATTRIBUTION_MIN_SUPPORT = 0.5  # share of an answer sentence's character bigrams found in one source
ATTRIBUTION_MIN_BIGRAMS = 6
_SENTENCE_END = re.compile(r"[。！？!?.]*\s*$")
_CJK_END = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]$")


@dataclass
class ChunkRef:
    """Source ``number`` in a prompt → the chunk behind it: document, chunk, file name, title, page, section."""

    number: int
    doc_id: str
    chunk_id: str
    source: str
    title: str
    page: int | None
    section: str | None


@dataclass
class Citation(ChunkRef):
    """A cited source and the sentence of it that best supports the claim. ``inferred``: the model cited nothing
    and the service attributed the sentence by its textual support."""

    snippet: str = ""
    inferred: bool = False


@dataclass
class CitedText:
    text: str
    citations: list[Citation]
    invalid: list[int]


def resolve_citations(text: str, sources: Sequence[Source]) -> CitedText:
    """Validate the markers of ``text`` against ``sources``; invalid numbers are removed from the text."""
    by_number = {s.number: s for s in sources}
    invalid: list[int] = []
    found: dict[int, str] = {}  # number → the answer sentence that cites it first

    def replace(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.split(r"\s*[,，、;]\s*", match.group(1))]
        good = [n for n in numbers if n in by_number]
        invalid.extend(n for n in numbers if n not in by_number)
        return "".join(f"[{n}]" for n in good)

    for sentence in SENTENCE.findall(text):
        for match in MARKER.finditer(sentence):
            for n in re.split(r"\s*[,，、;]\s*", match.group(1)):
                if int(n) in by_number:
                    found.setdefault(int(n), MARKER.sub("", sentence))
    cleaned = MARKER.sub(lambda m: (" " if m.group(0).startswith(" ") else "") + replace(m), text)
    cleaned = re.sub(r" +([.,;:!?。，；：！？])", r"\1", cleaned).strip()
    citations = [cite(by_number[n], claim) for n, claim in sorted(found.items())]
    return CitedText(text=cleaned, citations=citations, invalid=sorted(set(invalid)))


def attribute(text: str, sources: Sequence[Source]) -> CitedText:
    """Add a marker after each answer sentence that one source supports (most of its character bigrams occur in
    that source); for answers from models too small to cite reliably."""
    citations: dict[int, Citation] = {}
    out: list[str] = []
    source_grams = [(source, _bigrams(source.text)) for source in sources]  # once, not per answer sentence
    for sentence in SENTENCE.findall(text):
        grams = _bigrams(sentence)
        best, support = None, 0.0
        if len(grams) >= ATTRIBUTION_MIN_BIGRAMS:
            for source, known in source_grams:
                share = len(grams & known) / len(grams)
                if share > support:
                    best, support = source, share
        if best is not None and support >= ATTRIBUTION_MIN_SUPPORT:
            end = _SENTENCE_END.search(sentence)
            assert end is not None  # the pattern matches the empty string at the end
            body = sentence[: end.start()]
            gap = "" if _CJK_END.search(body) else " "
            out.append(f"{body}{gap}[{best.number}]{sentence[end.start() :]}")
            citations.setdefault(best.number, cite(best, sentence, inferred=True))
        else:
            out.append(sentence)
    return CitedText(
        text="".join(out).strip(), citations=sorted(citations.values(), key=lambda c: c.number), invalid=[]
    )


def cite(source: Source, claim: str, *, inferred: bool = False) -> Citation:
    """A citation of ``source`` quoting its sentence that best supports ``claim``."""
    return Citation(**source.where(), snippet=best_sentence(source.text, claim), inferred=inferred)


def best_sentence(passage: str, claim: str) -> str:
    """The sentence of ``passage`` sharing the most character bigrams with ``claim`` (the quoted evidence)."""
    sentences = [s.strip() for s in SENTENCE.findall(passage) if s.strip() and not s.lstrip().startswith("#")]
    sentences = [s for s in sentences if len(s) >= MIN_SNIPPET_CHARS] or sentences  # headings say little
    if not sentences:
        return passage[:SNIPPET_CHARS]
    grams = _bigrams(claim)
    best = max(sentences, key=lambda s: len(grams & _bigrams(s)) / (1 + len(_bigrams(s)) ** 0.5))
    return best if len(best) <= SNIPPET_CHARS else best[: SNIPPET_CHARS - 1] + "…"


def _bigrams(text: str) -> set[str]:
    squashed = re.sub(r"\W+", " ", text.lower()).strip()
    return {squashed[i : i + 2] for i in range(len(squashed) - 1) if " " not in squashed[i : i + 2]}
