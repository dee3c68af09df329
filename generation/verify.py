"""Claim-level citation verification, for whole and streamed answers alike.

Each claim (sentence or clause) is checked against every source it cites (generation.support). A citation whose
source supports the claim stays (``verified``); one that does not is moved to the source that does (``corrected``)
or removed; an uncited claim is attributed (``inferred``) only where one source supports it strongly. Markers are
placed at the claim's end, never inside it. A claim no source supports is ``unsupported``: shown and listed
(policy ``mark``) or left out (``drop``).

``ClaimStream`` takes the model's text as it arrives and hands back claims only once they are complete and
checked, so a stream never shows a marker or a claim that the final answer withdraws: the streamed text and the
final text are the same string."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from kb_service.generation.claims import (
    cited_numbers,
    claims,
    list_prefix,
    strip_markers,
    with_markers,
)
from kb_service.generation.guard import TextStream
from kb_service.generation.prompt import Language, Source
from kb_service.generation.support import Evidence, SourceText, is_substantive, support, untrimmed

UnsupportedPolicy = Literal["mark", "drop"]
CitationStatus = Literal["verified", "corrected", "inferred"]
MIN_SUPPORT = 0.5  # share of a claim's content terms in the cited source's best window
STRONG_SUPPORT = 0.7  # what an uncited or wrongly cited claim needs for the service to cite a source itself


@dataclass
class ClaimCitation:
    number: int
    status: CitationStatus
    evidence: Evidence


@dataclass
class RemovedCitation:
    number: int
    claim: str
    support: float
    reason: str


@dataclass
class CheckedClaim:
    raw: str  # as the model wrote it
    text: str  # as shown: markers verified and placed at the end
    citations: list[ClaimCitation] = field(default_factory=list)
    removed: list[RemovedCitation] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    substantive: bool = True
    refusal: bool = False

    @property
    def supported(self) -> bool:
        return bool(self.citations) or not self.substantive or self.refusal

    @property
    def body(self) -> str:
        return strip_markers(self.text).strip()


class Verifier:
    """Checks claims against the numbered sources of one answer (each source's sentences are prepared once)."""

    def __init__(
        self,
        sources: Sequence[Source],
        lang: Language,
        *,
        refusal: str,
        attribute: bool = True,
        enabled: bool = True,
    ) -> None:
        self.sources = {s.number: s for s in sources}
        self.lang = lang
        self.refusal = refusal
        self.attribute = attribute
        self.enabled = enabled
        self._prepared: dict[int, SourceText] = {}

    def prepared(self, number: int) -> SourceText:
        if number not in self._prepared:
            self._prepared[number] = SourceText.of(untrimmed(self.sources[number].text), self.lang)
        return self._prepared[number]

    def check(self, raw: str) -> CheckedClaim:
        numbers = cited_numbers(raw)
        valid = [n for n in numbers if n in self.sources]
        invalid = [n for n in numbers if n not in self.sources]
        body = strip_markers(raw)
        content = body[len(list_prefix(body)) :]
        if is_refusal(content, self.refusal):
            return CheckedClaim(raw, body, invalid=invalid, substantive=False, refusal=True)
        if not self.enabled:  # the unverified path: markers that exist are kept as written
            kept = [ClaimCitation(n, "verified", support(content, self.prepared(n))) for n in valid]
            return CheckedClaim(raw, with_markers(body, valid), kept, invalid=invalid)
        if not is_substantive(content):
            return CheckedClaim(raw, body, invalid=invalid, substantive=False)
        scored = {n: support(content, self.prepared(n)) for n in valid}
        kept = [ClaimCitation(n, "verified", scored[n]) for n in valid if scored[n].score >= MIN_SUPPORT]
        removed = [
            RemovedCitation(n, content.strip(), scored[n].score, _why(scored[n]))
            for n in valid
            if scored[n].score < MIN_SUPPORT
        ]
        if not kept and (valid or self.attribute):  # the other sources, scored only now they are needed
            scored.update((n, support(content, self.prepared(n))) for n in self.sources if n not in scored)
            best = max(scored, key=lambda n: (scored[n].score, -n))
            if scored[best].score >= STRONG_SUPPORT:
                kept = [ClaimCitation(best, "corrected" if valid else "inferred", scored[best])]
        return CheckedClaim(raw, with_markers(body, [c.number for c in kept]), kept, removed, invalid)


def _why(evidence: Evidence) -> str:
    if evidence.missing:
        return "the source does not contain " + ", ".join(evidence.missing)
    return f"the source supports too little of the claim ({evidence.score:.2f} < {MIN_SUPPORT})"


def is_refusal(text: str, refusal: str) -> bool:
    """Whether a claim declines for lack of information (the instructed sentence or its usual variants)."""
    lowered = text.lower()
    markers = (
        refusal.lower().rstrip("。."),
        "信息不足",
        "do not contain the answer",
        "does not contain the answer",
        "资料中没有",
        "无法回答",
        "cannot answer",
        "can't answer",
        "not enough information",
    )
    return any(m in lowered for m in markers)


class ClaimStream:
    """The model's text in, checked claims out, as soon as each is complete; the repetition guard stops it."""

    def __init__(self, verifier: Verifier, *, guard: bool = True) -> None:
        self.verifier = verifier
        self.texts = TextStream(verifier.lang, claims, guard=guard)

    @property
    def stopped(self) -> str:
        return self.texts.stopped

    def feed(self, piece: str) -> list[CheckedClaim]:
        return [self.verifier.check(t) for t in self.texts.feed(piece)]

    def close(self) -> list[CheckedClaim]:
        return [self.verifier.check(t) for t in self.texts.close()]
