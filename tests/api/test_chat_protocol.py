"""The rest of chat completions on live servers (uvicorn on loopback, the real offline model), driven by the
official ``openai`` SDK: ``n`` choices, presence/frequency penalties, ``logprobs``, ``response_format`` (JSON held
to its schema by constrained decoding), function calling (``tools``, ``tool_choice``, ``tool`` messages) and the
same passed through this service in front of another (the OpenAI-compatible backend)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from kb_service.core.config import Settings
from kb_service.generation.llm import GenerationParams, ResponseFormat
from kb_service.generation.openai_llm import OpenAICompatibleLLM
from kb_service.generation.transformers_llm import retemplated
from tests.live import live_server

pytestmark = pytest.mark.integration

LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEMPLATE = Path(__file__).resolve().parents[1] / "generation" / "data" / "hermes_tools.jinja"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}
BAD_SCHEMA = {"type": "object", "properties": {"n": {"type": "thing"}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
COLOURS = {
    "type": "object",
    "properties": {"colours": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
    "required": ["colours"],
    "additionalProperties": False,
}


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with the packaged SmolLM2, whose chat template has no tools."""
    with live_server(Settings(data_dir=tmp_path_factory.mktemp("plain"), max_tokens=48)) as (url, _app):
        yield url


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's weights under a ChatML template with Hermes-style function calling (Qwen2.5-Instruct's format):
    a local model whose template renders tools, small enough for CI."""
    return retemplated(LLM_ID, TEMPLATE.read_text(), tmp_path_factory.mktemp("smollm2-tools"))


@pytest.fixture(scope="module")
def tooled(tool_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("tooled"), llm_model=str(tool_model), max_tokens=96)
    with live_server(settings) as (url, _app):
        yield url


@pytest.fixture(scope="module")
def front(tooled: str, tool_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This service in front of ``tooled`` through the OpenAI-compatible backend."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("front"),
        llm_backend="openai",
        llm_api_base=tooled + "/v1",
        llm_model=str(tool_model),
        max_tokens=96,
    )
    with live_server(settings) as (url, _app):
        yield url


def test_n_choices_each_seeded_and_usage_counts_the_prompt_once(plain: str) -> None:
    sdk = _client(plain)
    ask: dict[str, Any] = {
        "model": LLM_ID,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "temperature": 1.0,
        "seed": 3,
        "max_tokens": 12,
    }
    one = sdk.chat.completions.create(**ask)
    two = sdk.chat.completions.create(**ask, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content == one.choices[0].message.content  # choice 0 keeps the seed
    assert two.usage is not None and one.usage is not None
    assert two.usage.prompt_tokens == one.usage.prompt_tokens
    assert two.usage.completion_tokens > one.usage.completion_tokens
    chunks = list(sdk.chat.completions.create(**ask, n=2, stream=True, stream_options={"include_usage": True}))
    text = {
        i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        for i in (0, 1)
    }
    assert text == {i: two.choices[i].message.content for i in (0, 1)}
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [0, 1] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == two.usage.completion_tokens


def test_presence_and_frequency_penalties_change_a_greedy_answer(plain: str) -> None:
    sdk = _client(plain)
    ask = {"model": LLM_ID, "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 30}
    free = sdk.chat.completions.create(**ask, temperature=0)  # type: ignore[call-overload]
    again = sdk.chat.completions.create(**ask, temperature=0)  # type: ignore[call-overload]
    penalised = sdk.chat.completions.create(**ask, temperature=0, presence_penalty=2.0, frequency_penalty=2.0)  # type: ignore[call-overload]
    assert free.choices[0].message.content == again.choices[0].message.content
    assert penalised.choices[0].message.content != free.choices[0].message.content
    r = httpx.post(f"{plain}/v1/chat/completions", json={**ask, "presence_penalty": 3}, timeout=60)
    assert r.status_code == 422 and "presence_penalty" in r.text


def test_logprobs_whole_and_streamed(plain: str) -> None:
    sdk = _client(plain)
    ask = {"model": LLM_ID, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0}
    whole = sdk.chat.completions.create(**ask, logprobs=True, top_logprobs=3)  # type: ignore[call-overload]
    choice = whole.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    for t in tokens:  # greedy: each token is the most likely one, and the alternatives are sorted
        assert t.logprob <= 0 and len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert bytes(t.bytes or []).decode() == t.token
    chunks = list(sdk.chat.completions.create(**ask, logprobs=True, stream=True))  # type: ignore[call-overload]
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert [t.token for t in streamed] == [t.token for t in tokens]
    r = httpx.post(f"{plain}/v1/chat/completions", json={**ask, "top_logprobs": 2}, timeout=60)
    assert r.status_code == 422 and "top_logprobs needs logprobs" in r.text


class Colours(BaseModel):
    colours: list[str] = Field(max_length=3)


def test_json_schema_output_is_valid_on_the_first_try(plain: str) -> None:
    """Constrained decoding: the 135M model, free, writes broken JSON; held to the schema it cannot."""
    sdk = _client(plain)
    messages = [{"role": "user", "content": "Name three colours."}]
    response = sdk.chat.completions.create(
        model=LLM_ID,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "colours", "schema": COLOURS}},
    )
    value = json.loads(response.choices[0].message.content or "")
    jsonschema.validate(value, COLOURS)
    assert response.usage is not None and response.usage.completion_tokens < 60  # one attempt
    parsed = sdk.chat.completions.parse(model=LLM_ID, messages=messages, response_format=Colours, max_tokens=60)  # type: ignore[arg-type]
    assert parsed.choices[0].message.parsed is not None and parsed.choices[0].message.parsed.colours
    capital = sdk.chat.completions.create(
        model=LLM_ID,
        messages=[{"role": "user", "content": "Give the capital of France as JSON with a key 'capital'."}],
        max_tokens=60,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(capital.choices[0].message.content or ""), dict)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"response_format": {"type": "json_schema"}}, "needs json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": BAD_SCHEMA}}},
            "the schema is not a valid JSON Schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}},
            "the schema must describe an object",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "not among the tools",
        ),
        ({"tools": [WEATHER, WEATHER]}, "must be distinct"),
        ({"tool_choice": "required"}, "needs tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "parameters is not a",
        ),
        ({"tools": [WEATHER]}, "cannot call functions: its chat template does not render tools"),
        ({"messages": [{"role": "tool", "content": "18C"}]}, "needs the tool_call_id"),
    ],
)
def test_bad_structured_requests_get_a_clear_4xx(plain: str, body: dict[str, Any], message: str) -> None:
    r = httpx.post(f"{plain}/v1/chat/completions", json={"model": LLM_ID, "messages": ASK_WEATHER, **body}, timeout=60)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]["message"]


def test_a_knowledge_base_model_refuses_what_only_plain_chat_takes(plain: str) -> None:
    httpx.post(f"{plain}/v1/knowledge-bases", json={"name": "notes"}, timeout=60).raise_for_status()
    body = {"model": "kb:notes", "messages": ASK_WEATHER, "tools": [WEATHER], "n": 2}
    r = httpx.post(f"{plain}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("tools, n: not taken by 'kb:notes'")


def _check_weather_call(call: Any) -> dict[str, Any]:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert "paris" in arguments["city"].lower()
    return arguments


def _streamed_call(sdk: openai.OpenAI, tool_model: Path) -> tuple[str, dict[str, Any]]:
    """A demanded get_weather call, streamed: (its id, its arguments), checked on the way."""
    chunks = list(
        sdk.chat.completions.create(
            model=str(tool_model),
            messages=ASK_WEATHER,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="required",
            stream=True,
        )
    )
    pieces = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert pieces and pieces[0].id and pieces[0].function and pieces[0].function.name == "get_weather"
    arguments = json.loads("".join(p.function.arguments or "" for p in pieces if p.function))
    assert "paris" in arguments["city"].lower()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    return pieces[0].id, arguments


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "get_weather"}}, "required"])
def test_a_local_model_calls_a_function_its_template_renders(tooled: str, tool_model: Path, choice: Any) -> None:
    sdk = _client(tooled)
    response = sdk.chat.completions.create(
        model=str(tool_model),
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice=choice,
    )
    first = response.choices[0]
    assert first.finish_reason == "tool_calls" and first.message.content is None
    assert first.message.tool_calls and len(first.message.tool_calls) == 1
    _check_weather_call(first.message.tool_calls[0])


def test_tool_calls_stream_and_a_tool_result_gets_an_answer(tooled: str, tool_model: Path) -> None:
    sdk = _client(tooled)
    call_id, arguments = _streamed_call(sdk, tool_model)
    call = {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(arguments)}}
    answered = sdk.chat.completions.create(
        model=str(tool_model),
        messages=[  # type: ignore[list-item]
            *ASK_WEATHER,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": '{"temperature_c": 18, "sky": "sunny"}'},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=40,
    )
    assert answered.choices[0].finish_reason in ("stop", "length") and answered.choices[0].message.content


def test_the_openai_backend_passes_functions_formats_and_logprobs_on(front: str, tooled: str, tool_model: Path) -> None:
    sdk = _client(front)
    response = sdk.chat.completions.create(
        model=str(tool_model),
        messages=ASK_WEATHER,  # type: ignore[arg-type]
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert response.choices[0].finish_reason == "tool_calls" and response.choices[0].message.tool_calls
    _check_weather_call(response.choices[0].message.tool_calls[0])
    _streamed_call(sdk, tool_model)

    llm = OpenAICompatibleLLM(model=str(tool_model), base_url=tooled + "/v1", api_key=None)
    colours = GenerationParams(max_tokens=60, response_format=ResponseFormat("json_schema", COLOURS, "colours"))
    done = llm.complete([{"role": "user", "content": "Name three colours."}], colours)
    jsonschema.validate(json.loads(done.text), COLOURS)
    scored = llm.complete(
        [{"role": "user", "content": "Say hello."}], GenerationParams(max_tokens=6, logprobs=True, top_logprobs=2)
    )
    assert scored.logprobs and "".join(t.token for t in scored.logprobs) == scored.text
    assert all(len(t.top) == 2 for t in scored.logprobs)


def test_a_refusal_by_the_server_behind_is_a_4xx_with_its_reason(plain: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_backend="openai", llm_api_base=plain + "/v1", llm_model=LLM_ID)
    with live_server(settings) as (url, _app):
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": LLM_ID, "messages": ASK_WEATHER, "tools": [WEATHER]},
            timeout=60,
        )
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "refused the request (422)" in message and "cannot call functions" in message
