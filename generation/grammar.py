"""Constrained decoding for the local backend (llguidance): where a request demands JSON (``response_format``) or a
function call (``tool_choice`` required or named), only tokens that keep the answer valid against the JSON Schema
may be sampled, so even a 135M-parameter model writes a parseable, valid object on its first try. What llguidance
cannot compile (a rare schema feature) falls back to writing freely, then checking and asking again."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from kb_service.generation.llm import GenerationParams
from kb_service.generation.tools import HERMES_CLOSE, HERMES_OPEN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shape:
    """What the model must write: ``prefix`` (written for it), then JSON valid against ``schema``, then
    ``suffix`` (appended for it)."""

    schema: dict[str, Any]
    prefix: str = ""
    suffix: str = ""


def call_schema(params: GenerationParams) -> dict[str, Any]:
    """One function call, ``{"name": ..., "arguments": {...}}``, of the named function or any offered one."""
    names = [params.forced_tool] if params.forced_tool is not None else params.tool_names
    options = []
    for tool in params.tools:
        function = tool["function"]
        if function["name"] in names:
            options.append(
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": function["name"]},
                        "arguments": function.get("parameters") or {"type": "object"},
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
            )
    return options[0] if len(options) == 1 else {"anyOf": options}


def shape(params: GenerationParams, template: str) -> Shape | None:
    """The shape a request forces, or None where the model writes freely (plain text; ``tool_choice`` auto)."""
    offered = bool(params.tools) and params.tool_choice != "none"
    if offered and (params.tool_choice == "required" or params.forced_tool is not None):
        if HERMES_OPEN in template:
            return Shape(call_schema(params), HERMES_OPEN + "\n", "\n" + HERMES_CLOSE)
        return Shape(call_schema(params))  # read back as a bare JSON call (Llama 3's format)
    if params.response_format is not None and not offered:
        return Shape(params.response_format.schema or {"type": "object"})
    return None


class Grammars:
    """Compiles schemas against one model's tokenizer (whose llguidance form is built once, on first use) and
    hands out a fresh logits processor per generation."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ll: Any = None
        self._lock = threading.Lock()

    def _ll_tokenizer(self) -> Any:
        with self._lock:
            if self._ll is None:
                import llguidance.hf

                self._ll = llguidance.hf.from_tokenizer(self._tokenizer)
        return self._ll

    def processor(self, schema: dict[str, Any], prompt_tokens: int) -> JsonConstraint | None:
        """A processor that keeps generation inside ``schema``, or None where it cannot be compiled."""
        import llguidance

        try:
            tokenizer = self._ll_tokenizer()
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
            matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        except (ValueError, TypeError) as exc:
            log.debug("schema not compiled for constrained decoding: %s", exc)
            return None
        if matcher.is_error():
            log.debug("schema not compiled for constrained decoding: %s", matcher.get_error())
            return None
        return JsonConstraint(matcher, prompt_tokens)


class JsonConstraint:
    """A transformers logits processor: feeds each generated token to the matcher, then allows only the tokens
    the grammar accepts next (the end of the text once the object is complete)."""

    def __init__(self, matcher: Any, prompt_tokens: int) -> None:
        self.matcher = matcher
        self.start = prompt_tokens
        self.fed = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[0, self.start :].tolist()
        for token in generated[self.fed :]:
            self.matcher.consume_token(token)
        self.fed = len(generated)
        if self.matcher.is_error():  # cannot happen with the mask applied; leave the text to the check after
            return scores
        bias = torch.frombuffer(bytearray(self.matcher.compute_logit_bias()), dtype=torch.uint8)
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool)
        n = min(scores.shape[-1], bias.numel())
        allowed[:n] = bias[:n] > 0
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))
