"""Search and ask over several knowledge bases at once (POST /v1/search, POST /v1/ask, chat ``kb:a,b``): the router
ranks them by their document summaries, each is searched with its own embedding model (MiniLM and e5 here), one
merged ranking, every hit and citation names its knowledge base, and a scoped API key reaches only its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.client.base import ClientError
from kb_service.client.http import HTTPClient
from kb_service.core.config import ApiKey, Settings
from kb_service.core.limits import MAX_KNOWLEDGE_BASES

pytestmark = pytest.mark.integration

ADMIN = "admin-key-0123456789abcdef"
SCOPED = "scoped-key-0123456789abcdef"  # pumps and recipes, not secret
E5 = "intfloat/multilingual-e5-small"
KBS = {
    "pumps": (
        None,  # the default model (MiniLM)
        {
            "pumps.md": "# Pumps\n\nCentrifugal pumps move water with a spinning impeller. The impeller's vanes "
            "accelerate the fluid outward.",
            "valves.md": "# Valves\n\nA check valve lets fluid flow in one direction only; a swing disc closes "
            "when the flow reverses.",
            "compressors.md": "# Compressors\n\nA screw compressor squeezes air between two meshing rotors.",
        },
    ),
    "recipes": (
        E5,
        {
            "bread.md": "# Bread\n\nKnead the dough for ten minutes until it is smooth and elastic, then let it "
            "rise for an hour in a warm place.",
            "pasta.md": "# Pasta\n\nBoil the spaghetti in salted water for nine minutes and drain it.",
            "泡菜.txt": "泡菜是用盐水腌制白菜和萝卜做成的发酵食品。",
        },
    ),
    "secret": (None, {"plans.md": "# Plans\n\nProject Nightingale launches on the third of May from Kourou."}),
}


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("multi"),
        llm_backend="none",
        rerank_backend="embedding",  # e5 re-scores the hits of every knowledge base, whatever its own model
        embedding_allowed_models=[E5],
        api_keys=[ApiKey(key=ADMIN, name="admin"), ApiKey(key=SCOPED, name="team", kbs=["pumps", "recipes"])],
    )
    with TestClient(create_app(settings)) as c:
        jobs = []
        for name, (model, files) in KBS.items():
            body = {"name": name} | ({"embedding_model": model} if model else {})
            assert c.post("/v1/knowledge-bases", json=body, headers=as_(ADMIN)).status_code == 201
            for file, text in files.items():
                r = c.post(
                    f"/v1/knowledge-bases/{name}/documents", json={"name": file, "text": text}, headers=as_(ADMIN)
                )
                jobs.append(r.json()["jobs"][0]["id"])
        for job in jobs:
            while (status := c.get(f"/v1/jobs/{job}", headers=as_(ADMIN)).json()["status"]) not in ("ready", "failed"):
                time.sleep(0.05)
            assert status == "ready"
        yield c


def search(client: TestClient, key: str, **body: object) -> dict:  # type: ignore[type-arg]
    r = client.post("/v1/search", json=body, headers=as_(key))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_the_router_picks_the_knowledge_base_whose_summaries_fit_and_the_hits_name_it(client: TestClient) -> None:
    body = search(client, ADMIN, query="how long should I knead bread dough", knowledge_bases=["pumps", "recipes"],
                  trace=True)  # fmt: skip
    top = body["hits"][0]
    assert (top["knowledge_base"], top["source"]) == ("recipes", "bread.md")
    routes = body["trace"]["routes"]
    assert [r["knowledge_base"] for r in routes] == ["recipes", "pumps"] and routes[0]["searched"]
    assert routes[0]["score"] > routes[1]["score"] and routes[0]["documents"]
    assert all(h["knowledge_base"] == "recipes" for h in body["hits"]) or routes[1]["searched"]
    assert body["trace"]["timings_ms"]["route"] > 0 and "recipes:total" in body["trace"]["timings_ms"]

    valve = search(
        client, ADMIN, query="which valve only lets fluid flow one way", knowledge_bases=["recipes", "pumps"]
    )
    assert (valve["hits"][0]["knowledge_base"], valve["hits"][0]["source"]) == ("pumps", "valves.md")
    # Chinese, against e5's multilingual space in one knowledge base and MiniLM in the other
    zh = search(client, ADMIN, query="泡菜是怎么做的", knowledge_bases=["pumps", "recipes"])
    assert (zh["hits"][0]["knowledge_base"], zh["hits"][0]["source"]) == ("recipes", "泡菜.txt")


def test_without_routing_every_knowledge_base_is_searched_and_merged(client: TestClient) -> None:
    body = search(client, ADMIN, query="water", knowledge_bases=["pumps", "recipes"], route=False, top_k=10,
                  trace=True)  # fmt: skip
    assert all(r["searched"] for r in body["trace"]["routes"])
    assert {h["knowledge_base"] for h in body["hits"]} == {"pumps", "recipes"}
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True) and all("rerank" in h["stages"] for h in body["hits"][:2])
    one = search(client, ADMIN, query="water", knowledge_bases=["pumps", "recipes"], route_kbs=1, trace=True)
    assert [r["searched"] for r in one["trace"]["routes"]] == [True, False]
    assert {h["knowledge_base"] for h in one["hits"]} == {one["trace"]["routes"][0]["knowledge_base"]}


def test_a_scoped_key_searches_only_its_knowledge_bases(client: TestClient) -> None:
    everything = search(client, ADMIN, query="when does Project Nightingale launch", trace=True)
    assert everything["hits"][0]["knowledge_base"] == "secret"
    assert {r["knowledge_base"] for r in everything["trace"]["routes"]} == {"pumps", "recipes", "secret"}
    mine = search(client, SCOPED, query="when does Project Nightingale launch", trace=True)
    assert {r["knowledge_base"] for r in mine["trace"]["routes"]} == {"pumps", "recipes"}
    assert mine["hits"] and all(
        h["knowledge_base"] != "secret" and "Nightingale" not in h["text"] for h in mine["hits"]
    )

    refused = client.post("/v1/search", json={"query": "launch", "knowledge_bases": ["pumps", "secret"]},
                          headers=as_(SCOPED))  # fmt: skip
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "API key 'team' may not use knowledge base 'secret'"
    asked = client.post("/v1/ask", json={"question": "launch?", "knowledge_bases": ["secret"]}, headers=as_(SCOPED))
    assert asked.status_code == 403
    assert client.post("/v1/search", json={"query": "x"}).status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "x", "knowledge_bases": ["pumps", "nope"]}, 404, "knowledge base 'nope' does not exist"),
        ({"query": "x", "knowledge_bases": []}, 422, "knowledge_bases"),
        ({"query": "x", "knowledge_bases": [""]}, 422, "knowledge_bases"),
        ({"query": "x", "knowledge_bases": ["pumps"] * (MAX_KNOWLEDGE_BASES + 1)}, 422, "knowledge_bases"),
        ({"query": "x", "route_kbs": 0}, 422, "route_kbs"),
        ({"query": "", "knowledge_bases": ["pumps"]}, 422, "query"),
    ],
)
def test_bad_requests_say_what_is_wrong(client: TestClient, body: dict, status: int, message: str) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/search", json=body, headers=as_(ADMIN))
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_an_answer_over_several_knowledge_bases_cites_each_source_with_its_knowledge_base(client: TestClient) -> None:
    r = client.post(
        "/v1/ask",
        json={"question": "What does a check valve do?", "knowledge_bases": ["recipes", "pumps"]},
        headers=as_(SCOPED),
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["mode"] == "extractive" and "one direction" in answer["answer"]
    cited = {(c["knowledge_base"], c["source"]) for c in answer["citations"]}
    assert ("pumps", "valves.md") in cited
    assert all(s["knowledge_base"] in ("pumps", "recipes") for s in answer["sources"])


def test_chat_completions_answer_from_several_knowledge_bases(client: TestClient) -> None:
    question = [{"role": "user", "content": "How long does spaghetti boil?"}]
    for model in ("kb:pumps,recipes", "kb:*"):
        r = client.post("/v1/chat/completions", json={"model": model, "messages": question}, headers=as_(SCOPED))
        assert r.status_code == 200, (model, r.text)
        message = r.json()["choices"][0]["message"]
        assert "nine minutes" in message["content"]
        assert {(c["knowledge_base"], c["source"]) for c in message["citations"]} == {("recipes", "pasta.md")}
    refused = client.post("/v1/chat/completions", json={"model": "kb:pumps,secret", "messages": question},
                          headers=as_(SCOPED))  # fmt: skip
    assert refused.status_code == 403


def test_the_python_clients_take_a_list_of_knowledge_bases(client: TestClient) -> None:
    remote = HTTPClient("http://testserver")
    remote.http = TestClient(client.app, headers=as_(SCOPED))  # the same running app (no second lifespan)
    hits = remote.search(["pumps", "recipes"], "screw compressor rotors", top_k=3).hits
    assert (hits[0].knowledge_base, hits[0].source) == ("pumps", "compressors.md")
    answer = remote.ask(("pumps", "recipes"), "For how many minutes is spaghetti boiled?")
    assert any(c.knowledge_base == "recipes" for c in answer.citations)
    with pytest.raises(ClientError) as refused:
        remote.search(["secret"], "launch")
    assert refused.value.status == 403
    local = client.app.state.mcp_client  # type: ignore[attr-defined]  # the in-process client on the same services
    found = local.search(["recipes", "pumps", "secret"], "launch date of Project Nightingale").hits
    assert found[0].knowledge_base == "secret"
