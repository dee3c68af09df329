"""Structured output of the local model: JSON held to its schema by constrained decoding against the same model
writing freely and being checked, side by side in one run. For each task (``response_format`` json_schema, or a
demanded function call): valid on the first try, valid within the service's attempts, completion tokens, latency.
Prints JSON.

    python bench/structured.py            # 12 tasks with the packaged SmolLM2-135M (its weights under a
                                          # tool-rendering template for the function calls)
    python bench/structured.py --quick    # 4 tasks (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kb_service.core.errors import KBError
from kb_service.generation.llm import GenerationParams, ResponseFormat
from kb_service.generation.transformers_llm import STRUCTURED_ATTEMPTS, TransformersLLM, retemplated

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEMPLATE = Path(__file__).resolve().parents[1] / "tests" / "generation" / "data" / "hermes_tools.jinja"


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or list(properties),
        "additionalProperties": False,
    }


TEXT, NUM, FLAG = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
JSON_TASKS: list[tuple[str, dict[str, Any]]] = [
    ("Name three colours.", _obj({"colours": {"type": "array", "items": TEXT, "maxItems": 3}})),
    ("Ada Lovelace was born in 1815 in London. Extract the person.", _obj({"name": TEXT, "born": NUM, "city": TEXT})),
    ("Is 'I loved this film' positive or negative?", _obj({"sentiment": {"enum": ["positive", "negative"]}})),
    ("What is the capital of Japan?", _obj({"capital": TEXT, "country": TEXT})),
    ("Give a recipe title and how many minutes it takes.", _obj({"title": TEXT, "minutes": NUM})),
    ("Is water wet? Answer with a reason.", _obj({"answer": FLAG, "reason": TEXT})),
    ("Describe a book: its title and its author.", _obj({"book": _obj({"title": TEXT, "author": TEXT})})),
    (
        "List two planets and say how many moons each has.",
        _obj({"planets": {"type": "array", "maxItems": 2, "items": _obj({"name": TEXT, "moons": NUM})}}),
    ),
]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather in a city", "parameters": _obj({"city": TEXT})},
    },
    {
        "type": "function",
        "function": {
            "name": "convert",
            "description": "Convert an amount of money",
            "parameters": _obj({"amount": NUM, "from": TEXT, "to": TEXT}),
        },
    },
]
# (question, the right function, an argument it must get, a word that argument holds)
CALL_TASKS = [
    ("What is the weather in Paris?", "get_weather", "city", "paris"),
    ("How much is 100 dollars in euros?", "convert", "amount", "100"),
    ("Is it raining in Tokyo right now?", "get_weather", "city", "tokyo"),
    ("Convert 20 pounds to yen.", "convert", "to", "yen"),
]


def _right_call(done: Any, expected: tuple[str, str, str] | None) -> bool:
    if expected is None or not done.tool_calls:
        return False
    name, key, word = expected
    arguments = json.loads(done.tool_calls[0].arguments)
    return bool(done.tool_calls[0].name == name and word in str(arguments.get(key, "")).lower())


def run(
    llm: TransformersLLM, tasks: list[tuple[str, GenerationParams, tuple[str, str, str] | None]], *, constrained: bool
) -> dict[str, Any]:
    """Each task once with one attempt and once with the service's attempts; the time and tokens are those of
    the latter, success or not."""
    llm.constrained = constrained
    first = final = right = 0
    tokens: list[int] = []
    seconds: list[float] = []
    for prompt, params, expected in tasks:
        for attempts in (1, STRUCTURED_ATTEMPTS):
            llm.attempts = attempts
            start = time.perf_counter()
            try:
                done = llm.complete([{"role": "user", "content": prompt}], params)
            except KBError:
                done = None
            if attempts == 1:
                first += done is not None
                continue
            seconds.append(time.perf_counter() - start)
            if done is not None:
                final += 1
                right += _right_call(done, expected)
                tokens.append(done.usage.completion_tokens)
    n = len(tasks)
    report = {
        "tasks": n,
        "valid_first_try": round(first / n, 3),
        f"valid_within_{STRUCTURED_ATTEMPTS}_attempts": round(final / n, 3),
        "completion_tokens_mean": round(statistics.mean(tokens), 1) if tokens else None,
        "seconds_p50": round(statistics.median(seconds), 2),
    }
    if any(expected for _, _, expected in tasks):
        report["right_function_and_argument"] = round(right / n, 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two JSON tasks and two function calls")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: the report is always JSON")
    quick = parser.parse_args().quick
    json_tasks = [
        (prompt, GenerationParams(max_tokens=80, response_format=ResponseFormat("json_schema", schema)), None)
        for prompt, schema in JSON_TASKS[: 2 if quick else None]
    ]
    call_tasks = [
        (prompt, GenerationParams(max_tokens=80, tools=tuple(TOOLS), tool_choice="required"), (name, key, word))
        for prompt, name, key, word in CALL_TASKS[: 2 if quick else None]
    ]
    with tempfile.TemporaryDirectory() as folder:
        # SmolLM2's weights under a Hermes-style ChatML template (Qwen2.5's format), as the tests use
        llm = TransformersLLM(str(retemplated(MODEL, TEMPLATE.read_text(), Path(folder))), device="cpu")
        report = {
            "model": MODEL,
            "device": llm.device,
            "json_schema": {
                mode: run(llm, json_tasks, constrained=mode == "constrained") for mode in ("free", "constrained")
            },
            "function_call_required": {
                mode: run(llm, call_tasks, constrained=mode == "constrained") for mode in ("free", "constrained")
            },
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
