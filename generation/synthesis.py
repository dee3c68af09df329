"""How a model's answer is put together from its sources (``synthesis`` on ask and chat):

- ``compact`` (the default): one prompt with every source;
- ``refine``: an answer from the best group of sources, then rewritten group by group with the next ones;
- ``map_reduce``: a partial answer from each group of sources, then one prompt that combines them.

Groups are ``GROUP_SOURCES`` sources in retrieval order, and every source keeps the number the compact prompt
gave it, so a citation in a partial answer means the same source in the final one. The steps before the last run
whole; the last is streamed and checked claim by claim against all the sources like any answer, so its citations
are verified whichever way it was written. A partial answer that declines (the refusal sentence) is left out; when
every group declines, the compact prompt is asked instead (the sources may answer together what none does alone)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kb_service.generation.llm import LLM, GenerationParams, Message, Usage
from kb_service.generation.prompt import Language, Prompt, Source

Synthesis = Literal["compact", "refine", "map_reduce"]
SYNTHESES: tuple[Synthesis, ...] = ("compact", "refine", "map_reduce")
GROUP_SOURCES = 2  # sources per group

REFINE = {
    "en": (
        "You improve an answer to a question with new numbered sources.\n"
        "Rules:\n"
        "- Keep what the answer so far states and its citations, unless a new source corrects it.\n"
        "- Add facts from the new sources that help answer the question, each cited with its number like [3].\n"
        "- Use only facts stated in the sources; never use outside knowledge.\n"
        "- Reply with the improved answer only, briefly, in the language of the question."
    ),
    "zh": (
        "你根据新的编号资料改进一个问题的答案。\n"
        "规则：\n"
        "- 保留已有答案的内容和引用，除非新资料纠正了它。\n"
        "- 补充新资料中有助于回答问题的事实，并标注编号，例如 [3]。\n"
        "- 只使用资料中写明的事实。\n"
        "- 只回复改进后的答案，用中文简洁地回答。"
    ),
}
COMBINE = {
    "en": (
        "You combine partial answers to a question, each written from some of the numbered sources, into one answer.\n"
        "Rules:\n"
        "- Keep every fact's citation numbers exactly as the partial answers give them, like [1] or [2][3].\n"
        "- Do not add facts that no partial answer states; where they disagree, say so.\n"
        '- If no partial answer answers the question, reply exactly: "{refusal}"\n'
        "- Reply with the answer only, briefly, in the language of the question."
    ),
    "zh": (
        "你把根据不同编号资料写出的若干部分答案合并成一个答案。\n"
        "规则：\n"
        "- 每个事实的引用编号保持原样，例如 [1] 或 [2][3]。\n"
        "- 不要添加部分答案中没有的事实；有矛盾时请说明。\n"
        "- 如果没有部分答案回答了问题，请只回答：“{refusal}”\n"
        "- 只回复答案，用中文简洁地回答。"
    ),
}
LABELS = {
    "en": ("Question", "Answer so far", "New sources", "Partial answers", "Improved answer:", "Answer:"),
    "zh": ("问题", "已有答案", "新资料", "部分答案", "改进后的答案：", "答案："),
}


@dataclass
class Plan:
    """The messages of the last (streamed) step, and what the steps before it cost and wrote."""

    messages: list[Message]
    steps: list[str] = field(default_factory=list)  # each earlier step's text, in order
    usage: Usage = field(default_factory=Usage)


def groups(sources: Sequence[Source], size: int = GROUP_SOURCES) -> list[list[Source]]:
    """The sources in retrieval order, ``size`` at a time."""
    ranked = sorted(sources, key=lambda s: s.rank)
    return [ranked[i : i + size] for i in range(0, len(ranked), size)]


class Synthesizer:
    """``system_for`` / ``user_for``: the compact prompt's templates by language (a group's answer uses them)."""

    def __init__(self, system_for: Callable[[Language], str], user_for: Callable[[Language], str]) -> None:
        self.system_for = system_for
        self.user_for = user_for

    def plan(self, llm: LLM, prompt: Prompt, params: GenerationParams, synthesis: Synthesis) -> Plan:
        """The final step's messages for ``synthesis`` (the compact prompt's own for ``compact`` or one group),
        running the steps before it on ``llm``."""
        parts = groups(prompt.sources)
        if synthesis == "compact" or len(parts) < 2:
            return Plan(prompt.messages)
        lang, question = prompt.language, prompt.question
        history = prompt.messages[1:-1]  # the conversation the compact prompt kept
        plan = Plan([])
        step = GenerationParams(
            max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p, seed=params.seed
        )
        if synthesis == "map_reduce":
            partials = []
            for part in parts:
                text = self._run(llm, self._answer(lang, question, part, history), step, plan)
                if text and not _declines(text, prompt.refusal):
                    partials.append(text)
            if not partials:
                return Plan(prompt.messages, plan.steps, plan.usage)
            plan.messages = self._combine(lang, question, partials, prompt.refusal)
            return plan
        answer = ""
        for n, part in enumerate(parts):
            messages = (
                self._answer(lang, question, part, history)
                if not answer
                else self._refine(lang, question, answer, part)
            )
            if n == len(parts) - 1:
                plan.messages = messages
                return plan
            text = self._run(llm, messages, step, plan)
            if text and not _declines(text, prompt.refusal):
                answer = text
        raise AssertionError("unreachable: the last group returns")

    def _run(self, llm: LLM, messages: list[Message], params: GenerationParams, plan: Plan) -> str:
        completion = llm.complete(messages, params)
        plan.steps.append(completion.text)
        plan.usage = Usage(
            plan.usage.prompt_tokens + completion.usage.prompt_tokens,
            plan.usage.completion_tokens + completion.usage.completion_tokens,
        )
        return completion.text.strip()

    def _answer(self, lang: Language, question: str, part: Sequence[Source], history: list[Message]) -> list[Message]:
        """The compact prompt's instructions over one group of sources (their numbers kept)."""
        user = self.user_for(lang).format(sources=_block(part), question=question)
        return [{"role": "system", "content": self.system_for(lang)}, *history, {"role": "user", "content": user}]

    def _refine(self, lang: Language, question: str, answer: str, part: Sequence[Source]) -> list[Message]:
        q, so_far, new, _, improved, _ = LABELS[lang]
        user = f"{q}: {question}\n\n{so_far}:\n{answer}\n\n{new}:\n{_block(part)}\n\n{improved}"
        return [{"role": "system", "content": REFINE[lang]}, {"role": "user", "content": user}]

    def _combine(self, lang: Language, question: str, partials: Sequence[str], refusal: str) -> list[Message]:
        q, _, _, label, _, done = LABELS[lang]
        listed = "\n\n".join(f"({n}) {text}" for n, text in enumerate(partials, start=1))
        user = f"{q}: {question}\n\n{label}:\n{listed}\n\n{done}"
        return [
            {"role": "system", "content": COMBINE[lang].replace("{refusal}", refusal)},
            {"role": "user", "content": user},
        ]


def _block(part: Sequence[Source]) -> str:
    return "\n\n".join(f"{s.header}\n{s.text}" for s in sorted(part, key=lambda s: s.number))


def _declines(text: str, refusal: str) -> bool:
    return refusal.rstrip(".。").lower() in text.lower()
