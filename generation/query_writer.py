"""The configured LLM writing search queries for a question (retrieval/refine.py's ``QueryWriter``): paraphrases
(multi_query), a hypothetical answer passage (hyde), sub-questions (decompose), or a multi-hop search's next
queries from the passages found so far (follow). Greedy, short, and parsed
leniently: a small model numbers its lines, quotes them or repeats the question, and all of that is cleaned off."""

from __future__ import annotations

import re
from collections.abc import Sequence

from kb_service.generation.guard import guarded
from kb_service.generation.llm import LLM, GenerationParams, Message
from kb_service.generation.prompt import detect_language
from kb_service.retrieval.refine import MAX_VARIANTS

LIST_MAX_TOKENS = 96  # three short queries
PASSAGE_MAX_TOKENS = 160  # a hypothetical passage of a few sentences
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)、]|[（(]?\d+[）)]|(?:query|sub-question|question)\s*\d*\s*:)\s*", re.I)

PROMPTS = {
    "multi_query": (
        f"Write {MAX_VARIANTS} different search queries that look for the information the question asks for, "
        "using other words than the question where you can. One query per line, nothing else. Keep the question's "
        "language."
    ),
    "decompose": (
        f"Split the question into at most {MAX_VARIANTS} simpler questions that together answer it, in the order "
        "they need to be answered. One question per line, nothing else. If it is already simple, repeat it. Keep "
        "the question's language."
    ),
    "hyde": (
        "Write a short passage, as an encyclopedia or a report would, that answers the question. Three sentences at "
        "most; state facts plainly, without saying that you are unsure. Keep the question's language."
    ),
    "follow": (
        "Passages found so far for a question are given. Write at most "
        f"{MAX_VARIANTS} short search queries for what is still needed to answer it, such as a person, work or "
        "place the passages name whose own page would hold the answer. One query per line, nothing else; nothing "
        "if the passages already answer it."
    ),
}
PASSAGE_CHARS = 400  # of each passage shown to ``follow``


# What the user turn asks for after the question (a small model answers the question itself without it).
LABELS = {
    "en": {
        "question": "Question",
        "multi_query": "Search queries:",
        "decompose": "Sub-questions:",
        "hyde": "Passage:",
        "follow": "Search queries:",
        "passages": "Passages",
    },
    "zh": {
        "question": "问题",
        "multi_query": "检索词：",
        "decompose": "子问题：",
        "hyde": "段落：",
        "follow": "检索词：",
        "passages": "资料",
    },
}


class LLMQueryWriter:
    """Runs through the degeneration guard, as plain chat does: a looping model is stopped at its first repeat."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def write(self, kind: str, question: str) -> list[str]:
        if kind not in PROMPTS or kind == "follow":
            raise ValueError(f"no prompt for refine {kind!r}")
        text = self._complete(kind, question, "")
        if kind == "hyde":
            return [" ".join(text.split())] if text else []
        return lines(text)

    def follow(self, question: str, passages: Sequence[str]) -> list[str]:
        shown = "\n".join(f"- {' '.join(p.split())[:PASSAGE_CHARS]}" for p in passages)
        return lines(self._complete("follow", question, shown))

    def _complete(self, kind: str, question: str, passages: str) -> str:
        language = detect_language(question)
        system = PROMPTS[kind] + (" 用中文写。" if language == "zh" else "")
        labels = LABELS[language]
        sep = "：" if language == "zh" else ": "
        user = f"{labels['question']}{sep}{question}\n\n"
        if passages:
            user += f"{labels['passages']}{sep}\n{passages}\n\n"
        user += labels[kind]
        messages: list[Message] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        params = GenerationParams(max_tokens=PASSAGE_MAX_TOKENS if kind == "hyde" else LIST_MAX_TOKENS)
        final = list(guarded(self.llm.stream(messages, params), question))[-1].completion
        return final.text.strip() if final is not None else ""


def lines(text: str) -> list[str]:
    """The queries of a model's list: one per line, bullets, numbers and quotes taken off, empty ones dropped."""
    out = []
    for line in text.splitlines():
        query = _BULLET.sub("", line).strip().strip("\"“”'").strip()
        if query:
            out.append(query)
    return out[:MAX_VARIANTS]
