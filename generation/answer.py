"""Ask: retrieve → (rewrite a follow-up) → pack a grounded prompt → generate or compose → verify every claim.

One code path for streamed and whole answers: the model's text goes through a ClaimStream, which hands back each
claim once it is complete and checked (generation.verify), so the streamed text is the final text. Without a
capable model (or when the model's first claim fails verification, or the model cannot answer) the answer is
composed from the best-supported source sentences (generation.extractive) and checked the same way."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from kb_service.core.errors import InvalidInput, LLMUnavailable
from kb_service.generation.citations import ChunkRef, Citation, UnsupportedClaim
from kb_service.generation.compress import Compressor
from kb_service.generation.extractive import compose
from kb_service.generation.llm import LLM, Delta, GenerationParams, Message, Usage, drive
from kb_service.generation.passages import Passage
from kb_service.generation.prompt import REFUSAL, Prompt, PromptBuilder, Source, detect_language
from kb_service.generation.synthesis import SYNTHESES, Synthesis, Synthesizer
from kb_service.generation.verify import CheckedClaim, ClaimStream, RemovedCitation, UnsupportedPolicy, Verifier
from kb_service.retrieval.pipeline import Retriever, SearchFn, SearchOptions, validate_query

AnswerMode = Literal["generated", "extractive", "no_sources"]
RequestedMode = Literal["auto", "generated", "extractive"]
MAX_HISTORY_TURNS = 50
REWRITE_MAX_TOKENS = 64


@dataclass
class SourceRef(ChunkRef):
    """A source the model was given, under the number it is cited by; ``rank`` is its retrieval rank."""

    rank: int = 0
    score: float = 0.0
    text: str = ""
    trimmed: bool = False

    @classmethod
    def of(cls, s: Source) -> SourceRef:
        return cls(**s.where(), rank=s.rank, score=s.hit.score, text=s.text, trimmed=s.trimmed)


@dataclass
class Answer:
    question: str
    text: str
    citations: list[Citation]
    sources: list[SourceRef]
    mode: AnswerMode = "generated"
    refused: bool = False  # the answer says the sources do not contain it
    query: str = ""  # what retrieval searched for (the rewritten question after a follow-up)
    model: str = ""
    reasoning: str = ""
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"  # stop | length | repetition (the degeneration guard cut it)
    unsupported_claims: list[UnsupportedClaim] = field(default_factory=list)
    removed_citations: list[RemovedCitation] = field(default_factory=list)
    invalid_citations: list[int] = field(default_factory=list)  # numbers the model cited that no source has
    citations_inferred: bool = False
    verified: bool = True
    llm_error: str = ""  # why the answer is extractive when a model was asked for
    timings_ms: dict[str, float] = field(default_factory=dict)
    synthesis: str = "compact"  # how the model's answer was put together (an extractive answer: compact)
    synthesis_steps: list[str] = field(default_factory=list)  # refine / map_reduce: the steps before the last


@dataclass(frozen=True)
class AskOptions:
    top_k: int = 5
    params: GenerationParams = field(default_factory=GenerationParams)
    search: SearchOptions | None = None
    rewrite: bool = True
    fallback: bool = True
    attribute: bool = True  # cite, for an uncited claim, the source that supports it strongly
    mode: RequestedMode = "auto"
    verify: bool = True  # False: the unverified path (markers kept as written, no guard): for comparison only
    unsupported: UnsupportedPolicy = "mark"
    compress: bool = False  # each source keeps only the sentences that bear on the question (generation.compress)
    synthesis: Synthesis = "compact"  # how a model's answer is put together from its sources (generation.synthesis)


class Answerer:
    """Holds the loaded parts (retriever, LLM or None, prompt builder); thread-safe as they are. ``generates``:
    whether ``auto`` asks the model (a capable one is configured) or composes extractive answers."""

    def __init__(
        self,
        retriever: Retriever,
        llm: LLM | None,
        builder: PromptBuilder,
        *,
        llm_error: str = "",
        generates: bool = True,
        compressor: Compressor | None = None,
    ) -> None:
        self.retriever = retriever
        self.compressor = compressor
        self.llm = llm
        self.builder = builder
        self.synthesizer = Synthesizer(builder.templates.system_for, builder.templates.user_for)
        self.llm_error = llm_error or ("no language model is configured" if llm is None else "")
        self.generates = generates and llm is not None

    def ask(
        self,
        search: SearchFn,
        question: str,
        *,
        history: Sequence[Message] = (),
        options: AskOptions,
    ) -> Answer:
        for event in self.stream(search, question, history=history, options=options):
            if isinstance(event, Answer):
                return event
        raise AssertionError("the answer stream ended without an answer")  # stream() always ends with one

    def stream(
        self,
        search: SearchFn,
        question: str,
        *,
        history: Sequence[Message] = (),
        options: AskOptions,
    ) -> Iterator[Delta | Answer]:
        """Text deltas (whole checked claims) as the answer is written, then the finished Answer (always last).
        ``search``: what it retrieves with, one knowledge base (``Retriever.on``) or several (``Federation.on``)."""
        question = validate_query(question)
        history = _validate_history(history)
        params = options.params.validate()
        if options.synthesis not in SYNTHESES:
            raise InvalidInput(f"synthesis must be one of {', '.join(SYNTHESES)}, got {options.synthesis!r}")
        timings: dict[str, float] = {}
        start = time.perf_counter()

        llm = self._llm_for(options)
        llm_error = self.llm_error if options.mode == "generated" else ""
        query = question
        if history and options.rewrite and self.llm is not None:
            t = time.perf_counter()
            try:
                query = self._rewrite(self.llm, question, history)
            except LLMUnavailable as exc:
                if not options.fallback:
                    raise
                llm, llm_error = None, str(exc)  # down now: do not wait for it twice
            timings["rewrite"] = _ms(t)

        t = time.perf_counter()
        hits = search(query, replace(options.search or SearchOptions(), top_k=options.top_k)).hits
        timings["retrieve"] = _ms(t)

        passages = None  # what each source shows, when it is not its chunk's text
        if any(h.window for h in hits) or (options.compress and hits):
            passages = [Passage.of(h) for h in hits]
            if options.compress:
                if self.compressor is None:
                    raise InvalidInput("compress is not available here: no model to score sentences is configured")
                t = time.perf_counter()
                passages = self.compressor.compress(query, passages)
                timings["compress"] = _ms(t)
        t = time.perf_counter()
        prompt = self.builder.build(question, hits, history=history, max_tokens=params.max_tokens, passages=passages)
        timings["prompt"] = _ms(t)
        sources = [SourceRef.of(s) for s in prompt.sources]
        base = Answer(question=question, text="", citations=[], sources=sources, query=query)

        if not prompt.sources:
            refusal = REFUSAL[detect_language(question)]
            timings["total"] = _ms(start)
            yield Delta(content=refusal)
            yield replace(base, text=refusal, mode="no_sources", refused=True, timings_ms=timings)
            return

        verifier = Verifier(
            prompt.sources, prompt.language, refusal=prompt.refusal, attribute=options.attribute, enabled=options.verify
        )
        if llm is not None:
            t = time.perf_counter()
            written = _Written(options.unsupported, abandon=options.verify and options.fallback)
            try:
                for event in self._generate(llm, prompt, params, verifier, options, written, timings):
                    if isinstance(event, Delta):
                        if event.content and "first_token" not in timings:
                            timings["first_token"] = _ms(t)
                        yield event
                    else:
                        timings["generate"] = _ms(t)
                        timings["total"] = _ms(start)
                        yield replace(event, question=question, sources=sources, query=query, timings_ms=timings)
                        return
            except LLMUnavailable as exc:
                if written.shown or not options.fallback:
                    raise
                llm_error = str(exc)
            timings["generate"] = _ms(t)
            llm_error = llm_error or written.failure

        t = time.perf_counter()
        answer = self._extractive(base, prompt, verifier, options, llm_error)
        timings["compose"] = _ms(t)
        timings["total"] = _ms(start)
        yield Delta(content=answer.text)
        yield replace(answer, timings_ms=timings)

    def _llm_for(self, options: AskOptions) -> LLM | None:
        if options.mode == "extractive":
            return None
        if options.mode == "generated":
            return self.llm
        return self.llm if self.generates else None

    def _generate(
        self,
        llm: LLM,
        prompt: Prompt,
        params: GenerationParams,
        verifier: Verifier,
        options: AskOptions,
        written: _Written,
        timings: dict[str, float],
    ) -> Iterator[Delta | Answer]:
        """The model's answer, claim by claim as each is checked; ends with the Answer, or returns without one
        when the answer failed verification before anything was shown (``written.failure`` says why)."""
        t = time.perf_counter()
        plan = self.synthesizer.plan(llm, prompt, params, options.synthesis)
        if options.synthesis != "compact":
            timings["synthesis"] = _ms(t)
        claims = ClaimStream(verifier, guard=options.verify)
        completion = yield from drive(
            llm.stream(plan.messages, params),
            lambda piece: written.take(claims.feed(piece), verified=options.verify),
            lambda: bool(written.failure or claims.stopped),  # the guard stopped it, or its first claim failed
        )
        if not written.failure:
            for text in written.take(claims.close(), verified=options.verify):
                yield Delta(content=text)
        if written.abandon and (written.failure or not written.shown):
            written.failure = written.failure or "the model's answer stated nothing its sources support"
            return
        finish = "repetition" if claims.stopped else (completion.finish_reason if completion else "stop")
        usage = completion.usage if completion else Usage()
        answer = written.answer(
            prompt,
            model=completion.model if completion else llm.name,
            reasoning=completion.reasoning if completion else "",
            usage=Usage(
                usage.prompt_tokens + plan.usage.prompt_tokens, usage.completion_tokens + plan.usage.completion_tokens
            ),
            finish_reason=finish,
            verified=options.verify,
        )
        yield replace(answer, synthesis=options.synthesis, synthesis_steps=plan.steps)

    def _extractive(
        self, base: Answer, prompt: Prompt, verifier: Verifier, options: AskOptions, llm_error: str
    ) -> Answer:
        text, declined = compose(base.question, prompt.sources, prompt.language)
        written = _Written(options.unsupported, abandon=False)
        claims = ClaimStream(verifier, guard=False)
        written.take(claims.feed(text) + claims.close(), verified=True)
        if not written.text.strip():  # nothing quotable survived its check: decline rather than show nothing
            declined = True
            written.take(ClaimStream(verifier, guard=False).feed(REFUSAL[prompt.language] + "\n"), verified=True)
        answer = written.answer(prompt, model="", reasoning="", usage=Usage(), finish_reason="stop", verified=True)
        return replace(
            answer,
            question=base.question,
            sources=base.sources,
            query=base.query,
            mode="extractive",
            refused=declined,
            llm_error=llm_error,
        )

    def _rewrite(self, llm: LLM, question: str, history: Sequence[Message]) -> str:
        completion = llm.complete(
            self.builder.rewrite_messages(question, history), GenerationParams(max_tokens=REWRITE_MAX_TOKENS)
        )
        rewritten = completion.text.strip().strip('"“”').splitlines()[0].strip() if completion.text.strip() else ""
        # A small model may ramble or answer instead of rewriting; keep the question then.
        return rewritten if 0 < len(rewritten) <= max(200, 3 * len(question)) else question


class _Written:
    """The answer as shown so far: checked claims joined exactly as they were streamed. Claims that state
    nothing are held back until the first claim that does, so an answer abandoned at its first (unsupported)
    claim has shown nothing."""

    def __init__(self, policy: UnsupportedPolicy, *, abandon: bool) -> None:
        self.policy = policy
        self.abandon = abandon  # give up (for the extractive fallback) when the first claim is unsupported
        self.text = ""
        self.gap = ""  # whitespace after the last shown claim, shown before the next one
        self.held: list[CheckedClaim] = []
        self.shown: list[tuple[CheckedClaim, int, int]] = []
        self.dropped: list[CheckedClaim] = []
        self.failure = ""

    def take(self, checked: list[CheckedClaim], *, verified: bool) -> list[str]:
        out: list[str] = []
        for claim in checked:
            if not self.shown and not claim.substantive and not claim.refusal:
                self.held.append(claim)
                continue
            if verified and not claim.supported:
                if not self.shown and self.abandon:
                    self.failure = f"its first claim is not supported by the sources: {claim.body[:120]!r}"
                    return out
                if self.policy == "drop":
                    self.dropped.append(claim)
                    continue
            for c in [*self.held, claim]:
                out.extend(self._show(c))
            self.held = []
        return out

    def _show(self, claim: CheckedClaim) -> list[str]:
        body = claim.text.rstrip()
        if not body.strip():
            return []
        if not self.text:
            body = body.lstrip()
        piece = self.gap + body if self.text else body
        start = len(self.text) + len(piece) - len(body)
        self.text += piece
        self.gap = claim.text[len(claim.text.rstrip()) :]  # "" between Chinese sentences and clauses
        self.shown.append((claim, start, len(self.text)))
        return [piece]

    def answer(
        self, prompt: Prompt, *, model: str, reasoning: str, usage: Usage, finish_reason: str, verified: bool
    ) -> Answer:
        by_number = {s.number: s for s in prompt.sources}
        citations: list[Citation] = []
        unsupported: list[UnsupportedClaim] = []
        removed: list[RemovedCitation] = []
        invalid: list[int] = []
        for claim, start, end in self.shown:
            removed.extend(claim.removed)
            invalid.extend(claim.invalid)
            for c in claim.citations:
                source = by_number[c.number]
                citations.append(
                    Citation(
                        **source.cite(c.evidence.start, c.evidence.end, c.evidence.text),
                        inferred=c.status == "inferred",
                        status=c.status,
                        support=c.evidence.score,
                        claim=claim.body,
                    )
                )
            if verified and not claim.supported:
                unsupported.append(UnsupportedClaim(text=self.text[start:end], start=start, end=end))
        for claim in self.dropped:
            removed.extend(claim.removed)
            invalid.extend(claim.invalid)
        refused = any(claim.refusal for claim, *_ in self.shown) and not citations
        return Answer(
            question="",
            text=self.text,
            citations=citations,
            sources=[],
            mode="generated",
            refused=refused,
            model=model,
            reasoning=reasoning,
            usage=usage,
            finish_reason=finish_reason,
            unsupported_claims=unsupported,
            removed_citations=removed,
            invalid_citations=sorted(set(invalid)),
            citations_inferred=any(c.inferred for c in citations),
            verified=verified,
        )


def _validate_history(history: Sequence[Message]) -> list[Message]:
    if len(history) > MAX_HISTORY_TURNS:
        raise InvalidInput(f"history has {len(history)} messages; the limit is {MAX_HISTORY_TURNS}")
    out: list[Message] = []
    for i, message in enumerate(history):
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant"):
            raise InvalidInput(f"history[{i}].role must be 'system', 'user' or 'assistant', got {role!r}")
        if not isinstance(content, str):
            raise InvalidInput(f"history[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return out


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
