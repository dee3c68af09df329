"""The LLM seam: one Protocol for local and remote chat models, their sampling parameters and their results."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from kb_service.core import limits
from kb_service.core.errors import InvalidInput
from kb_service.core.limits import DEFAULT_MAX_TOKENS

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "error", "repetition", "tool_calls"]


# Set by whoever serves a stream to a client that may go away (the API): a backend stops generating, at its next
# token, once it is set. Context variables reach the worker threads a request runs its steps on.
_CANCEL: ContextVar[threading.Event | None] = ContextVar("kb_generation_cancel", default=None)


def cancellation() -> threading.Event:
    """A new cancellation for the generations started from this context on (set it to stop them)."""
    event = threading.Event()
    _CANCEL.set(event)
    return event


def cancelled() -> threading.Event | None:
    """The cancellation of the generations started now, if a caller set one."""
    return _CANCEL.get()


class Message(TypedDict):
    role: Role
    content: str
    # function calling: an assistant's calls (OpenAI's shape, arguments as JSON text), a tool's answer to one
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


@dataclass(frozen=True)
class ResponseFormat:
    """OpenAI's ``response_format``: ``json_object`` (any JSON object) or ``json_schema`` (valid against
    ``schema``)."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False

    def openai(self) -> dict[str, Any]:
        if self.type == "json_object":
            return {"type": "json_object"}
        spec: dict[str, Any] = {"name": self.name, "strict": self.strict}
        if self.schema is not None:
            spec["schema"] = self.schema
        return {"type": "json_schema", "json_schema": spec}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call ``index`` has its id and name."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"arguments": self.arguments}
        if self.name is not None:
            function["name"] = self.name
        out: dict[str, Any] = {"index": self.index, "function": function}
        if self.id is not None:
            out |= {"id": self.id, "type": "function"}
        return out


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log probability and the most likely alternatives (OpenAI's ``logprobs.content``)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()

    def openai(self) -> dict[str, Any]:
        def entry(token: str, logprob: float) -> dict[str, Any]:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

        return entry(self.token, self.logprob) | {"top_logprobs": [entry(t, lp) for t, lp in self.top]}


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters both backends honour. ``temperature == 0`` means greedy decoding; None leaves a
    parameter to the backend's default (remote servers that do not know ``top_k`` never see it)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None
    tools: tuple[dict[str, Any], ...] = ()  # OpenAI function tools: {"type": "function", "function": {...}}
    tool_choice: str | dict[str, Any] | None = None  # none, auto, required or {"type": "function", ...}

    def validate(self) -> GenerationParams:
        if not 1 <= self.max_tokens <= limits.MAX_TOKENS:
            raise InvalidInput(f"max_tokens must be between 1 and {limits.MAX_TOKENS}, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= limits.MAX_TEMPERATURE:
            raise InvalidInput(f"temperature must be between 0 and {limits.MAX_TEMPERATURE:g}, got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= limits.MAX_TOP_P:
            raise InvalidInput(f"top_p must be in (0, {limits.MAX_TOP_P:g}], got {self.top_p}")
        if self.top_k is not None and not 1 <= self.top_k <= limits.MAX_SAMPLING_TOP_K:
            raise InvalidInput(f"top_k must be between 1 and {limits.MAX_SAMPLING_TOP_K}, got {self.top_k}")
        if self.repetition_penalty is not None and not 0.0 < self.repetition_penalty <= limits.MAX_REPETITION_PENALTY:
            raise InvalidInput(
                f"repetition_penalty must be in (0, {limits.MAX_REPETITION_PENALTY:g}], got {self.repetition_penalty}"
            )
        if len(self.stop) > limits.MAX_STOP_SEQUENCES or any(not s for s in self.stop):
            raise InvalidInput(
                f"stop takes at most {limits.MAX_STOP_SEQUENCES} non-empty strings, got {list(self.stop)!r}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None and not -limits.MAX_PENALTY <= value <= limits.MAX_PENALTY:
                bound = f"{limits.MAX_PENALTY:g}"
                raise InvalidInput(f"{name} must be between -{bound} and {bound}, got {value}")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= limits.MAX_TOP_LOGPROBS:
            raise InvalidInput(f"top_logprobs must be between 0 and {limits.MAX_TOP_LOGPROBS}, got {self.top_logprobs}")
        if self.top_logprobs and not self.logprobs:
            raise InvalidInput("top_logprobs needs logprobs: true")
        return self

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def forced_tool(self) -> str | None:
        """The function ``tool_choice`` names, if it names one."""
        if isinstance(self.tool_choice, dict):
            return str(self.tool_choice["function"]["name"])
        return None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    """A finished generation: the answer text, the model's thinking kept apart, usage and why it stopped."""

    text: str
    reasoning: str = ""
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason = "stop"
    model: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None  # when asked for: every generated token


@dataclass
class Delta:
    """One piece of a stream. Text goes to ``content`` or ``reasoning``; the last delta carries ``completion``.
    ``tool_calls`` and ``logprobs`` are pieces of those, where a backend streams them."""

    content: str = ""
    reasoning: str = ""
    completion: Completion | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


class LLM(Protocol):
    """A chat model. ``messages`` are OpenAI-style role/content dicts; the first may be a system message."""

    @property
    def name(self) -> str:
        """Model id reported in answers and by ``/v1/models``."""

    @property
    def context_window(self) -> int:
        """Tokens the model can attend to, prompt and completion together."""

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs in a prompt (the model's own tokenizer where there is one)."""

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        """Generate one answer. Raises LLMUnavailable / LLMTimeout when the model cannot answer."""

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Delta]:
        """Generate incrementally; the final Delta carries the whole Completion."""


def drive(
    deltas: Iterator[Delta], feed: Callable[[str], Iterable[str]], done: Callable[[], bool]
) -> Generator[Delta, None, Completion | None]:
    """Run a model's stream through ``feed`` (text in, the text to show out), passing reasoning on, until the
    stream ends or ``done()``; then close it, which stops the model when the reader ends early. Returns the
    stream's Completion (None when it was stopped before its last delta)."""
    completion: Completion | None = None
    try:
        for delta in deltas:
            if delta.completion is not None:
                completion = delta.completion
                continue
            if delta.reasoning:
                yield Delta(reasoning=delta.reasoning)
            for text in feed(delta.content):
                yield Delta(content=text)
            if done():
                break
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()
    return completion


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Separates ``<think>…</think>`` (reasoning models) from the answer in a stream whose tags may be split
    across pieces. Text before the first tag is answer unless the model opened with ``<think>``."""

    def __init__(self) -> None:
        self.inside = False
        self.pending = ""
        self.reasoning: list[str] = []
        self.content: list[str] = []

    def feed(self, piece: str) -> Delta:
        text = self.pending + piece
        self.pending = ""
        out = Delta()
        while text:
            tag = THINK_CLOSE if self.inside else THINK_OPEN
            at = text.find(tag)
            if at < 0:
                keep = _partial_suffix(text, tag)  # a tag may be cut between two pieces
                self.pending = text[len(text) - keep :] if keep else ""
                self._emit(out, text[: len(text) - keep])
                break
            self._emit(out, text[:at])
            self.inside = not self.inside
            text = text[at + len(tag) :]
        return out

    def flush(self) -> Delta:
        out = Delta()
        self._emit(out, self.pending)
        self.pending = ""
        return out

    def _emit(self, out: Delta, text: str) -> None:
        if not text:
            return
        if self.inside:
            out.reasoning += text
            self.reasoning.append(text)
        else:
            out.content += text
            self.content.append(text)

    @property
    def answer(self) -> str:
        return "".join(self.content).strip()

    @property
    def thinking(self) -> str:
        return "".join(self.reasoning).strip()


def split_thinking(text: str) -> tuple[str, str]:
    """(answer, reasoning) of a whole generation."""
    splitter = ThinkSplitter()
    splitter.feed(text)
    splitter.flush()
    return splitter.answer, splitter.thinking


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
