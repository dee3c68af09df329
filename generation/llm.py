"""The LLM seam: one Protocol for local and remote chat models, their sampling parameters and their results."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict

from kb_service.core import limits
from kb_service.core.errors import InvalidInput
from kb_service.core.limits import DEFAULT_MAX_TOKENS

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error", "repetition"]


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
        return self


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


@dataclass
class Delta:
    """One piece of a stream. Text goes to ``content`` or ``reasoning``; the last delta carries ``completion``."""

    content: str = ""
    reasoning: str = ""
    completion: Completion | None = None


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
