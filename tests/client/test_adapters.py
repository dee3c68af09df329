"""The LangChain and LlamaIndex retrievers return our ranked chunks inside the frameworks' own types, used the
way those frameworks use retrievers (a runnable chain; a query engine), over the in-process and the HTTP client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda
from llama_index.core import QueryBundle
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.schema import NodeRelationship, NodeWithScore, TextNode

from kb_service.adapters.langchain import KnowledgeBaseRetriever as LangChainRetriever
from kb_service.adapters.llamaindex import KnowledgeBaseRetriever as LlamaIndexRetriever
from kb_service.client import HTTPClient, KBClient, LocalClient
from kb_service.core.config import Settings
from tests.client.test_clients import TEXTS
from tests.live import live_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["local", "http"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KBClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp(f"adapters-{request.param}"), chunk_size=64, chunk_overlap=8)
    with LocalClient(settings) as local:  # ingest in-process, then close it: Milvus Lite allows one owner
        local.create_kb("manuals")
        local.add_texts("manuals", TEXTS, metadata={"team": "ops"})
    if request.param == "local":
        with LocalClient(settings) as local:
            yield local
    else:
        with live_server(settings) as (url, _app), HTTPClient(url) as remote:
            yield remote


def test_langchain_retriever_in_a_chain(client: KBClient) -> None:
    retriever = LangChainRetriever(client=client, kb="manuals", search={"top_k": 2})
    docs = retriever.invoke("which valve only allows one-way flow")
    assert all(isinstance(d, Document) for d in docs) and len(docs) == 2
    best = docs[0]
    assert "check valve" in best.page_content and best.metadata["source"] == "valves.md"
    assert best.metadata["score"] >= docs[1].metadata["score"] and best.metadata["doc_id"] and best.id
    assert "dense" in best.metadata["stages"]

    cite = RunnableLambda(lambda found: "\n".join(f"[{d.metadata['source']}] {d.page_content}" for d in found))
    chain = retriever | cite
    assert chain.invoke("spinning impeller").startswith("[pumps.md]")
    filtered = LangChainRetriever(client=client, kb="manuals", search={"filters": {"source": "泵.txt"}})
    assert {d.metadata["source"] for d in filtered.invoke("叶轮")} == {"泵.txt"}


def test_llamaindex_retriever_in_a_query_engine(client: KBClient) -> None:
    retriever = LlamaIndexRetriever(client, "manuals", search={"top_k": 2})
    nodes = retriever.retrieve("which valve only allows one-way flow")
    assert all(isinstance(n, NodeWithScore) and isinstance(n.node, TextNode) for n in nodes) and len(nodes) == 2
    best = nodes[0]
    assert best.node.metadata["source"] == "valves.md" and best.score is not None and best.score >= nodes[1].score
    assert best.node.relationships[NodeRelationship.SOURCE].node_id == best.node.metadata["doc_id"]
    assert "source" not in best.node.get_content(metadata_mode="llm")  # provenance is not sent to the model

    # A query engine that makes no LLM call (NoText; the MockLLM is never called, it only stops LlamaIndex from
    # resolving its default OpenAI LLM): retrieval goes through our pipeline, nodes come back as the sources.
    engine = RetrieverQueryEngine(retriever, response_synthesizer=NoText(llm=MockLLM()))
    response = engine.query(QueryBundle("spinning impeller"))
    assert response.source_nodes[0].node.metadata["source"] == "pumps.md"
