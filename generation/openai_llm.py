"""OpenAICompatibleLLM: any server speaking OpenAI's chat-completions protocol (OpenAI, Azure OpenAI, vLLM, SGLang,
LightLLM, Ollama, llama.cpp's server, this service's own /v1/chat/completions), through the official SDK."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import openai

from kb_service.core.errors import InvalidInput, LLMRefused, LLMTimeout, LLMUnavailable
from kb_service.generation.llm import (
    Completion,
    Delta,
    FinishReason,
    GenerationParams,
    Message,
    ThinkSplitter,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
    cancelled,
)

DEFAULT_CONTEXT_WINDOW = 8192
# Statuses that say the request was wrong (its caller can fix it), not that the server or its set-up is; 401, 403
# and 404 (a wrong key or model name) are the service's configuration, 408 and 429 are transient.
REFUSALS = {400, 413, 415, 422}
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
        for name in ("presence_penalty", "frequency_penalty", "top_logprobs"):
            if getattr(params, name) is not None:
                kwargs[name] = getattr(params, name)
        if params.logprobs:
            kwargs["logprobs"] = True
        if params.response_format is not None:
            kwargs["response_format"] = params.response_format.openai()
        if params.tools:
            kwargs["tools"] = list(params.tools)
        if params.tool_choice is not None:
            kwargs["tool_choice"] = params.tool_choice
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
            if exc.status_code in REFUSALS:  # the request itself was wrong (a schema, a tool the model lacks …)
                raise LLMRefused(
                    f"LLM server at {self.client.base_url} refused the request ({exc.status_code}): "
                    f"{_server_message(exc)}"
                ) from exc
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
        calls = [
            ToolCall(call.id, call.function.name, call.function.arguments or "{}")
            for call in message.tool_calls or []
            if getattr(call, "function", None) is not None  # custom (non-function) tools are not passed on
        ]
        return Completion(
            text=splitter.answer,
            reasoning=reasoning,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            finish_reason=_finish(choice.finish_reason),
            model=response.model or self._name,
            tool_calls=calls,
            logprobs=_logprobs(choice) if params.logprobs else None,
        )

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Delta]:
        chunks = self._request(messages, params, stream=True)
        splitter = ThinkSplitter()
        extra_reasoning: list[str] = []
        usage, finish, model = Usage(), "stop", self._name
        calls: dict[int, list[str]] = {}  # index → [id, name, arguments so far]
        logprobs: list[TokenLogprob] = []
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
                piece.tool_calls = [_call_delta(call, calls) for call in choice.delta.tool_calls or []]
                piece.logprobs = _logprobs(choice)
                logprobs += piece.logprobs
                if piece.content or piece.reasoning or piece.tool_calls or piece.logprobs:
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
            tool_calls=[ToolCall(call_id, name, arguments or "{}") for call_id, name, arguments in calls.values()],
            logprobs=logprobs if params.logprobs else None,
        )
        yield Delta(completion=completion)


def _reasoning_field(obj: Any) -> str:
    """``reasoning_content`` (DeepSeek, vLLM, SGLang) or ``reasoning`` (Ollama, OpenRouter): not in the SDK's types."""
    extra = getattr(obj, "model_extra", None) or {}
    return str(extra.get("reasoning_content") or extra.get("reasoning") or "")


def _finish(reason: str | None) -> FinishReason:
    if reason in ("length", "tool_calls"):
        return reason  # type: ignore[return-value]
    return "stop"


def _call_delta(call: Any, calls: dict[int, list[str]]) -> ToolCallDelta:
    """A streamed piece of a tool call, also gathered into ``calls`` (the first piece of each has id and name)."""
    function = call.function
    entry = calls.setdefault(call.index, ["", "", ""])
    if call.id:
        entry[0] = call.id
    if function is not None and function.name:
        entry[1] = function.name
    arguments = (function.arguments if function is not None else None) or ""
    entry[2] += arguments
    return ToolCallDelta(call.index, call.id, function.name if function is not None else None, arguments)


def _logprobs(choice: Any) -> list[TokenLogprob]:
    content = getattr(getattr(choice, "logprobs", None), "content", None) or []
    return [
        TokenLogprob(t.token, t.logprob, tuple((alt.token, alt.logprob) for alt in t.top_logprobs or []))
        for t in content
    ]


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
