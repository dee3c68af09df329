"""Prompt packing, ordering, languages and templates; citation checking and attribution; the <think> splitter and
parameter validation. No model needed: tokens are counted as whitespace-separated words."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.errors import InvalidInput
from core.records import Chunk, ScoredChunk
from generation.answer import _validate_history, is_refusal
from generation.citations import attribute, resolve_citations
from generation.llm import GenerationParams, ThinkSplitter, split_thinking
from generation.prompt import REFUSAL, PromptBuilder, PromptTemplates, detect_language, edges_first

pytestmark = pytest.mark.unit


def words(text: str) -> int:
    return len(text.split())


def hit(i: int, text: str, **meta: object) -> ScoredChunk:
    chunk = Chunk(id=f"d{i}:0", doc_id=f"d{i}", ord=0, text=text, hash=str(i), page=i, section=f"S{i}")
    chunk.metadata = {"source": f"file{i}.pdf", "title": f"T{i}", **meta}
    return ScoredChunk(chunk=chunk, score=1.0 / i)


def builder(budget: int = 1000, window: int = 4096, **kw: object) -> PromptBuilder:
    return PromptBuilder(count_tokens=words, context_window=window, budget_tokens=budget, max_tokens=100, **kw)  # type: ignore[arg-type]


def test_language_detection() -> None:
    assert detect_language("印控克什米尔地区寺庙踩踏事故死亡人数") == "zh"
    assert detect_language("How tall is the Eiffel Tower?") == "en"
    assert detect_language("What does 熊猫 mean in English?") == "en"  # a few Han characters in English


def test_edges_first_puts_the_strongest_at_both_ends() -> None:
    assert edges_first([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]
    assert edges_first([1, 2]) == [1, 2] and edges_first([]) == []


def test_sources_are_numbered_in_prompt_order_with_file_page_section() -> None:
    hits = [hit(i, f"passage {i} " + "word " * 10) for i in range(1, 6)]
    prompt = builder().build("what is in the passages?", hits, max_tokens=None)
    assert [s.rank for s in prompt.sources] == [1, 3, 5, 4, 2]
    assert [s.number for s in prompt.sources] == [1, 2, 3, 4, 5]
    user = prompt.messages[-1]["content"]
    assert "[1] file1.pdf · p. 1 · S1\npassage 1" in user and "[5] file2.pdf · p. 2 · S2" in user
    assert user.endswith("Question: what is in the passages?")
    assert prompt.messages[0]["role"] == "system" and REFUSAL["en"] in prompt.messages[0]["content"]


def test_packing_trims_the_first_source_that_does_not_fit_and_drops_the_rest() -> None:
    hits = [hit(i, " ".join(f"w{i}_{j}" for j in range(100))) for i in range(1, 5)]
    prompt = builder(budget=280).build("q", hits, max_tokens=None)
    kept = {s.rank: s for s in prompt.sources}
    assert set(kept) == {1, 2, 3} and prompt.dropped == 1
    assert not kept[1].trimmed and not kept[2].trimmed and kept[3].trimmed
    assert kept[3].text.endswith("…") and 48 <= words(kept[3].text) < 100
    assert prompt.source_tokens <= 280


def test_the_context_window_bounds_the_budget_and_is_checked() -> None:
    hits = [hit(i, "x " * 100) for i in range(1, 4)]
    prompt = builder(budget=10_000, window=400).build("q", hits, max_tokens=100)
    assert prompt.source_tokens <= 400 - 100
    with pytest.raises(InvalidInput, match="context window is 400"):
        builder(window=400).build("q " * 350, hits, max_tokens=100)


def test_chinese_questions_get_chinese_instructions_and_history_is_trimmed_oldest_first() -> None:
    history = [{"role": "user", "content": "旧问题 " * 300}, {"role": "assistant", "content": "回答"}]
    prompt = builder().build("大熊猫吃什么？", [hit(1, "大熊猫以竹子为主要食物。")], history=history, max_tokens=None)  # type: ignore[arg-type]
    assert prompt.language == "zh" and "资料：" in prompt.messages[-1]["content"]
    assert REFUSAL["zh"] in prompt.messages[0]["content"]
    assert [m["content"] for m in prompt.messages[1:-1]] == ["回答"]  # the long old turn did not fit


def test_templates_can_be_overridden_and_are_checked() -> None:
    templates = PromptTemplates(system="Be brief. Else say {refusal}", user="Q: {question}\nDocs:\n{sources}")
    prompt = builder(templates=templates).build("why?", [hit(1, "because")], max_tokens=None)
    assert prompt.messages[0]["content"] == f"Be brief. Else say {REFUSAL['en']}"
    assert prompt.messages[-1]["content"].startswith("Q: why?\nDocs:\n[1] file1.pdf")
    with pytest.raises(InvalidInput, match=r"must contain \{sources\}"):
        PromptTemplates(user="{question} only").validate()
    with pytest.raises(ValueError, match=r"KB_PROMPT_USER must contain \{sources\} and \{question\}"):
        Settings(prompt_user="nothing")


def test_citations_are_checked_against_the_sources() -> None:
    prompt = builder().build(
        "q", [hit(1, "Paris is in France. It is big."), hit(2, "Rome is in Italy.")], max_tokens=None
    )
    cited = resolve_citations(
        "Paris is in France [1]. Rome is in Italy [2, 7]. Madrid is in Spain [9].", prompt.sources
    )
    assert cited.text == "Paris is in France [1]. Rome is in Italy [2]. Madrid is in Spain."
    assert cited.invalid == [7, 9]
    by_number = {c.number: c for c in cited.citations}
    assert by_number[1].source == "file1.pdf" and by_number[1].snippet == "Paris is in France."
    assert by_number[2].doc_id == "d2" and by_number[2].page == 2 and not by_number[2].inferred
    zh = resolve_citations("北京是首都【1】，上海很大[1，2]。", prompt.sources)
    assert zh.text == "北京是首都[1]，上海很大[1][2]。" and [c.number for c in zh.citations] == [1, 2]


def test_uncited_sentences_are_attributed_by_textual_support() -> None:
    prompt = builder().build(
        "q", [hit(1, "The tower was completed in 1889 in Paris."), hit(2, "Bread rises.")], max_tokens=None
    )
    out = attribute("The tower was completed in 1889. Bananas are yellow fruit.", prompt.sources)
    assert out.text == "The tower was completed in 1889 [1]. Bananas are yellow fruit."
    assert [(c.number, c.inferred) for c in out.citations] == [(1, True)]
    zh_prompt = builder().build("q", [hit(1, "大熊猫主要栖息在四川的山区，以竹子为食。")], max_tokens=None)
    assert attribute("大熊猫以竹子为食。", zh_prompt.sources).text == "大熊猫以竹子为食[1]。"


def test_refusals_are_recognised() -> None:
    assert is_refusal("The sources do not contain the answer.", REFUSAL["en"])
    assert is_refusal("信息不足，无法回答。", REFUSAL["zh"])
    assert not is_refusal("It opened in 1889 [1].", REFUSAL["en"])


def test_thinking_is_kept_apart_even_when_tags_are_split_across_pieces() -> None:
    splitter = ThinkSplitter()
    pieces = ["<thi", "nk>let me see", "</th", "ink>The answer", " is 4 [1]."]
    deltas = [splitter.feed(p) for p in pieces] + [splitter.flush()]
    assert "".join(d.reasoning for d in deltas) == "let me see"
    assert "".join(d.content for d in deltas) == "The answer is 4 [1]."
    assert split_thinking("no thinking here") == ("no thinking here", "")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (GenerationParams(max_tokens=0), "max_tokens must be between 1 and 32768, got 0"),
        (GenerationParams(temperature=3.0), "temperature must be between 0 and 2, got 3.0"),
        (GenerationParams(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
        (GenerationParams(stop=("",)), "stop takes at most 8 non-empty strings"),
    ],
)
def test_generation_params_are_validated(params: GenerationParams, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        params.validate()


def test_history_is_validated() -> None:
    with pytest.raises(InvalidInput, match=r"history\[0\].role must be"):
        _validate_history([{"role": "tool", "content": "x"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="history has 51 messages; the limit is 50"):
        _validate_history([{"role": "user", "content": "x"}] * 51)


def test_loop_stop_ends_a_generation_that_repeats_itself() -> None:
    import torch

    from generation.transformers_llm import LoopStop

    prompt = [9] * 5
    stop = LoopStop(prompt_tokens=5, window=3)
    looping = torch.tensor([prompt + [1, 2, 3, 4, 1, 2, 3]])
    fresh = torch.tensor([prompt + [1, 2, 3, 4, 5, 6, 7]])
    short = torch.tensor([prompt + [1, 1, 1]])  # too short to call it a loop
    assert stop(looping, None).tolist() == [True]
    assert stop(fresh, None).tolist() == [False] and stop(short, None).tolist() == [False]
    assert stop(torch.cat([looping, fresh]), None).tolist() == [True, False]
