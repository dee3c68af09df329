"""The Model Context Protocol server (the official ``mcp`` SDK): the knowledge bases as tools an agent can call,
over stdio (``kb mcp``) or streamable HTTP (``/mcp`` in the API, behind its keys)."""

from kb_service.mcp_server.tools import build_mcp

__all__ = ["build_mcp"]
