"""Answers end to end with the real offline model (SmolLM2-135M-Instruct) over both stores: generation,
streaming, citations, refusals without sources, and the extractive fallback when no model can answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb_service.core.config import Settings
from kb_service.core.errors import LLMUnavailable
from kb_service.core.records import KnowledgeBase
from kb_service.generation.answer import Answer, Answerer, AskOptions
from kb_service.generation.factory import ask_options, build_answerer, build_llm, build_summarizer
from kb_service.generation.guard import guarded
from kb_service.generation.llm import Delta, GenerationParams
from kb_service.generation.openai_llm import OpenAICompatibleLLM
from kb_service.generation.summarize import LLMSummarizer
from kb_service.generation.transformers_llm import TransformersLLM
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.ingest.summarize import ExtractiveSummarizer
from kb_service.retrieval.lexical import LexicalIndexes
from kb_service.retrieval.pipeline import Retriever, SearchOptions
from kb_service.stores.base import VectorStore

pytestmark = pytest.mark.integration

CORPUS = {
    "eiffel.md": "# Eiffel Tower\n\nThe Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in "
    "1889 for the World's Fair and is 330 metres tall.",
    "bread.md": "# Bread\n\nKnead the dough for ten minutes, let it rise for an hour, then bake it at 220 degrees "
    "until the crust is brown.",
    "熊猫.txt": "大熊猫是中国特有的熊科动物，主要栖息在四川、陕西和甘肃的山区，以竹子为主要食物。",
}
SETTINGS = Settings(chunk_size=64, chunk_overlap=8)
NO_RERANK = SearchOptions(rerank=False)


@pytest.fixture(scope="session")
def smollm() -> TransformersLLM:
    llm, why = build_llm(Settings())
    assert isinstance(llm, TransformersLLM), why
    return llm


@pytest.fixture
def retriever(store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path) -> Iterator[Retriever]:  # type: ignore[no-untyped-def]
    Ingestor.from_settings(SETTINGS, store=store, kb=kb, embedder=embedder).ingest(
        [SourceItem(name, text=text) for name, text in CORPUS.items()]
    )
    yield Retriever(store, LexicalIndexes(store, tmp_path / "lexical"))


def options(**params: object) -> AskOptions:
    return ask_options(SETTINGS, search=NO_RERANK, **params)


def test_the_default_local_model_loads_offline_and_streams_what_it_completes(smollm: TransformersLLM) -> None:
    assert smollm.name == "HuggingFaceTB/SmolLM2-135M-Instruct" and smollm.context_window == 8192
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    whole = smollm.complete(messages, GenerationParams(max_tokens=20))  # type: ignore[arg-type]
    assert "Paris" in whole.text and whole.finish_reason == "stop"
    assert whole.usage.prompt_tokens > 10 and 0 < whole.usage.completion_tokens <= 20
    deltas = list(smollm.stream(messages, GenerationParams(max_tokens=20)))  # type: ignore[arg-type]
    final = deltas[-1].completion
    assert final is not None and final.text == whole.text
    assert "".join(d.content for d in deltas[:-1]).strip() == whole.text
    short = smollm.complete(messages, GenerationParams(max_tokens=2))  # type: ignore[arg-type]
    assert short.finish_reason == "length" and short.usage.completion_tokens == 2
    stopped = smollm.complete(messages, GenerationParams(max_tokens=20, stop=("Paris",)))  # type: ignore[arg-type]
    assert "Paris" not in stopped.text and stopped.finish_reason == "stop"


def test_ask_answers_with_sources_citations_usage_and_timings(
    smollm: TransformersLLM, retriever: Retriever, kb: KnowledgeBase, embedder
) -> None:  # type: ignore[no-untyped-def]
    answerer = build_answerer(SETTINGS, retriever, smollm)
    question = "In which year was the Eiffel Tower completed?"
    answer = answerer.ask(
        answerer.retriever.on(kb, embedder), question, options=options(max_tokens=48, answer_mode="generated")
    )
    assert answer.mode == "generated" and "1889" in answer.text and not answer.refused
    assert answer.sources[0].source == "eiffel.md" or any(s.source == "eiffel.md" for s in answer.sources[:1])
    assert answer.citations, answer.text
    assert {c.source for c in answer.citations} == {"eiffel.md"} and "1889" in answer.citations[0].snippet
    chunk_text = next(s.text for s in answer.sources if s.number == answer.citations[0].number)
    c = answer.citations[0]
    assert chunk_text[c.evidence_start : c.evidence_end] == c.snippet and c.support >= 0.5 and c.claim
    assert answer.usage.prompt_tokens > 50 and answer.usage.completion_tokens > 0
    assert {"retrieve", "prompt", "first_token", "generate", "total"} <= set(answer.timings_ms)

    # streamed text == the final text, claim by claim, and the same as the whole answer (greedy decoding)
    events = list(
        answerer.stream(
            answerer.retriever.on(kb, embedder), question, options=options(max_tokens=48, answer_mode="generated")
        )
    )
    final = events[-1]
    assert isinstance(final, Answer) and all(isinstance(e, Delta) for e in events[:-1])
    assert "".join(e.content for e in events[:-1] if isinstance(e, Delta)) == final.text == answer.text
    assert [(c.number, c.evidence_start) for c in final.citations] == [
        (c.number, c.evidence_start) for c in answer.citations
    ]


def test_the_offline_default_quotes_cited_sentences_and_declines_what_the_sources_lack(
    smollm: TransformersLLM, retriever: Retriever, kb: KnowledgeBase, embedder
) -> None:  # type: ignore[no-untyped-def]
    answerer = build_answerer(SETTINGS, retriever, smollm)
    assert not answerer.generates  # the packaged 135M model is not used for answers unless asked for
    answer = answerer.ask(answerer.retriever.on(kb, embedder), "How tall is the Eiffel Tower?", options=options())
    assert answer.mode == "extractive" and not answer.llm_error and not answer.refused
    assert answer.text.startswith("According to the sources:") and "330 metres tall [" in answer.text
    assert {c.source for c in answer.citations} == {"eiffel.md"} and answer.citations[0].support == 1.0
    assert not answer.unsupported_claims
    declined = answerer.ask(
        answerer.retriever.on(kb, embedder), "Who won the 1998 football World Cup?", options=options()
    )
    assert declined.refused and declined.text == "The sources do not contain the answer." and not declined.citations


REPEAT = "Repeat after me, many times."
ECHO = " ".join(["The Eiffel Tower is in Paris [1]."] * 4)  # SmolLM2 answers this with a loop (greedy, measured)


def test_a_repeating_model_is_stopped_and_cut_at_its_last_good_sentence(smollm: TransformersLLM) -> None:
    messages = [{"role": "system", "content": REPEAT}, {"role": "user", "content": ECHO}]
    params = GenerationParams(max_tokens=200)
    raw = smollm.complete(messages, params)  # type: ignore[arg-type]
    said = [s.strip() for s in re.split(r"(?<=[.!?])\s+", raw.text) if s.strip()]
    assert len(said) > len(set(said))  # unguarded (but for the 20-token verbatim LoopStop) it repeats itself
    deltas = list(guarded(smollm.stream(messages, params), ECHO))  # type: ignore[arg-type]
    final = deltas[-1].completion
    assert final is not None and final.finish_reason == "repetition"
    assert "".join(d.content for d in deltas[:-1]) == final.text and raw.text.startswith(final.text.strip())
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", final.text) if s.strip()]
    assert sentences and len(sentences) == len(set(sentences))  # never a repeated sentence
    assert final.usage.completion_tokens < raw.usage.completion_tokens  # the model was stopped early


def test_without_a_model_answers_are_extractive_and_flagged(retriever: Retriever, kb: KnowledgeBase, embedder) -> None:  # type: ignore[no-untyped-def]
    none = build_answerer(Settings(llm_backend="none"), retriever, None, "the language model is switched off")
    question = "how tall is the Eiffel Tower"
    answer = none.ask(none.retriever.on(kb, embedder), question, options=options(answer_mode="generated"))
    assert answer.mode == "extractive" and "switched off" in answer.llm_error
    assert answer.citations[0].source == "eiffel.md" and "330 metres" in answer.text

    down = OpenAICompatibleLLM(model="m", base_url="http://127.0.0.1:9/v1", api_key=None, timeout_s=5, max_retries=0)
    answerer = build_answerer(SETTINGS, retriever, down)
    assert answerer.generates  # a server's model writes the answers by default
    answer = answerer.ask(answerer.retriever.on(kb, embedder), "how tall is the Eiffel Tower", options=options())
    assert answer.mode == "extractive" and "cannot reach the LLM server at http://127.0.0.1:9/v1" in answer.llm_error
    with pytest.raises(LLMUnavailable, match="cannot reach the LLM server"):
        answerer.ask(
            answerer.retriever.on(kb, embedder), "how tall is the Eiffel Tower", options=options(fallback=False)
        )


def test_no_sources_means_a_refusal_in_the_question_language(
    smollm: TransformersLLM, store: VectorStore, kb: KnowledgeBase, embedder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    answerer: Answerer = build_answerer(SETTINGS, Retriever(store, LexicalIndexes(store, tmp_path)), smollm)
    answer = answerer.ask(answerer.retriever.on(kb, embedder), "大熊猫吃什么？", options=options())
    assert answer.mode == "no_sources" and answer.refused and answer.text.startswith("信息不足")
    assert answer.sources == [] and answer.usage.completion_tokens == 0


LONG_DOC = "# Pumps\n\n" + " ".join(
    f"Centrifugal pump model P{i} moves {i * 10} litres of water per minute with a spinning impeller."
    for i in range(40)
)


def test_llm_summaries_with_concurrency_and_the_extractive_fallback(
    smollm: TransformersLLM, store: VectorStore, kb: KnowledgeBase, embedder
) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(chunk_size=64, chunk_overlap=8, summary_backend="llm", summary_concurrency=2)
    docs = [SourceItem("pumps.md", text=LONG_DOC), SourceItem("short.md", text="# Note\n\nOne short line.")]
    summarizer = build_summarizer(settings, smollm, embedder)
    assert isinstance(summarizer, LLMSummarizer) and summarizer.concurrency == 2
    results = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder, summarizer=summarizer).ingest(
        docs
    )
    by_name = {r.source: r for r in results}
    stored = store.get_documents(kb, [by_name["pumps.md"].doc_id, by_name["short.md"].doc_id])
    pumps, short = stored[by_name["pumps.md"].doc_id], stored[by_name["short.md"].doc_id]
    extractive = ExtractiveSummarizer(embedder.count_tokens, budget_tokens=200)
    assert pumps.summary.startswith("Pumps\n") and len(pumps.summary) > 20
    assert embedder.count_tokens(pumps.summary) <= 256 + 16
    assert short.summary == "# Note\n\nOne short line."  # one chunk: its own summary, no model call
    calls: list[str] = []
    summarizer.summarize = lambda doc, chunks: calls.append(doc.source) or ""  # type: ignore[method-assign]
    again = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder, summarizer=summarizer).ingest(docs)
    assert [r.outcome.value for r in again] == ["unchanged", "unchanged"] and calls == []  # no model call

    down = OpenAICompatibleLLM(model="m", base_url="http://127.0.0.1:9/v1", api_key=None, timeout_s=5, max_retries=0)
    fallback = build_summarizer(settings, down, embedder)
    assert fallback is not None
    parsed = SourceItem("pumps.md", text=LONG_DOC).parse(max_bytes=10**6)
    chunks = Ingestor.from_settings(settings, store=store, kb=kb, embedder=embedder).chunker.split(parsed, "d")
    assert fallback.summarize(parsed, chunks) == extractive.summarize(parsed, chunks)
    assert build_summarizer(Settings(), smollm, embedder) is None  # extractive unless configured
