"""OpenAICompatibleLLM: any server speaking OpenAI's chat-completions protocol (OpenAI, Azure OpenAI, vLLM, SGLang,
LightLLM, Ollama, llama.cpp's server, this service's own /v1/chat/completions), through the official SDK."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import openai

from kb_service.core.errors import InvalidInput, LLMTimeout, LLMUnavailable
from kb_service.generation.llm import (
    Completion,
    Delta,
    FinishReason,
    GenerationParams,
    Message,
    ThinkSplitter,
    Usage,
    cancelled,
)

DEFAULT_CONTEXT_WINDOW = 8192
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """A conservative token estimate when the server's tokenizer is not at hand: one token per CJK character,
    one per three other characters (BPE tokenizers average about four for English)."""
    cjk = len(_CJK.findall(text))
    return cjk + -(-(len(text) - cjk) // 3)


class OpenAICompatibleLLM:
    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float = 60.0,
        max_retries: int = 1,
        context_window: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if not model:
            raise InvalidInput("an OpenAI-compatible LLM needs a model name (KB_LLM_MODEL)")
        self._name = model
        self._context_window = context_window or DEFAULT_CONTEXT_WINDOW
        self._count = count_tokens or estimate_tokens
        # Local servers accept any key; the SDK insists on one being set.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=max_retries
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._context_window

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def _request(self, messages: Sequence[Message], params: GenerationParams, *, stream: bool) -> Any:
        kwargs: dict[str, Any] = {
            "model": self._name,
            "messages": list(messages),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
        }
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        # not in OpenAI's schema; vLLM, SGLang, llama.cpp and Ollama accept them in the body
        extra: dict[str, float] = {}
        if params.top_k is not None:
            extra["top_k"] = params.top_k
        if params.repetition_penalty is not None:
            extra["repetition_penalty"] = params.repetition_penalty
        if extra:
            kwargs["extra_body"] = extra
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        try:
            return self.client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise LLMTimeout(f"LLM server at {self.client.base_url} did not answer in time: {exc}") from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailable(f"cannot reach the LLM server at {self.client.base_url}: {exc}") from exc
        except openai.APIStatusError as exc:
            raise LLMUnavailable(
                f"LLM server at {self.client.base_url} answered {exc.status_code}: {_server_message(exc)}"
            ) from exc

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        response = self._request(messages, params, stream=False)
        if not response.choices:
            raise LLMUnavailable(f"LLM server at {self.client.base_url} returned no choices")
        choice = response.choices[0]
        message = choice.message
        splitter = ThinkSplitter()
        splitter.feed(message.content or "")
        splitter.flush()
        reasoning = _reasoning_field(message) or splitter.thinking
        usage = response.usage
        return Completion(
            text=splitter.answer,
            reasoning=reasoning,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            finish_reason=_finish(choice.finish_reason),
            model=response.model or self._name,
        )

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Delta]:
        chunks = self._request(messages, params, stream=True)
        splitter = ThinkSplitter()
        extra_reasoning: list[str] = []
        usage, finish, model = Usage(), "stop", self._name
        cancel = cancelled()
        try:
            for chunk in chunks:
                if cancel is not None and cancel.is_set():
                    break  # the client went away: closing the response ends the server's generation
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                model = chunk.model or model
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.finish_reason:
                    finish = choice.finish_reason
                thinking = _reasoning_field(choice.delta)
                if thinking:
                    extra_reasoning.append(thinking)
                    yield Delta(reasoning=thinking)
                piece = splitter.feed(choice.delta.content or "")
                if piece.content or piece.reasoning:
                    yield piece
        except (openai.APIError, openai.APIConnectionError) as exc:
            raise LLMUnavailable(f"the LLM stream from {self.client.base_url} broke off: {exc}") from exc
        finally:
            chunks.close()  # a reader that stops early (guard, failed check, client gone) ends the server's generation
        tail = splitter.flush()
        if tail.content or tail.reasoning:
            yield tail
        completion = Completion(
            text=splitter.answer,
            reasoning="".join(extra_reasoning).strip() or splitter.thinking,
            usage=usage,
            finish_reason=_finish(finish),
            model=model,
        )
        yield Delta(completion=completion)


def _reasoning_field(obj: Any) -> str:
    """``reasoning_content`` (DeepSeek, vLLM, SGLang) or ``reasoning`` (Ollama, OpenRouter): not in the SDK's types."""
    extra = getattr(obj, "model_extra", None) or {}
    return str(extra.get("reasoning_content") or extra.get("reasoning") or "")


def _finish(reason: str | None) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
