"""Prompt packing, ordering, languages and templates; citation checking and attribution; the <think> splitter and
parameter validation. No model needed: tokens are counted as whitespace-separated words."""

from __future__ import annotations

import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import InvalidInput
from kb_service.core.records import Chunk, ScoredChunk
from kb_service.generation.answer import _validate_history
from kb_service.generation.extractive import compose
from kb_service.generation.llm import GenerationParams, ThinkSplitter, split_thinking
from kb_service.generation.prompt import REFUSAL, PromptBuilder, PromptTemplates, detect_language, edges_first
from kb_service.generation.verify import ClaimStream, Verifier, is_refusal

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


def _checked(text: str, sources, lang: str = "en", **kw: object) -> list:  # type: ignore[no-untyped-def]
    stream = ClaimStream(Verifier(sources, lang, refusal=REFUSAL[lang], **kw))  # type: ignore[arg-type]
    out = []
    for i in range(0, len(text), 3):  # as a model streams it: a few characters at a time
        out += stream.feed(text[i : i + 3])
    return out + stream.close()


def test_citations_are_checked_claim_by_claim_against_the_sources() -> None:
    prompt = builder().build(
        "q", [hit(1, "Paris is in France. It is big."), hit(2, "Rome is the capital of Italy.")], max_tokens=None
    )
    claims = _checked(
        "Paris is in France [1]. Rome is the capital of Italy [2, 7]. Madrid is in Spain [9].", prompt.sources
    )
    assert [c.text.strip() for c in claims] == [
        "Paris is in France [1].",
        "Rome is the capital of Italy [2].",
        "Madrid is in Spain.",
    ]
    assert claims[1].invalid == [7] and claims[2].invalid == [9]
    first = claims[0].citations[0]
    assert (first.number, first.status, first.evidence.score) == (1, "verified", 1.0)
    assert prompt.sources[0].text[first.evidence.start : first.evidence.end] == "Paris is in France."
    assert not claims[2].supported  # Madrid: in no source


def test_a_claim_cited_to_an_unrelated_source_is_corrected_and_a_wrong_number_is_caught() -> None:
    faq = hit(1, "# FAQ\nThe warranty lasts 5 years from the date of purchase. Repairs are free.")
    paper = hit(2, "LayoutParser is a unified toolkit for deep learning based document image analysis.")
    prompt = builder().build("How long is the warranty?", [faq, paper], max_tokens=None)
    number = {s.hit.chunk.id: s.number for s in prompt.sources}
    right, wrong = number["d1:0"], number["d2:0"]
    claims = _checked(f"The warranty lasts 5 years [{wrong}]. The warranty lasts 7 years [{right}].", prompt.sources)
    corrected, seven = claims
    assert corrected.text.strip() == f"The warranty lasts 5 years [{right}]."
    assert corrected.citations[0].status == "corrected"
    assert corrected.citations[0].evidence.text == "The warranty lasts 5 years from the date of purchase."
    assert corrected.removed[0].number == wrong
    assert seven.text.strip() == "The warranty lasts 7 years." and not seven.supported
    assert "does not contain 7" in seven.removed[0].reason


def test_markers_go_to_claim_ends_never_inside_abbreviations_or_numbers() -> None:
    prompt = builder().build(
        "q", [hit(1, "NIKE, Inc. revenues were $51.2 billion in fiscal 2023. See p. 34.")], max_tokens=None
    )
    claims = _checked("NIKE revenues were $51.2 billion in fiscal 2023 [1], see p. 34.", prompt.sources)
    assert [c.text for c in claims] == ["NIKE revenues were $51.2 billion in fiscal 2023, see p. 34 [1]."]


def test_uncited_claims_are_attributed_only_where_support_is_strong() -> None:
    prompt = builder().build(
        "q", [hit(1, "The tower was completed in 1889 in Paris."), hit(2, "Bread rises.")], max_tokens=None
    )
    claims = _checked("The tower was completed in 1889. Bananas are yellow fruit.", prompt.sources)
    assert (
        claims[0].text.strip() == "The tower was completed in 1889 [1]." and claims[0].citations[0].status == "inferred"
    )
    assert claims[1].text == "Bananas are yellow fruit." and not claims[1].supported
    zh_prompt = builder().build("q", [hit(1, "大熊猫主要栖息在四川的山区，以竹子为食。")], max_tokens=None)
    assert [c.text for c in _checked("大熊猫以竹子为食。", zh_prompt.sources, "zh")] == ["大熊猫以竹子为食[1]。"]
    zh = _checked("大熊猫栖息在四川的山区【1】。", zh_prompt.sources, "zh")
    assert zh[0].text == "大熊猫栖息在四川的山区[1]。" and zh[0].citations[0].status == "verified"


def test_repeating_answers_are_cut_at_the_last_good_sentence() -> None:
    prompt = builder().build(
        "q", [hit(1, "保修期为两年。"), hit(2, "See p. 34 and p. 35 for the pump.")], max_tokens=None
    )
    zh = ClaimStream(Verifier(prompt.sources, "zh", refusal=REFUSAL["zh"]))
    out = zh.feed("保修期为两年。没有问题。没有问题。没有问题。") + zh.close()
    assert [c.body for c in out] == ["保修期为两年。", "没有问题。"] and "repeated" in zh.stopped
    loop = ClaimStream(Verifier(prompt.sources, "en", refusal=REFUSAL["en"]))
    got = []
    text = "The pump is described on p [2]. " + " · ".join(f"p [2]. {n}" for n in range(34, 80))
    for i in range(0, len(text), 4):
        got += loop.feed(text[i : i + 4])
        if loop.stopped:
            break
    assert loop.stopped and len(got) < 10
    lines = ClaimStream(Verifier(prompt.sources, "zh", refusal=REFUSAL["zh"]))
    out = lines.feed("1. 说明：\n\n保修期多长？\n\n保修期多长？\n\n保修期多长？") + lines.close()
    assert [c.body for c in out] == ["1. 说明：", "保修期多长？"]


def test_refusals_are_recognised() -> None:
    assert is_refusal("The sources do not contain the answer.", REFUSAL["en"])
    assert is_refusal("信息不足，无法回答。", REFUSAL["zh"])
    assert not is_refusal("It opened in 1889 [1].", REFUSAL["en"])


def test_the_extractive_composer_quotes_cited_sentences_or_declines() -> None:
    prompt = builder().build(
        "How long is the warranty?",
        [hit(1, "The warranty lasts 5 years from the date of purchase. Shipping is free."), hit(2, "Bread rises.")],
        max_tokens=None,
    )
    text, declined = compose("How long is the warranty?", prompt.sources, "en")
    assert (
        not declined
        and text == "According to the sources:\n- The warranty lasts 5 years from the date of purchase. [1]"
    )
    assert compose("Who founded Microsoft?", prompt.sources, "en") == (REFUSAL["en"], True)
    zh = builder().build("保修期多长？", [hit(1, "保修期为两年。如需维修，请联系客服。")], max_tokens=None)
    assert compose("保修期多长？", zh.sources, "zh") == ("根据资料：\n- 保修期为两年。 [1]", False)


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

    from kb_service.generation.transformers_llm import LoopStop

    prompt = [9] * 5
    stop = LoopStop(prompt_tokens=5, window=3)
    looping = torch.tensor([prompt + [1, 2, 3, 4, 1, 2, 3]])
    fresh = torch.tensor([prompt + [1, 2, 3, 4, 5, 6, 7]])
    short = torch.tensor([prompt + [1, 1, 1]])  # too short to call it a loop
    assert stop(looping, None).tolist() == [True]
    assert stop(fresh, None).tolist() == [False] and stop(short, None).tolist() == [False]
    assert stop(torch.cat([looping, fresh]), None).tolist() == [True, False]
