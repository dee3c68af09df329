"""Claims of an answer: sentences (pysbd's rule-based boundaries, English and Chinese, with character offsets),
split again where a citation marker closes a clause inside a sentence; and the citation markers themselves.

A marker written after the sentence's full stop (``… 5 years. [1]``) belongs to that sentence, and abbreviations
and decimals ("p. 34", "U.S.", "3.5") never end one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from kb_service.generation.prompt import Language

MARKER = re.compile(r"\s?[\[【]\s*(\d{1,3}(?:\s*[,，、;]\s*\d{1,3})*)\s*[\]】]")
_MARKERS_ONLY = re.compile(rf"^(?:{MARKER.pattern}|\s)*$")
_LEADING_MARKERS = re.compile(rf"^(?:{MARKER.pattern})+")
_OPEN_MARKER = re.compile(r"[\[【]\s*[\d\s,，、;]*$")  # a marker not closed yet, at the end of a stream
_TRAILING = re.compile(r"[\s\"'”’）)]*[。！？!?.;；:：,，]*[\s\"'”’）)]*$")
_CJK_END = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]$")
MIN_CLAUSE_CHARS = 12  # word characters each side of an inner marker for it to split a sentence into two claims
_BLOCK_LINE = re.compile(r"^\s*(?:#|\||[-*•·]\s|\d{1,2}[.)、]\s)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)、])\s+")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


@cache
def _segmenter(lang: Language) -> Any:
    import pysbd

    return pysbd.Segmenter(language=lang, clean=False, char_span=True)


def sentences(text: str, lang: Language) -> list[Span]:
    """Sentences of ``text`` with their offsets; they cover ``text`` end to end (whitespace included)."""
    if not text:
        return []
    spans: list[Span] = []
    for piece in _pieces(text, lang):
        start, end = piece
        if spans and (lead := _LEADING_MARKERS.match(text, start, end)) and lead.end() > start:
            # "… years. [1]" : the marker closes the sentence before it
            prev = spans.pop()
            spans.append(Span(prev.start, lead.end(), text[prev.start : lead.end()]))
            start = lead.end()
        if spans and start > spans[-1].end:  # pysbd leaves gaps of whitespace out: give them to the sentence before
            prev = spans.pop()
            spans.append(Span(prev.start, start, text[prev.start : start]))
        if start < end:
            spans.append(Span(start, end, text[start:end]))
    if spans and spans[-1].end < len(text):
        prev = spans.pop()
        spans.append(Span(prev.start, len(text), text[prev.start :]))
    merged: list[Span] = []
    for span in spans:  # a sentence of markers only (or whitespace) joins the one before
        if merged and _MARKERS_ONLY.match(span.text):
            prev = merged.pop()
            merged.append(Span(prev.start, span.end, text[prev.start : span.end]))
        else:
            merged.append(span)
    return merged


def _pieces(text: str, lang: Language) -> list[tuple[int, int]]:
    """pysbd's sentences of each block. A line break ends a sentence where a block ends (a blank line, a heading,
    a list item, a table row); inside a paragraph it is a soft wrap, read as a space (offsets are kept)."""
    out: list[tuple[int, int]] = []
    for start, end in _blocks(text):
        flat = text[start:end].replace("\n", " ")
        out.extend((start + p.start, start + p.end) for p in _segmenter(lang).segment(flat))
    return out


def _blocks(text: str) -> list[tuple[int, int]]:
    blocks: list[tuple[int, int]] = []
    at, start, prev = 0, 0, ""
    for line in text.splitlines(keepends=True):
        starts_block = not line.strip() or _BLOCK_LINE.match(line) or _BLOCK_LINE.match(prev) or not prev.strip()
        if starts_block and at > start:
            blocks.append((start, at))
            start = at
        at += len(line)
        prev = line
    if at > start:
        blocks.append((start, at))
    return [(a, b) for a, b in blocks if text[a:b].strip()]


def claims(text: str, lang: Language) -> list[Span]:
    """Sentences, each split after a marker that has more of the sentence behind it ("X is 5 [1] and Y is 6 [2].")."""
    out: list[Span] = []
    for sentence in sentences(text, lang):
        start = sentence.start
        for match in MARKER.finditer(sentence.text):
            cut = sentence.start + match.end()
            rest = text[cut : sentence.end]
            after, before = _word_chars(MARKER.sub("", rest)), _word_chars(text[start:cut])
            if after >= MIN_CLAUSE_CHARS and before >= MIN_CLAUSE_CHARS:
                out.append(Span(start, cut, text[start:cut]))
                start = cut
        out.append(Span(start, sentence.end, text[start : sentence.end]))
    return out


def _word_chars(text: str) -> int:
    return len(re.findall(r"\w", text))


def cited_numbers(claim: str) -> list[int]:
    """The source numbers a claim cites, in order, without repeats."""
    seen: list[int] = []
    for match in MARKER.finditer(claim):
        for n in re.split(r"\s*[,，、;]\s*", match.group(1)):
            if int(n) not in seen:
                seen.append(int(n))
    return seen


def strip_markers(claim: str) -> str:
    out = MARKER.sub("", claim)
    return re.sub(r" +([.,;:!?。，；：！？])", r"\1", out)


def with_markers(body: str, numbers: list[int]) -> str:
    """``body`` (markers stripped) with ``numbers`` cited at its end, before its closing punctuation and spaces."""
    if not numbers:
        return body
    tail = _TRAILING.search(body)
    assert tail is not None  # the pattern matches the empty string at the end
    core = body[: tail.start()]
    if not core.strip():
        return body
    gap = "" if _CJK_END.search(core) else " "
    return f"{core}{gap}{''.join(f'[{n}]' for n in numbers)}{body[tail.start() :]}"


def open_marker_at_end(text: str) -> bool:
    """Whether ``text`` ends inside a citation marker that a later piece of the stream will close."""
    return bool(_OPEN_MARKER.search(text[-12:]))


def list_prefix(claim: str) -> str:
    """A list item's bullet or number ("- ", "2. "), which is no part of what the claim says."""
    match = _LIST_ITEM.match(claim)
    return match.group(0) if match else ""
