"""Structured output and function calling for the local backend, piece by piece: reading JSON and calls back from
what a model wrote (each chat-template format), checking them, and the shape constrained decoding holds them to."""

from __future__ import annotations

import json

import pytest

from kb_service.core.errors import InvalidInput
from kb_service.generation.grammar import Grammars, call_schema, shape
from kb_service.generation.llm import GenerationParams, ResponseFormat
from kb_service.generation.structured import FormatViolation, check_schema, parse_json
from kb_service.generation.tools import parse_calls, template_messages, uses_tools

pytestmark = pytest.mark.unit

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
TOOLS = GenerationParams(tools=(WEATHER, CLOCK))
SCHEMA = ResponseFormat("json_schema", {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})


@pytest.mark.parametrize(
    "text",
    ['{"n": 1}', 'Here it is:\n```json\n{"n": 1}\n```', 'Sure! {"n": 1} Hope that helps.', '  {"n":1}\n'],
)
def test_json_is_read_out_of_fences_and_prose(text: str) -> None:
    assert parse_json(text, SCHEMA) == '{"n": 1}'


@pytest.mark.parametrize(
    ("text", "fmt", "problem"),
    [
        ("no json here", SCHEMA, "holds no JSON object"),
        ('{"n": 1', SCHEMA, "the JSON is malformed"),
        ('{"n": "one"}', SCHEMA, "does not match the schema at n: 'one' is not of type 'integer'"),
        ("{}", SCHEMA, "'n' is a required property"),
        ('{"n": 1}', ResponseFormat("json_object"), ""),
    ],
)
def test_json_that_misses_its_format_says_why(text: str, fmt: ResponseFormat, problem: str) -> None:
    if not problem:
        assert json.loads(parse_json(text, fmt)) == {"n": 1}
        return
    with pytest.raises(FormatViolation, match=problem):
        parse_json(text, fmt)


def test_a_schema_that_is_not_one_is_refused_and_an_unresolvable_ref_is_a_4xx() -> None:
    with pytest.raises(InvalidInput, match="the schema is not a valid JSON Schema: 3 is not valid"):
        check_schema({"type": 3}, "the schema")
    remote = ResponseFormat("json_schema", {"$ref": "https://example.com/s.json"})
    with pytest.raises(InvalidInput, match="refers to 'https://example.com/s.json'"):
        parse_json("{}", remote)


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',  # Hermes, Qwen
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',  # outer brace left out
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',  # Mistral
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',  # Llama 3.1
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',  # as a string
    ],
)
def test_calls_are_read_in_every_template_format(text: str) -> None:
    content, calls = parse_calls(text, TOOLS)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert calls[0].id.startswith("call_") and calls[0].openai()["type"] == "function"


def test_text_around_calls_is_kept_and_several_calls_are_read() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    content, calls = parse_calls(text, TOOLS)
    assert content == "Let me check." and [c.name for c in calls] == ["get_weather", "get_time"]
    assert parse_calls("Paris is sunny today.", TOOLS) == ("Paris is sunny today.", [])


@pytest.mark.parametrize(
    ("text", "params", "problem"),
    [
        ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', TOOLS, "there is no function 'fly'"),
        ('<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', TOOLS, "'city' is a required property"),
        ("<tool_call>{not json</tool_call>", TOOLS, "not valid JSON"),
        ('<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>', TOOLS, "must be a JSON object"),
        ("It is sunny.", GenerationParams(tools=(WEATHER,), tool_choice="required"), "a function call is required"),
        (
            '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>',
            GenerationParams(
                tools=(WEATHER, CLOCK), tool_choice={"type": "function", "function": {"name": "get_weather"}}
            ),
            "call the function 'get_weather'",
        ),
    ],
)
def test_a_wrong_call_says_what_is_wrong(text: str, params: GenerationParams, problem: str) -> None:
    with pytest.raises(FormatViolation, match=problem):
        parse_calls(text, params)


def test_messages_reach_templates_with_arguments_as_objects() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
    ]
    out = template_messages(messages)  # type: ignore[arg-type]
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert out[2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}
    assert uses_tools(messages, GenerationParams()) and not uses_tools(messages[:1], GenerationParams())  # type: ignore[arg-type]


def test_the_shape_a_request_forces() -> None:
    hermes = "... <tool_call> ..."
    named = GenerationParams(tools=(WEATHER, CLOCK), tool_choice={"type": "function", "function": {"name": "get_time"}})
    forced = shape(named, hermes)
    assert forced is not None and forced.prefix == "<tool_call>\n" and forced.suffix == "\n</tool_call>"
    assert forced.schema["properties"]["name"] == {"const": "get_time"}
    assert [o["properties"]["name"]["const"] for o in call_schema(TOOLS)["anyOf"]] == ["get_weather", "get_time"]
    bare = shape(GenerationParams(tools=(WEATHER,), tool_choice="required"), "{{ tools | tojson }}")
    assert bare is not None and bare.prefix == bare.suffix == ""  # read back as a bare JSON call
    assert shape(TOOLS, hermes) is None  # tool_choice auto: the model may answer in words
    assert shape(GenerationParams(response_format=SCHEMA), hermes) == type(forced)(SCHEMA.schema or {})
    assert shape(GenerationParams(response_format=ResponseFormat("json_object")), "").schema == {"type": "object"}  # type: ignore[union-attr]


@pytest.mark.integration
def test_the_constraint_allows_only_what_keeps_the_json_valid_and_falls_back_where_it_cannot_compile() -> None:
    import torch
    from transformers import AutoTokenizer

    from kb_service.generation.transformers_llm import resolve_llm_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_llm_path("HuggingFaceTB/SmolLM2-135M-Instruct")[0])
    grammars = Grammars(tokenizer)
    assert grammars.processor({"type": "object", "properties": {"n": {"type": "wat"}}}, prompt_tokens=0) is None
    constraint = grammars.processor(SCHEMA.schema or {}, prompt_tokens=1)
    assert constraint is not None
    written = tokenizer.encode('{"n": ', add_special_tokens=False)
    vocab = len(tokenizer)
    scores = constraint(torch.tensor([[0, *written]]), torch.zeros((1, vocab)))
    allowed = {tokenizer.decode([i]) for i in torch.nonzero(scores[0] > float("-inf")).flatten().tolist()}
    assert {"1", "7", "-"} <= allowed and not allowed & {"a", '"', "}", "Paris", tokenizer.eos_token}
    done = tokenizer.encode("42}", add_special_tokens=False)
    scores = constraint(torch.tensor([[0, *written, *done]]), torch.zeros((1, vocab)))
    ends = torch.nonzero(scores[0] > float("-inf")).flatten().tolist()
    assert tokenizer.eos_token_id in ends and tokenizer.encode("a", add_special_tokens=False)[0] not in ends
