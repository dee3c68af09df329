"""Builds the generation parts from Settings: the LLM (or the reason there is none), the prompt builder, the
Answerer and per-request ask options."""

from __future__ import annotations

import logging
from typing import Any

from kb_service.core.config import Settings
from kb_service.core.errors import LLMUnavailable
from kb_service.embeddings.base import Embedder
from kb_service.generation.answer import Answerer, AskOptions
from kb_service.generation.compress import Compressor
from kb_service.generation.llm import LLM, GenerationParams
from kb_service.generation.openai_llm import OpenAICompatibleLLM
from kb_service.generation.prompt import PromptBuilder, PromptTemplates
from kb_service.generation.summarize import LLMSummarizer
from kb_service.ingest.summarize import ExtractiveSummarizer, Summarizer
from kb_service.retrieval.pipeline import Retriever, SearchOptions

log = logging.getLogger(__name__)


def build_llm(settings: Settings) -> tuple[LLM | None, str]:
    """The configured LLM, loaded now; or None and why (answers are then extractive)."""
    backend = settings.llm.backend
    if backend == "none":
        return None, "the language model is switched off (KB_LLM_BACKEND=none)"
    if backend == "openai" or (backend == "auto" and settings.llm.api_base):
        key = settings.llm.api_key.get_secret_value() if settings.llm.api_key else None
        return (
            OpenAICompatibleLLM(
                model=settings.llm.model,
                base_url=settings.llm.api_base,
                api_key=key,
                timeout_s=settings.llm.timeout_s,
                context_window=settings.llm.context_window,
                count_tokens=_tokenizer_counter(settings.llm.tokenizer),
            ),
            "",
        )
    from kb_service.generation.transformers_llm import TransformersLLM

    try:
        llm = TransformersLLM(
            settings.llm.model,
            device=settings.llm.device,
            fp16=settings.llm.fp16,
            context_window=settings.llm.context_window,
            cache=settings.embedding.model_cache,
        )
    except LLMUnavailable as exc:
        log.warning("answers will be extractive: %s", exc)
        return None, str(exc)
    return llm, ""


def _tokenizer_counter(name: str | None) -> Any:
    if not name:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def build_answerer(
    settings: Settings,
    retriever: Retriever,
    llm: LLM | None,
    llm_error: str = "",
    *,
    compressor: Compressor | None = None,
) -> Answerer:
    """``compressor``: what ``compress`` uses (None: ``compress`` is a 422)."""
    from kb_service.generation.openai_llm import estimate_tokens

    builder = PromptBuilder(
        count_tokens=llm.count_tokens if llm is not None else estimate_tokens,
        context_window=llm.context_window if llm is not None else settings.llm.context_window or 8192,
        budget_tokens=settings.answer.context_tokens,
        max_tokens=settings.generation.max_tokens,
        templates=PromptTemplates(system=settings.answer.prompt_system, user=settings.answer.prompt_user),
    )
    return Answerer(retriever, llm, builder, llm_error=llm_error, generates=is_capable(llm), compressor=compressor)


def is_capable(llm: LLM | None) -> bool:
    """Whether ``auto`` lets this model write answers: any model but the packaged 135M one, which cannot write
    Chinese and rarely declines (measured in docs/BENCHMARKS.md); it stays selectable with answer_mode=generated."""
    if llm is None:
        return False
    if isinstance(llm, OpenAICompatibleLLM):
        return True  # a server the user configured
    from kb_service.generation.transformers_llm import SMOLLM2_NAMES

    return llm.name not in SMOLLM2_NAMES


def generation_params(settings: Settings, given: dict[str, Any]) -> GenerationParams:
    """The configured sampling defaults; a value in ``given`` (popped from it) overrides its default."""
    return GenerationParams(
        max_tokens=given.pop("max_tokens", settings.generation.max_tokens),
        temperature=given.pop("temperature", settings.generation.temperature),
        top_p=given.pop("top_p", settings.generation.top_p),
        top_k=given.pop("top_k", settings.generation.top_k),
        repetition_penalty=given.pop("repetition_penalty", settings.generation.repetition_penalty),
        stop=tuple(given.pop("stop", ())),
        seed=given.pop("seed", None),
        presence_penalty=given.pop("presence_penalty", None),
        frequency_penalty=given.pop("frequency_penalty", None),
    )


def not_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def ask_options(settings: Settings, *, search: SearchOptions | None = None, **overrides: Any) -> AskOptions:
    """Per-request options: the configured defaults, with the ``overrides`` that are not None."""
    given = not_none(overrides)
    params = generation_params(settings, given)
    return AskOptions(
        top_k=given.pop("sources", settings.answer.top_k),
        params=params,
        search=search or SearchOptions.from_settings(settings),
        rewrite=given.pop("rewrite", settings.answer.query_rewrite),
        fallback=given.pop("fallback", settings.llm.fallback),
        mode=given.pop("answer_mode", settings.answer.mode),
        verify=given.pop("verify", settings.answer.verify),
        unsupported=given.pop("unsupported", settings.answer.unsupported),
        compress=given.pop("compress", settings.answer.compress),
        synthesis=given.pop("synthesis", settings.answer.synthesis),
        **given,
    )


def build_summarizer(settings: Settings, llm: LLM | None, embedder: Embedder) -> Summarizer | None:
    """The LLM summarizer when ``KB_SUMMARY_BACKEND=llm`` and a model is loaded; None means the extractive default."""
    if settings.ingest.summary_backend != "llm" or llm is None:
        return None
    budget = min(settings.ingest.summary_tokens, embedder.info.max_tokens)
    return LLMSummarizer(
        llm,
        fallback=ExtractiveSummarizer(embedder.count_tokens, budget_tokens=budget),
        input_tokens=settings.ingest.summary_input_tokens,
        summary_tokens=budget,
        concurrency=settings.ingest.summary_concurrency,
    )
