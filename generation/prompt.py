"""The grounded prompt: numbered sources packed into a token budget, ordered against "lost in the middle",
with instructions in the question's language, conversation history and a query-rewrite prompt."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kb_service.core.errors import InvalidInput
from kb_service.core.records import ScoredChunk, box_of
from kb_service.generation.llm import Message
from kb_service.generation.passages import Passage

Language = Literal["en", "zh"]
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]")
MIN_TRIMMED_SOURCE_TOKENS = 48  # a source cut shorter than this says too little to be worth its header

REFUSAL = {
    "en": "The sources do not contain the answer.",
    "zh": "信息不足，资料中没有这个问题的答案。",
}
SYSTEM = {
    "en": (
        "You answer questions using only the numbered sources you are given.\n"
        "Rules:\n"
        "- Use only facts stated in the sources; never use outside knowledge.\n"
        "- Cite the source of every fact with its number in square brackets, like [1] or [2][3].\n"
        '- If the sources do not contain the answer, reply exactly: "{refusal}"\n'
        "- Answer in the language of the question, briefly."
    ),
    "zh": (
        "你只根据给出的编号资料回答问题。\n"
        "规则：\n"
        "- 只使用资料中写明的事实，不要使用资料以外的知识。\n"
        "- 每个事实后用方括号标注资料编号，例如 [1] 或 [2][3]。\n"
        "- 如果资料中没有答案，请只回答：“{refusal}”\n"
        "- 用中文简洁地回答。"
    ),
}
USER = {
    "en": "Sources:\n{sources}\n\nQuestion: {question}",
    "zh": "资料：\n{sources}\n\n问题：{question}",
}
REWRITE = (
    "Rewrite the last user question as one standalone search query that needs no conversation to be understood. "
    "Keep its language. Output only the query."
)


def detect_language(text: str) -> Language:
    """'zh' when Han characters make up at least a fifth of the letters, else 'en'."""
    letters = len(_LETTER.findall(text))
    return "zh" if letters and len(_CJK.findall(text)) / letters >= 0.2 else "en"


@dataclass(frozen=True)
class PromptTemplates:
    """Overridable in configuration (``KB_PROMPT_SYSTEM`` / ``KB_PROMPT_USER``); the defaults exist in English and
    Chinese and are picked by the question's language. ``{refusal}`` in the system text is the refusal sentence."""

    system: str | None = None
    user: str | None = None

    def validate(self) -> PromptTemplates:
        if self.user is not None:
            missing = [p for p in ("{sources}", "{question}") if p not in self.user]
            if missing:
                raise InvalidInput(f"the user prompt template must contain {' and '.join(missing)}")
        return self

    def system_for(self, lang: Language) -> str:
        return (self.system or SYSTEM[lang]).replace("{refusal}", REFUSAL[lang])

    def user_for(self, lang: Language) -> str:
        return self.user or USER[lang]


@dataclass
class Source:
    """One numbered source as the model sees it: ``number`` is its citation number, ``rank`` its retrieval rank."""

    number: int
    rank: int
    hit: ScoredChunk
    text: str
    trimmed: bool = False
    passage: Passage | None = None  # where ``text`` comes from when it is not the hit's chunk text (or a prefix)

    def where(self) -> dict[str, Any]:
        """The chunk's identity and location, as citations and answers report it."""
        c = self.hit.chunk
        return {
            "number": self.number,
            "doc_id": c.doc_id,
            "chunk_id": c.id,
            "source": str(c.metadata.get("source", "")),
            "title": str(c.metadata.get("title", "")),
            "page": c.page,
            "bbox": box_of(c.metadata),
            "section": c.section,
            "knowledge_base": self.hit.kb,
        }

    def cite(self, start: int, end: int, snippet: str) -> dict[str, Any]:
        """A citation of ``snippet``, ``text[start:end]``: the chunk it lies in (a widened or compressed source spans
        several) with the span at that chunk's offsets, so that ``chunk.text[evidence_start:evidence_end]`` is the
        snippet (clipped to that chunk)."""
        where = self.where()
        if self.passage is None:
            return where | {"evidence_start": start, "evidence_end": end, "snippet": snippet}
        chunk, lo, hi = self.passage.locate(start, end)
        if chunk.id != self.hit.chunk.id:
            where |= {
                "doc_id": chunk.doc_id,
                "chunk_id": chunk.id,
                "page": chunk.page,
                "bbox": box_of(chunk.metadata),
                "section": chunk.section,
            }
        return where | {"evidence_start": lo, "evidence_end": hi, "snippet": chunk.text[lo:hi]}

    @property
    def header(self) -> str:
        c = self.hit.chunk
        parts = [c.metadata.get("source") or c.metadata.get("title") or c.doc_id]
        if c.page:
            parts.append(f"p. {c.page}")
        if c.section:
            parts.append(c.section)
        return f"[{self.number}] " + " · ".join(str(p) for p in parts)


@dataclass
class Prompt:
    messages: list[Message]
    sources: list[Source]
    language: Language
    refusal: str
    dropped: int = 0  # retrieved chunks left out for lack of room
    source_tokens: int = 0
    history_used: int = 0
    notes: list[str] = field(default_factory=list)
    question: str = ""


def edges_first(ranked: Sequence[int]) -> list[int]:
    """Strongest at the edges, weakest in the middle: ranks 1..5 → 1, 3, 5, 4, 2 (Liu et al., "Lost in the
    Middle", 2023)."""
    return list(ranked[0::2]) + list(ranked[1::2])[::-1]


class PromptBuilder:
    def __init__(
        self,
        *,
        count_tokens: Callable[[str], int],
        context_window: int,
        budget_tokens: int,
        max_tokens: int,
        templates: PromptTemplates | None = None,
        history_share: float = 0.25,
    ) -> None:
        self.count = count_tokens
        self.context_window = context_window
        self.budget = budget_tokens
        self.max_tokens = max_tokens
        self.templates = (templates or PromptTemplates()).validate()
        self.history_share = history_share

    def build(
        self,
        question: str,
        hits: Sequence[ScoredChunk],
        *,
        history: Sequence[Message] = (),
        max_tokens: int | None,
        passages: Sequence[Passage] | None = None,
    ) -> Prompt:
        """``passages``: what each hit shows (widened, compressed), aligned with ``hits``; default: its chunk."""
        lang = detect_language(question)
        system = self.templates.system_for(lang)
        user_template = self.templates.user_for(lang)
        frame = self.count(system) + self.count(user_template.format(sources="", question=question)) + 16
        room = self.context_window - (max_tokens or self.max_tokens) - frame
        if room <= 0:
            raise InvalidInput(
                f"the question and the instructions need {frame} tokens and the answer {max_tokens or self.max_tokens}"
                f"; the model's context window is {self.context_window}: ask a shorter question or lower max_tokens"
            )
        budget = min(self.budget, room)
        kept_history = self._history(history, int(budget * self.history_share))
        budget -= sum(self.count(m["content"]) + 4 for m in kept_history)
        sources, used = self._pack(hits, budget, passages)
        by_rank = {s.rank: s for s in sources}
        ordered = [by_rank[r] for r in edges_first(sorted(by_rank))]
        for number, source in enumerate(ordered, start=1):
            source.number = number
        block = "\n\n".join(f"{s.header}\n{s.text}" for s in ordered)
        messages: list[Message] = [{"role": "system", "content": system}, *kept_history]
        messages.append({"role": "user", "content": user_template.format(sources=block, question=question)})
        return Prompt(
            messages=messages,
            sources=ordered,
            language=lang,
            refusal=REFUSAL[lang],
            dropped=len(hits) - len(sources),
            source_tokens=used,
            history_used=len(kept_history),
            question=question,
        )

    def _pack(
        self, hits: Sequence[ScoredChunk], budget: int, passages: Sequence[Passage] | None
    ) -> tuple[list[Source], int]:
        """Sources in rank order while they fit; the first that does not is trimmed to the room left (when that
        is worth it) and the lower-ranked rest is dropped."""
        sources: list[Source] = []
        used = 0
        for rank, hit in enumerate(hits, start=1):
            passage = passages[rank - 1] if passages is not None else None
            full = passage.text if passage is not None else hit.chunk.text
            header = Source(number=rank, rank=rank, hit=hit, text="").header
            cost = self.count(header) + self.count(full) + 2
            if used + cost <= budget:
                sources.append(Source(number=rank, rank=rank, hit=hit, text=full, passage=passage))
                used += cost
                continue
            room = budget - used - self.count(header) - 2
            if room >= MIN_TRIMMED_SOURCE_TOKENS:
                text = self._trim(full, room)
                sources.append(Source(number=rank, rank=rank, hit=hit, text=text, trimmed=True, passage=passage))
                used += self.count(header) + self.count(text) + 2
            break
        return sources, used

    def _trim(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` within ``tokens`` (binary search over characters), ending in '…'."""
        lo, hi = 0, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count(text[:mid]) + 1 <= tokens:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo].rstrip() + "…"

    def _history(self, history: Sequence[Message], budget: int) -> list[Message]:
        """The most recent turns that fit in ``budget`` tokens, oldest first, system turns left out."""
        kept: list[Message] = []
        used = 0
        for message in reversed(history):
            if message["role"] == "system":
                continue
            cost = self.count(message["content"]) + 4
            if used + cost > budget:
                break
            kept.append(message)
            used += cost
        return kept[::-1]

    def rewrite_messages(self, question: str, history: Sequence[Message]) -> list[Message]:
        """A prompt asking the model for a standalone version of a follow-up question."""
        turns = self._history(history, self.budget // 2)
        convo = "\n".join(f"{m['role']}: {m['content']}" for m in turns)
        return [
            {"role": "system", "content": REWRITE},
            {"role": "user", "content": f"Conversation:\n{convo}\n\nLast user question: {question}\n\nQuery:"},
        ]
