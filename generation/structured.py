"""Structured output where the model does not enforce it itself (the local backend): the instruction that asks for
JSON, and the check of what came back (one JSON object; valid against the request's JSON Schema). A server that
takes ``response_format`` (OpenAI, vLLM, Ollama …) enforces it there; nothing here runs for it."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import jsonschema.validators
import referencing.exceptions

from kb_service.core.errors import InvalidInput
from kb_service.generation.llm import ResponseFormat

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class FormatViolation(ValueError):
    """What is wrong with an answer, in words the model can be told when it is asked again."""


def check_schema(schema: dict[str, Any], where: str) -> None:
    """Refuse a schema that is not a JSON Schema before any model runs."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"{where} is not a valid JSON Schema: {exc.message}") from exc


def instruction(fmt: ResponseFormat) -> str:
    """The system text that asks a model for the format."""
    text = "Answer with one JSON object and nothing else: no prose, no code fence."
    if fmt.type == "json_schema" and fmt.schema is not None:
        text += " The object must be valid against this JSON Schema:\n" + json.dumps(fmt.schema, ensure_ascii=False)
    return text


def parse_json(text: str, fmt: ResponseFormat) -> str:
    """The JSON object in ``text`` (a code fence or text around it is dropped), checked against the format, as
    compact JSON text. Raises FormatViolation."""
    fenced = _FENCE.search(text)
    body = (fenced.group(1) if fenced else text).strip()
    start = body.find("{")
    if start < 0:
        raise FormatViolation("the answer holds no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(body, start)
    except json.JSONDecodeError as exc:
        raise FormatViolation(f"the JSON is malformed: {exc.msg} at character {exc.pos}") from exc
    if not isinstance(value, dict):
        raise FormatViolation("the answer must be a JSON object")
    if fmt.type == "json_schema" and fmt.schema is not None:
        check_against(value, fmt.schema)
    return json.dumps(value, ensure_ascii=False)


def check_against(value: Any, schema: dict[str, Any]) -> None:
    """Raises FormatViolation where ``value`` does not match ``schema``; InvalidInput where the schema cannot be
    applied (a ``$ref`` to a document elsewhere: nothing is fetched)."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:
        raise InvalidInput(f"the JSON Schema cannot be applied: it refers to {exc.ref!r}, which is not in it") from exc
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path)
        raise FormatViolation(f"the JSON does not match the schema{f' at {at}' if at else ''}: {error.message}")
