"""The MCP tools and resources, over a :class:`LocalClient` (the service's own components, in this process).

Who may use which knowledge base comes from ``scope``: given the request's headers (None on stdio), a predicate on
knowledge-base names. Over HTTP the API builds it from the request's key, as for every other endpoint; ``kb mcp``
runs as the user who owns the data directory and sees every knowledge base."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from kb_service.client.base import ClientError
from kb_service.client.local import LocalClient
from kb_service.core.errors import KBError
from kb_service.stores.base import chunks_of

Scope = Callable[[Mapping[str, str] | None], Callable[[str], bool]]
MAX_FETCH_CHARS = 50_000
INSTRUCTIONS = (
    "Knowledge bases of documents (manuals, filings, notes …). Call list_knowledge_bases first to see what exists, "
    "search to find passages with their sources, ask for an answer written from the documents with verified "
    "citations, and fetch to read a whole document or one chunk by the id a search returned."
)


def everything(_headers: Mapping[str, str] | None) -> Callable[[str], bool]:
    return lambda _kb: True


def build_mcp(client: Callable[[], LocalClient], *, scope: Scope = everything) -> MCPServer:
    """``client``: the in-process client to call (built once the service's components are)."""
    server = MCPServer(name="kb-service", instructions=INSTRUCTIONS, log_level="WARNING")

    def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``fn``, its docstring without its indentation as the description an agent reads."""
        return server.tool(description=inspect.cleandoc(fn.__doc__ or ""))(fn)

    def allowed(ctx: Context | None, kb: str) -> None:
        headers = ctx.headers if ctx is not None else None
        if not scope(headers)(kb):
            raise ToolError(f"this API key may not use knowledge base {kb!r}")

    async def run(call: Callable[[], Any]) -> Any:
        try:
            return await anyio.to_thread.run_sync(call)
        except ClientError as exc:  # the message the REST API would answer, as the tool's error
            raise ToolError(exc.message) from exc

    @tool
    async def list_knowledge_bases(ctx: Context) -> list[dict[str, Any]]:
        """List the knowledge bases you may search, with their description and how many documents and chunks each
        holds. Call this first: every other tool takes a knowledge base's name."""
        predicate = scope(ctx.headers)
        kbs = await run(lambda: client().list_kbs())
        return [
            {"name": kb.name, "description": kb.description, "documents": kb.documents, "chunks": kb.chunks}
            for kb in kbs
            if predicate(kb.name)
        ]

    @tool
    async def search(
        knowledge_base: str,
        query: str,
        ctx: Context,
        top_k: int = 5,
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Search one knowledge base for the passages that best match ``query`` (hybrid keyword and semantic search,
        reranked). Returns ranked hits with their text, file name, page, score and ids (pass a hit's chunk_id or
        doc_id to fetch), and the time each stage took. ``filters`` narrows by document metadata, e.g.
        {"team": "support"} or {"year": [2024, 2025]}."""
        allowed(ctx, knowledge_base)
        found = await run(lambda: client().search(knowledge_base, query, top_k=top_k, filters=filters, trace=True))
        hits = [
            {
                "rank": i + 1,
                "score": round(h.score, 4),
                "source": h.source,
                "title": h.title,
                "page": h.page,
                "section": h.section,
                "doc_id": h.doc_id,
                "chunk_id": h.chunk_id,
                "text": h.text,
            }
            for i, h in enumerate(found.hits)
        ]
        timings = found.trace.timings_ms if found.trace is not None else {}
        return {"query": query, "hits": hits, "timings_ms": timings}

    @tool
    async def ask(knowledge_base: str, question: str, ctx: Context) -> dict[str, Any]:
        """Answer a question from one knowledge base's documents. The answer cites its sources by number ([1]);
        each citation gives the file, page and the exact snippet that supports the claim. When the documents do
        not hold the answer, it says so (refused: true) instead of guessing."""
        allowed(ctx, knowledge_base)
        answer = await run(lambda: client().ask(knowledge_base, question))
        return {
            "answer": answer.answer,
            "refused": answer.refused,
            "mode": answer.mode,
            "citations": [
                {"number": c.number, "source": c.source, "page": c.page, "doc_id": c.doc_id, "snippet": c.snippet}
                for c in answer.citations
            ],
        }

    @tool
    async def fetch(knowledge_base: str, id: str, ctx: Context) -> dict[str, Any]:  # noqa: A002 - the agent's word
        """Read a whole document (by its doc_id) or one chunk (by its chunk_id, "<doc_id>:<n>") of a knowledge
        base: its text, file name, title and metadata. Long documents are cut at 50,000 characters."""
        allowed(ctx, knowledge_base)
        return dict(await run(lambda: _fetch(client(), knowledge_base, id)))

    @server.resource("kb://{knowledge_base}/documents/{doc_id}", mime_type="text/plain")
    async def document(knowledge_base: str, doc_id: str, ctx: Context) -> str:
        """The text of one document of a knowledge base."""
        allowed(ctx, knowledge_base)
        return str((await run(lambda: _fetch(client(), knowledge_base, doc_id)))["text"])

    return server


def _fetch(client: LocalClient, kb: str, ref: str) -> Mapping[str, Any]:
    """A document (``ref`` its id) or one of its chunks (``<doc_id>:<n>``), with its text."""
    head, _, tail = ref.rpartition(":")
    doc_id = head if head and tail.isdigit() else ref
    catalog = client.services.catalog
    try:
        knowledge_base, doc = catalog.document(kb, doc_id)
    except KBError as exc:
        raise ToolError(str(exc)) from exc
    chunks = chunks_of(catalog.store, knowledge_base, [doc])
    if doc_id != ref:
        chunk = next((c for c in chunks if c.id == ref), None)
        if chunk is None:
            raise ToolError(f"chunk {ref!r} not found in knowledge base {kb!r}")
        chunks = [chunk]
    text = "\n\n".join(c.text for c in chunks)
    return {
        "doc_id": doc.id,
        "source": doc.source,
        "title": doc.title,
        "metadata": doc.metadata,
        "text": text[:MAX_FETCH_CHARS],
        "truncated": len(text) > MAX_FETCH_CHARS,
    }
