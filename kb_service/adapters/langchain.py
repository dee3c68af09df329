"""A LangChain ``BaseRetriever`` over a knowledge base: ``retriever.invoke("question")`` returns our ranked chunks
as LangChain ``Document``s (text plus score, stage scores and provenance in ``metadata``)."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from kb_service.api.schemas import ChunkHit
from kb_service.client.base import KBClient


class KnowledgeBaseRetriever(BaseRetriever):
    """``client``: a LocalClient or HTTPClient; ``kb``: the knowledge base; ``search``: options of the search
    endpoint (top_k, mode, gate, rerank, filters)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Any  # a KBClient (a Protocol, which pydantic cannot validate)
    kb: str
    search: dict[str, Any] = Field(default_factory=dict)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        kb_client: KBClient = self.client
        response = kb_client.search(self.kb, query, **self.search)
        return [to_document(hit) for hit in response.hits]


def to_document(hit: ChunkHit) -> Document:
    metadata = hit.model_dump(exclude={"text"})
    return Document(page_content=hit.text, metadata=metadata, id=hit.chunk_id)
