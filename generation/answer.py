"""Ask: retrieve → (rewrite a follow-up) → pack a grounded prompt → generate → check citations. One code path for
streamed and whole answers; when no model can answer, the retrieved passages come back as a flagged extractive
answer instead of an error (unless that fallback is switched off)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from core.errors import InvalidInput, LLMUnavailable
from core.records import KnowledgeBase
from embeddings.base import Embedder
from generation.citations import ChunkRef, Citation, attribute, cite, resolve_citations
from generation.llm import LLM, Completion, Delta, GenerationParams, Message, Usage
from generation.prompt import REFUSAL, Prompt, PromptBuilder, Source, detect_language
from retrieval.pipeline import Retriever, SearchOptions, validate_query

AnswerMode = Literal["generated", "extractive", "no_sources"]
EXTRACTIVE_SOURCES = 3
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
    finish_reason: str = "stop"
    invalid_citations: list[int] = field(default_factory=list)  # numbers the model cited that no source has
    citations_inferred: bool = False
    llm_error: str = ""  # why the answer is extractive
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AskOptions:
    top_k: int = 5
    params: GenerationParams = field(default_factory=GenerationParams)
    search: SearchOptions | None = None
    rewrite: bool = True
    fallback: bool = True
    attribute: bool = True  # attribute uncited answers to the sources that support them


class Answerer:
    """Holds the loaded parts (retriever, LLM or None, prompt builder); thread-safe as they are."""

    def __init__(self, retriever: Retriever, llm: LLM | None, builder: PromptBuilder, *, llm_error: str = "") -> None:
        self.retriever = retriever
        self.llm = llm
        self.builder = builder
        self.llm_error = llm_error or ("no language model is configured" if llm is None else "")

    def ask(
        self,
        kb: KnowledgeBase,
        embedder: Embedder,
        question: str,
        *,
        history: Sequence[Message] = (),
        options: AskOptions,
    ) -> Answer:
        for event in self.stream(kb, embedder, question, history=history, options=options):
            if isinstance(event, Answer):
                return event
        raise AssertionError("the answer stream ended without an answer")  # stream() always ends with one

    def stream(
        self,
        kb: KnowledgeBase,
        embedder: Embedder,
        question: str,
        *,
        history: Sequence[Message] = (),
        options: AskOptions,
    ) -> Iterator[Delta | Answer]:
        """Text deltas as the model writes, then the finished Answer (always last)."""
        question = validate_query(question)
        history = _validate_history(history)
        params = options.params.validate()
        timings: dict[str, float] = {}
        start = time.perf_counter()

        query, llm_error = question, self.llm_error
        llm = self.llm
        if history and options.rewrite and llm is not None:
            t = time.perf_counter()
            try:
                query = self._rewrite(llm, question, history)
            except LLMUnavailable as exc:
                if not options.fallback:
                    raise
                llm, llm_error = None, str(exc)  # down now: do not wait for it twice
            timings["rewrite"] = _ms(t)

        t = time.perf_counter()
        search = replace(options.search or SearchOptions(), top_k=options.top_k)
        hits = self.retriever.search(kb, embedder, query, search).hits
        timings["retrieve"] = _ms(t)

        t = time.perf_counter()
        prompt = self.builder.build(question, hits, history=history, max_tokens=params.max_tokens)
        timings["prompt"] = _ms(t)
        sources = [SourceRef.of(s) for s in prompt.sources]
        base = Answer(question=question, text="", citations=[], sources=sources, query=query)

        if not prompt.sources:
            refusal = REFUSAL[detect_language(question)]
            timings["total"] = _ms(start)
            yield Delta(content=refusal)
            yield replace(base, text=refusal, mode="no_sources", refused=True, timings_ms=timings)
            return

        completion: Completion | None = None
        if llm is not None:
            t = time.perf_counter()
            emitted = False
            try:
                for delta in llm.stream(prompt.messages, params):
                    if delta.completion is not None:
                        completion = delta.completion
                        continue
                    if not emitted:
                        timings["first_token"] = _ms(t)
                    emitted = True
                    yield delta
            except LLMUnavailable as exc:
                if emitted or not options.fallback:
                    raise
                llm_error = str(exc)
            timings["generate"] = _ms(t)

        if completion is None:
            if not options.fallback:
                raise LLMUnavailable(llm_error)
            answer = self._extractive(base, prompt, llm_error)
            timings["total"] = _ms(start)
            yield Delta(content=answer.text)
            yield replace(answer, timings_ms=timings)
            return

        yield self._finish(base, prompt, completion, options, timings, start)

    def _finish(
        self,
        base: Answer,
        prompt: Prompt,
        completion: Completion,
        options: AskOptions,
        timings: dict[str, float],
        start: float,
    ) -> Answer:
        cited = resolve_citations(completion.text, prompt.sources)
        refused = is_refusal(cited.text, prompt.refusal)
        inferred = False
        if not cited.citations and not refused and options.attribute:
            attributed = attribute(cited.text, prompt.sources)
            if attributed.citations:
                cited = replace(attributed, invalid=cited.invalid)
                inferred = True
        timings["total"] = _ms(start)
        return replace(
            base,
            text=cited.text,
            citations=cited.citations,
            refused=refused,
            model=completion.model,
            reasoning=completion.reasoning,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            invalid_citations=cited.invalid,
            citations_inferred=inferred,
            timings_ms=timings,
        )

    def _rewrite(self, llm: LLM, question: str, history: Sequence[Message]) -> str:
        completion = llm.complete(
            self.builder.rewrite_messages(question, history), GenerationParams(max_tokens=REWRITE_MAX_TOKENS)
        )
        rewritten = completion.text.strip().strip('"“”').splitlines()[0].strip() if completion.text.strip() else ""
        # A small model may ramble or answer instead of rewriting; keep the question then.
        return rewritten if 0 < len(rewritten) <= max(200, 3 * len(question)) else question

    def _extractive(self, base: Answer, prompt: Prompt, llm_error: str) -> Answer:
        """The strongest passages, numbered and quoted, flagged as not generated."""
        top = sorted(prompt.sources, key=lambda s: s.rank)[:EXTRACTIVE_SOURCES]
        lang = prompt.language
        lines = [
            "未能生成回答，以下是最相关的资料原文："
            if lang == "zh"
            else "No answer could be generated; the most relevant passages:"
        ]
        citations = [cite(s, base.question) for s in top]
        lines.extend(f"[{s.number}] {_excerpt(s.text)}" for s in top)
        return replace(base, text="\n".join(lines), citations=citations, mode="extractive", llm_error=llm_error)


def is_refusal(text: str, refusal: str) -> bool:
    """Whether an answer declines for lack of information (the instructed sentence or its usual variants)."""
    lowered = text.lower()
    markers = (refusal.lower().rstrip("。."), "信息不足", "do not contain the answer", "does not contain the answer")
    return any(m in lowered for m in markers)


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


def _excerpt(text: str, limit: int = 400) -> str:
    text = " ".join(line for line in text.split("\n") if not line.startswith("#")).strip() or text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
