"""Function calling on a local model: whether its chat template renders tools, the messages in the shape chat
templates expect, and the calls read back from what the model wrote: Hermes and Qwen ``<tool_call>`` blocks,
Mistral's ``[TOOL_CALLS]`` list, Llama 3's bare JSON object. A server that takes ``tools`` (OpenAI, vLLM, Ollama …)
does all of this itself; nothing here runs for it."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from kb_service.generation.llm import GenerationParams, Message, ToolCall
from kb_service.generation.structured import FormatViolation, check_against

PROBE_NAME = "kb_probe_function"
_PROBE_TOOL = {
    "type": "function",
    "function": {"name": PROBE_NAME, "description": "probe", "parameters": {"type": "object", "properties": {}}},
}
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_MARK = "[TOOL_CALLS]"
_HERMES = re.compile(re.escape(HERMES_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(HERMES_CLOSE) + r"|$)", re.DOTALL)


def renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template puts a request's tools in the prompt (many templates ignore them silently)."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tools=[_PROBE_TOOL], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # a template that fails on tools does not support them
        return False
    return PROBE_NAME in str(text)


def uses_tools(messages: Sequence[Message], params: GenerationParams) -> bool:
    """Whether a request needs function calling: tools to offer, or calls and tool results in its messages."""
    return bool(params.tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI-style messages as chat templates take them: a call's arguments as an object, not JSON text."""
    out: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            entry["tool_calls"] = [
                {
                    "id": call.get("id"),
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": _arguments(call["function"].get("arguments") or "{}"),
                    },
                }
                for call in m["tool_calls"]
            ]
        for key in ("tool_call_id", "name"):
            if key in m:
                entry[key] = m[key]
        out.append(entry)
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_calls(text: str, params: GenerationParams) -> tuple[str, list[ToolCall]]:
    """(the text that is not a call, the calls) of a model's answer, each call checked against its function's
    ``parameters`` schema and against ``tool_choice``. Raises FormatViolation."""
    content, bodies = _split(text)
    calls = [_call(body, params) for body in bodies]
    if params.tool_choice == "required" and not calls:
        raise FormatViolation("a function call is required: answer with a <tool_call> block")
    forced = params.forced_tool
    if forced is not None and (not calls or any(c.name != forced for c in calls)):
        raise FormatViolation(f"call the function {forced!r}")
    return content, calls


def _split(text: str) -> tuple[str, list[Any]]:
    if HERMES_OPEN in text:
        bodies = [_load(m.group(1)) for m in _HERMES.finditer(text)]
        return _HERMES.sub("", text).strip(), bodies
    if MISTRAL_MARK in text:
        before, _, after = text.partition(MISTRAL_MARK)
        listed = _load(after.strip())
        return before.strip(), listed if isinstance(listed, list) else [listed]
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return text, []
        if isinstance(value, dict) and "name" in value and ("arguments" in value or "parameters" in value):
            return "", [value]
    return text, []


def _load(body: str) -> Any:
    body = body.strip()
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        try:  # a call whose outer brace the model left out ({"name": …, "arguments": {…} </tool_call>)
            value, _ = json.JSONDecoder().raw_decode(body + "}")
        except json.JSONDecodeError:
            raise FormatViolation(f"a function call is not valid JSON: {exc.msg}") from exc
    return value


def _call(body: Any, params: GenerationParams) -> ToolCall:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise FormatViolation('a function call must be an object {"name": ..., "arguments": {...}}')
    name = body["name"]
    spec = next((t["function"] for t in params.tools if t["function"]["name"] == name), None)
    if spec is None:
        raise FormatViolation(f"there is no function {name!r}; the functions are {params.tool_names}")
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _load(arguments)
    if not isinstance(arguments, dict):
        raise FormatViolation(f"the arguments of {name!r} must be a JSON object")
    if spec.get("parameters"):
        check_against(arguments, spec["parameters"])
    return ToolCall(id="call_" + uuid.uuid4().hex[:24], name=name, arguments=json.dumps(arguments, ensure_ascii=False))
