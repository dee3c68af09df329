"""OpenAI's file search, self-hosted: the official ``openai`` SDK, unchanged, against a live server on loopback does
what OpenAI's file search guide does (files, vector stores, upload_and_poll, search with filters, responses with
file_search, plain and streamed), on real files, the real packaged models and Milvus Lite. API key scopes hold on
every one of these endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kb_service.core.config import ApiKey, Settings
from tests.live import live_server

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
APPS: dict[str, Any] = {}  # the live server's app, by the SDK's base URL
ADMIN, SCOPED = "admin-key-0123456789", "team-a-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("filesearch"),
        chunk_size=64,
        chunk_overlap=8,
        max_tokens=48,
        query_rewrite=False,  # the packaged 135M model rewrites follow-ups poorly; the history still reaches it
        api_keys=[ApiKey(key=ADMIN, name="admin"), ApiKey(key=SCOPED, name="team-a", kbs=["A"])],
    )
    with live_server(settings) as (url, app):
        APPS[url + "/v1/"] = app
        yield url


@pytest.fixture(scope="module")
def sdk(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server + "/v1", api_key=ADMIN, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def manuals(sdk: openai.OpenAI) -> dict[str, Any]:
    """A vector store with the two English example files, uploaded and polled as the guide does."""
    store = sdk.vector_stores.create(name="manuals")
    files = {}
    for path in (EXAMPLES / "en" / "pump-manual.md", EXAMPLES / "en" / "faq.md"):
        with path.open("rb") as handle:
            uploaded = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=handle)
        assert uploaded.status == "completed", uploaded.last_error
        files[path.name] = uploaded.id
    return {"store": store, "files": files}


def test_files_api_round_trip(sdk: openai.OpenAI) -> None:
    data = (EXAMPLES / "zh" / "faq.md").read_bytes()
    created = sdk.files.create(file=("常见问题.md", data), purpose="assistants")
    assert created.id.startswith("file-") and created.bytes == len(data) and created.filename == "常见问题.md"
    assert sdk.files.retrieve(created.id).filename == "常见问题.md"
    assert created.id in [f.id for f in sdk.files.list()]
    assert sdk.files.content(created.id).content == data
    deleted = sdk.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError, match="not found"):
        sdk.files.retrieve(created.id)


def test_a_file_larger_than_a_json_body_uploads(sdk: openai.OpenAI) -> None:
    data = (EXAMPLES / "en" / "pump-manual.md").read_bytes() * 5_000  # 5 MB: over the 4 MiB limit of a JSON body
    created = sdk.files.create(file=("big-manual.md", data), purpose="assistants")
    assert created.bytes == len(data) and sdk.files.content(created.id).content == data
    sdk.files.delete(created.id)


def test_upload_and_poll_then_search_finds_the_right_file(sdk: openai.OpenAI, manuals: dict[str, Any]) -> None:
    store = sdk.vector_stores.retrieve(manuals["store"].id)
    assert store.file_counts.completed == 2 and store.status == "completed" and store.usage_bytes > 0
    listed = {f.id: f.status for f in sdk.vector_stores.files.list(vector_store_id=store.id)}
    assert listed == {manuals["files"]["pump-manual.md"]: "completed", manuals["files"]["faq.md"]: "completed"}
    assert list(sdk.vector_stores.files.list(vector_store_id=store.id, filter="failed")) == []
    newest = sdk.vector_stores.files.list(vector_store_id=store.id, limit=1, order="desc")
    assert [f.id for f in newest.data] == [manuals["files"]["faq.md"]] and newest.has_more
    rest = sdk.vector_stores.files.list(vector_store_id=store.id, limit=1, order="desc", after=newest.data[0].id)
    assert [f.id for f in rest.data] == [manuals["files"]["pump-manual.md"]] and not rest.has_more
    page = sdk.vector_stores.search(vector_store_id=store.id, query="How do I reset the pump?", max_num_results=3)
    top = page.data[0]
    assert top.file_id == manuals["files"]["pump-manual.md"] and top.filename == "pump-manual.md"
    assert "reset button" in top.content[0].text and page.search_query == ["How do I reset the pump?"]


def test_search_filters_on_attributes(sdk: openai.OpenAI) -> None:
    store = sdk.vector_stores.create(name="filtered")
    ids = {}
    for path, team, year in (
        (EXAMPLES / "en" / "pump-manual.md", "hardware", 2023),
        (EXAMPLES / "en" / "faq.md", "support", 2025),
    ):
        uploaded = sdk.files.create(file=(path.name, path.read_bytes()), purpose="assistants")
        attached = sdk.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, attributes={"team": team, "year": year}
        )
        assert attached.status == "completed" and attached.attributes == {"team": team, "year": year}
        ids[team] = uploaded.id
    query = "pump"

    def found(filters: dict[str, Any]) -> set[str]:
        page = sdk.vector_stores.search(vector_store_id=store.id, query=query, filters=filters)  # type: ignore[arg-type]
        return {r.file_id for r in page.data}

    assert found({"type": "eq", "key": "team", "value": "support"}) == {ids["support"]}
    assert found({"type": "ne", "key": "team", "value": "support"}) == {ids["hardware"]}
    assert found({"type": "gte", "key": "year", "value": 2024}) == {ids["support"]}
    either = {
        "type": "or",
        "filters": [{"type": "eq", "key": "team", "value": "support"}, {"type": "lt", "key": "year", "value": 2024}],
    }
    assert found(either) == set(ids.values())
    assert found({"type": "in", "key": "team", "value": ["nobody"]}) == set()
    hit = sdk.vector_stores.search(
        vector_store_id=store.id, query=query, filters={"type": "eq", "key": "team", "value": "support"}
    )
    assert hit.data[0].attributes == {"team": "support", "year": 2025}
    with pytest.raises(openai.UnprocessableEntityError, match="filters.type must be one of"):
        sdk.vector_stores.search(
            vector_store_id=store.id, query=query, filters={"type": "like", "key": "team", "value": "s"}
        )  # type: ignore[arg-type]


def test_responses_with_file_search_cite_the_right_file(sdk: openai.OpenAI, manuals: dict[str, Any]) -> None:
    response = sdk.responses.create(
        model=LLM_ID,
        input="How long must I hold the reset button?",
        tools=[{"type": "file_search", "vector_store_ids": [manuals["store"].id]}],
        include=["file_search_call.results"],
    )
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed" and call.results
    assert message.type == "message"
    text = message.content[0]
    assert text.type == "output_text" and "5 seconds" in response.output_text and "[" not in text.text
    citations = [a for a in text.annotations if a.type == "file_citation"]
    assert citations and {a.file_id for a in citations} == {manuals["files"]["pump-manual.md"]}
    assert all(0 < a.index <= len(text.text) for a in citations) and citations[0].filename == "pump-manual.md"
    assert response.usage is not None  # extractive here (the packaged model is not asked by default): no tokens
    follow_up = sdk.responses.create(
        model=LLM_ID,
        input="And how often should the inlet filter be cleaned?",
        previous_response_id=response.id,
        tools=[{"type": "file_search", "vector_store_ids": [manuals["store"].id]}],
    )
    assert "3 months" in follow_up.output_text and follow_up.previous_response_id == response.id
    conversation = APPS[str(sdk.base_url)].state.responses.get(follow_up.id, owner=None).conversation
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert conversation[0]["content"] == "How long must I hold the reset button?"
    assert conversation[1]["content"] == response.output_text
    assert sdk.responses.retrieve(response.id).output_text == response.output_text


def test_responses_stream_the_documented_events(sdk: openai.OpenAI, manuals: dict[str, Any]) -> None:
    stream = sdk.responses.create(
        model=LLM_ID,
        input="How loud is the pump?",
        tools=[{"type": "file_search", "vector_store_ids": [manuals["store"].id]}],
        stream=True,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.file_search_call.searching", "response.output_text.delta", "response.output_text.done"):
        assert kind in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert streamed == final.output_text and "42 dB" in streamed
    added = [e.annotation for e in events if e.type == "response.output_text.annotation.added"]
    assert added and all(a.file_id == manuals["files"]["faq.md"] for a in added)  # type: ignore[union-attr]


def test_deleting_a_file_removes_it_from_search(sdk: openai.OpenAI) -> None:
    store = sdk.vector_stores.create(name="deleting")
    path = EXAMPLES / "en" / "faq.md"
    with path.open("rb") as handle:
        attached = sdk.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=handle)
    assert sdk.vector_stores.search(vector_store_id=store.id, query="How loud is the pump?").data
    sdk.files.delete(attached.id)
    assert sdk.vector_stores.search(vector_store_id=store.id, query="How loud is the pump?").data == []
    assert list(sdk.vector_stores.files.list(vector_store_id=store.id)) == []
    assert sdk.vector_stores.retrieve(store.id).file_counts.completed == 0


def test_file_batches_and_a_knowledge_base_made_either_way(server: str, sdk: openai.OpenAI) -> None:
    ids = [
        sdk.files.create(file=(p.name, p.read_bytes()), purpose="assistants").id
        for p in sorted((EXAMPLES / "zh").glob("*.md"))
    ]
    store = sdk.vector_stores.create(name="中文")
    batch = sdk.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=ids)
    assert batch.status == "completed" and batch.file_counts.completed == 2
    headers = {"Authorization": f"Bearer {ADMIN}"}
    kb = httpx.get(f"{server}/v1/knowledge-bases/中文", headers=headers).json()
    assert kb["documents"] == 2  # the vector store is a knowledge base
    httpx.post(f"{server}/v1/knowledge-bases", json={"name": "made-here"}, headers=headers).raise_for_status()
    httpx.post(
        f"{server}/v1/knowledge-bases/made-here/documents",
        json={"name": "note.md", "text": "The gate code is 4711."},
        headers=headers,
    ).raise_for_status()
    assert "made-here" in [s.id for s in sdk.vector_stores.list()]
    # its document is a vector store file (under its document id) once ingested
    for _ in range(120):
        listed = list(sdk.vector_stores.files.list(vector_store_id="made-here"))
        if listed:
            break
        time.sleep(0.5)
    assert [f.status for f in listed] == ["completed"]
    hit = sdk.vector_stores.search(vector_store_id="made-here", query="gate code").data[0]
    assert hit.filename == "note.md" and hit.file_id == listed[0].id


def test_a_key_scoped_to_a_cannot_reach_b(server: str, sdk: openai.OpenAI, manuals: dict[str, Any]) -> None:
    scoped = openai.OpenAI(base_url=server + "/v1", api_key=SCOPED, max_retries=0, timeout=120)
    b = manuals["store"].id
    with pytest.raises(openai.PermissionDeniedError, match="may not use knowledge base"):
        scoped.vector_stores.retrieve(b)
    with pytest.raises(openai.PermissionDeniedError):
        scoped.vector_stores.search(vector_store_id=b, query="pump")
    with pytest.raises(openai.PermissionDeniedError):
        scoped.responses.create(model=LLM_ID, input="pump?", tools=[{"type": "file_search", "vector_store_ids": [b]}])
    with pytest.raises(openai.PermissionDeniedError):
        scoped.vector_stores.create(name="B2")
    assert b not in [s.id for s in scoped.vector_stores.list()]
    # files uploaded by another key are invisible, and cannot be attached to A
    other = manuals["files"]["faq.md"]
    with pytest.raises(openai.NotFoundError):
        scoped.files.retrieve(other)
    assert other not in [f.id for f in scoped.files.list()]
    a = scoped.vector_stores.create(name="A")
    with pytest.raises(openai.NotFoundError):
        scoped.vector_stores.files.create(vector_store_id=a.id, file_id=other)
    response = sdk.responses.create(model=LLM_ID, input="Say hi.", max_output_tokens=8)
    with pytest.raises(openai.NotFoundError):  # nor can it read another key's responses
        scoped.responses.retrieve(response.id)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/vector_stores/manuals/search", {"query": ""}, 422, "query must not be empty"),
        ("/v1/vector_stores/nope/search", {"query": "x"}, 404, "does not exist"),
        ("/v1/vector_stores/manuals/files", {"file_id": "file-nope"}, 404, "not found"),
        (
            "/v1/responses",
            {"model": LLM_ID, "input": "x", "tools": [{"type": "web_search"}]},
            422,
            "only 'file_search'",
        ),
        ("/v1/responses", {"model": "gpt-4o", "input": "x"}, 422, "unknown model"),
        ("/v1/responses", {"model": LLM_ID, "input": "x", "previous_response_id": "resp_nope"}, 404, "not found"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    server: str, manuals: dict[str, Any], path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = httpx.post(server + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert response.status_code == status and message in response.json()["error"]["message"]
