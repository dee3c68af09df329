"""A LlamaIndex retriever over a knowledge base: ``retriever.retrieve("question")`` returns our ranked chunks as
``NodeWithScore`` (a ``TextNode`` with provenance in ``metadata``), usable in any query engine."""

from __future__ import annotations

from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode

from kb_service.api.schemas import ChunkHit
from kb_service.client.base import KBClient


class KnowledgeBaseRetriever(BaseRetriever):
    """``client``: a LocalClient or HTTPClient; ``kb``: the knowledge base; ``search``: options of the search
    endpoint (top_k, mode, gate, rerank, filters)."""

    def __init__(self, client: KBClient, kb: str, *, search: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client, self.kb, self.search = client, kb, dict(search or {})

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        response = self.client.search(self.kb, query_bundle.query_str, **self.search)
        return [to_node(hit) for hit in response.hits]


def to_node(hit: ChunkHit) -> NodeWithScore:
    node = TextNode(
        id_=hit.chunk_id,
        text=hit.text,
        metadata=hit.model_dump(exclude={"text", "score"}),
        start_char_idx=hit.start,
        end_char_idx=hit.end,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.doc_id)},
    )
    # Provenance stays with the node without being sent to an LLM or an embedding model.
    node.excluded_llm_metadata_keys = node.excluded_embed_metadata_keys = list(node.metadata)
    return NodeWithScore(node=node, score=hit.score)
