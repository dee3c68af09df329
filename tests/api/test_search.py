"""POST /v1/knowledge-bases/{kb}/search through the real app (lifespan loads the models once)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kb_service.api.app import create_app
from kb_service.core.config import Settings
from kb_service.ingest.pipeline import Ingestor
from kb_service.ingest.sources import SourceItem
from kb_service.retrieval.factory import rerank_kind
from tests.api.test_documents import wait

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # The shipped reranker setting: e5 re-scoring on CUDA or a bf16 CPU, none elsewhere.
    settings = Settings(data_dir=tmp_path_factory.mktemp("api"), chunk_size=64, chunk_overlap=8, rerank_backend="auto")
    with TestClient(create_app(settings)) as c:
        app = c.app
        kb = app.state.catalog.create("手册 one")  # type: ignore[attr-defined]
        _, embedder = app.state.catalog.open("手册 one")  # type: ignore[attr-defined]
        Ingestor.from_settings(settings, store=app.state.store, kb=kb, embedder=embedder).ingest(  # type: ignore[attr-defined]
            [
                SourceItem("pumps.md", text="# Pumps\n\nCentrifugal pumps move water with a spinning impeller."),
                SourceItem("valves.md", text="# Valves\n\nA check valve lets fluid flow in one direction only."),
                SourceItem("泵.txt", text="离心泵依靠叶轮旋转输送液体。"),
            ]
        )
        yield c


URL = "/v1/knowledge-bases/%E6%89%8B%E5%86%8C%20one/search"


def test_search_returns_ranked_chunks_with_provenance(client: TestClient) -> None:
    r = client.post(URL, json={"query": "which valve only allows one-way flow", "top_k": 2, "trace": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["source"] == "valves.md" and len(body["hits"]) <= 2
    hit = body["hits"][0]
    assert hit["section"] == "Valves" and hit["end"] > hit["start"] and hit["doc_id"] and hit["chunk_id"]
    assert body["trace"]["gated"][0]["source"] == "valves.md"
    assert body["trace"]["timings_ms"]["total"] > 0
    if rerank_kind(client.app.state.settings) == "embedding":  # type: ignore[attr-defined]
        reranked = body["trace"]["reranked"]
        assert reranked and all(-1 <= h["stages"]["rerank"] <= 1 for h in reranked)  # e5 cosines
        assert body["trace"]["timings_ms"]["rerank"] > 0 and hit["stages"]["rerank"] == reranked[0]["stages"]["rerank"]
    refined = client.post(URL, json={"query": "one-way valve", "refine": ["keywords"], "trace": True}).json()
    (step,) = refined["trace"]["refinements"]
    assert step["kind"] == "keywords" and step["queries"][0].startswith("one-way valve ")
    assert refined["hits"][0]["source"] == "valves.md" and "refine" in refined["hits"][0]["stages"]
    zh = client.post(URL, json={"query": "叶轮", "mode": "lexical"}).json()
    assert zh["hits"][0]["source"] == "泵.txt" and zh.get("trace") is None


def test_search_filters_and_errors(client: TestClient) -> None:
    r = client.post(URL, json={"query": "pumps valves", "filters": {"source": ["pumps.md"]}})
    assert r.status_code == 200 and {h["source"] for h in r.json()["hits"]} == {"pumps.md"}
    cases = [
        ({"query": ""}, "query"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "mode": "fuzzy"}, "mode"),
        ({"query": "x", "filters": {"bad key": "v"}}, "filter key 'bad key' may only contain"),
        ({"query": "x", "filters": {"source": []}}, "empty list"),
        ({"query": "x", "refine": ["rm3"]}, "refine"),
    ]
    for body, message in cases:
        r = client.post(URL, json=body)
        assert r.status_code == 422, (body, r.text)
        assert message in r.json()["error"]["message"]
    missing = client.post("/v1/knowledge-bases/nope/search", json={"query": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "knowledge base 'nope' does not exist"
    malformed = client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422


def test_the_service_stores_rerank_vectors_in_the_background(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # An embedding reranker (the packaged MiniLM as the second model: fast): once the models have been idle, the
    # lifespan's warmer stores a vector for every chunk, and a rerank then finds them all.
    settings = Settings(
        data_dir=tmp_path, chunk_size=32, chunk_overlap=4, rerank_backend="embedding", rerank_model="all-MiniLM-L6-v2"
    )
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/knowledge-bases", json={"name": "warm"}).status_code == 201
        files = {"files": ("pumps.md", b"# Pumps\n\nCentrifugal pumps move water with a spinning impeller. " * 6)}
        r = c.post("/v1/knowledge-bases/warm/documents", files=files)
        assert r.status_code == 202, r.text
        wait(c, r.json()["jobs"][0]["id"])
        app = c.app
        store, reranker = app.state.store, app.state.retriever.reranker  # type: ignore[attr-defined]
        kb = store.get_kb("warm")
        ids = [ch.id for batch in store.iter_chunks(kb) for ch in batch]
        assert len(ids) > 1
        deadline = time.monotonic() + 60
        while len(store.rerank_vector_ids(kb, reranker.space, ids)) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(store.rerank_vectors(kb, reranker.space, ids)) == set(ids)
        hits = c.post("/v1/knowledge-bases/warm/search", json={"query": "impeller", "trace": True}).json()
        reranked = hits["trace"]["reranked"]
        assert reranked and not any(reranker.has(h["text"]) for h in reranked)  # nothing embedded for the rerank
