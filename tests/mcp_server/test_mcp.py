"""The MCP server with the official ``mcp`` client: over stdio (``kb mcp`` as an agent starts it) and over
streamable HTTP (``/mcp`` of a live server on loopback, behind API keys): the tools are listed with their
descriptions, search / ask / fetch answer from a real knowledge base, and a key scoped to A cannot reach B."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from kb_service.client.local import LocalClient
from kb_service.core.config import ApiKey, Settings
from tests.live import live_server

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOOLS = {"list_knowledge_bases", "search", "ask", "fetch"}
ADMIN, SCOPED = "admin-key-0123456789", "team-a-key-0123456789"


def fill(client: LocalClient) -> None:
    client.create_kb("A")
    client.add_files("A", [EXAMPLES / "en" / "pump-manual.md"])
    client.create_kb("B")
    client.add_files("B", [EXAMPLES / "en" / "faq.md"])


async def session(client: Client) -> dict[str, Any]:
    """What an agent does: list the tools, then search, ask and fetch."""
    out: dict[str, Any] = {}
    async with client:
        tools = (await client.list_tools()).tools
        out["tools"] = {t.name: t.description or "" for t in tools}
        out["kbs"] = (await client.call_tool("list_knowledge_bases", {})).structured_content
        found = await client.call_tool("search", {"knowledge_base": "A", "query": "How do I reset the pump?"})
        out["search"] = found.structured_content
        asked = await client.call_tool("ask", {"knowledge_base": "A", "question": "How do I reset the pump?"})
        out["ask"] = asked.structured_content
        chunk_id = out["search"]["hits"][0]["chunk_id"]
        out["chunk"] = (await client.call_tool("fetch", {"knowledge_base": "A", "id": chunk_id})).structured_content
        out["missing"] = await client.call_tool("fetch", {"knowledge_base": "A", "id": "nope"})
        out["b"] = await client.call_tool("search", {"knowledge_base": "B", "query": "How loud is it?"})
    return out


def check_agent_session(out: dict[str, Any], *, sees_b: bool) -> None:
    assert set(out["tools"]) == TOOLS
    for description in out["tools"].values():  # enough for an agent to choose, as plain text
        assert len(description) > 80 and "\n    " not in description
    names = [kb["name"] for kb in out["kbs"]["result"]]
    assert names == (["A", "B"] if sees_b else ["A"])
    top = out["search"]["hits"][0]
    assert (
        top["source"] == "pump-manual.md" and "reset button" in top["text"] and "total" in out["search"]["timings_ms"]
    )
    assert "5 seconds" in out["ask"]["answer"] and out["ask"]["citations"][0]["source"] == "pump-manual.md"
    assert out["chunk"]["text"] == top["text"] and out["chunk"]["source"] == "pump-manual.md"
    assert out["missing"].is_error and "document 'nope' not found" in out["missing"].content[0].text


def test_kb_mcp_over_stdio(tmp_path: Path) -> None:
    with LocalClient(data_dir=tmp_path / "data") as client:
        fill(client)
    env = {**os.environ, "KB_DATA_DIR": str(tmp_path / "data")}
    params = StdioServerParameters(command=sys.executable, args=["-m", "kb_service.cli.main", "mcp"], env=env)
    out = asyncio.run(session(Client(params, read_timeout_seconds=300)))
    check_agent_session(out, sees_b=True)
    assert not out["b"].is_error  # the owner of the data directory sees every knowledge base


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("mcp"),
        api_keys=[ApiKey(key=ADMIN, name="admin"), ApiKey(key=SCOPED, name="team-a", kbs=["A"])],
    )
    with live_server(settings) as (url, app):
        fill(LocalClient(services=app.state.mcp_client.services))
        yield url


def over_http(url: str, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=300)
    return Client(streamable_http_client(url + "/mcp", http_client=http))


def test_mcp_over_http_behind_api_keys(server: str) -> None:
    admin = asyncio.run(session(over_http(server, ADMIN)))
    check_agent_session(admin, sees_b=True)
    assert not admin["b"].is_error

    scoped = asyncio.run(session(over_http(server, SCOPED)))
    check_agent_session(scoped, sees_b=False)
    assert scoped["b"].is_error and "may not use knowledge base 'B'" in scoped["b"].content[0].text


def test_mcp_over_http_without_a_key_is_refused(server: str) -> None:
    response = httpx2.post(server + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401 and "an API key is required" in response.json()["error"]["message"]
