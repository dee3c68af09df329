"""The edge of every request, before the body is read: the API key (when keys are set) and the body's size.

A request without a valid key gets its 401 here, so an unauthenticated caller cannot make the service read, buffer
or parse a body; a body beyond its limit gets 413 from its ``Content-Length`` at once, or as soon as a streamed
body passes the limit. Scopes (which knowledge bases a key may use) are checked later, by the routes' dependency,
on the caller found here."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from kb_service.api.auth import KeyRing, presented_key
from kb_service.api.errors import error_body
from kb_service.core.config import Settings
from kb_service.core.errors import Unauthorized

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN = ("/health", "/ready")
DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
UI = re.compile(r"/|/ui(/.*)?")  # the web page's static files (they hold no data; its API calls carry a key)
MULTIPART_SLACK = 1024 * 1024  # form boundaries and fields around the files
# POST a document, PUT a new version, POST a file (OpenAI's Files API)
UPLOADS = re.compile(r"/v1/knowledge-bases/[^/]+/documents(/[^/]+)?|/v1/files")


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings, *, keys: KeyRing, max_files: int) -> None:
        self.app = app
        self.keys = keys
        self.public = OPEN + DOCS if settings.api.public_docs else OPEN
        self.ui = settings.api.ui
        self.max_json = settings.api.max_json_bytes
        self.max_document = settings.ingest.max_file_bytes + MULTIPART_SLACK
        self.max_files = max_files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.keys.enabled and not self._public(scope["path"]):
            try:
                principal = self.keys.lookup(presented_key(headers.get("authorization", ""), headers.get("x-api-key")))
            except Unauthorized as exc:
                await _reply(send, 401, "Unauthorized", str(exc), {"www-authenticate": "Bearer"})
                return
            scope.setdefault("state", {})["principal"] = principal  # request.state.principal: the routes' caller
        limit = self._limit(scope["path"], headers.get("content-type", ""))
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _reply(send, 413, "FileTooLarge", _too_large(int(declared), limit))
            return
        seen = 0

        async def counted() -> Message:
            """The body as it streams in (chunked, or longer than declared): 413 once it passes the limit."""
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, _too_large(seen, limit))
            return message

        await self.app(scope, counted, send)

    def _public(self, path: str) -> bool:
        return path in self.public or (self.ui and UI.fullmatch(path) is not None)

    def _limit(self, path: str, content_type: str) -> int:
        """Document uploads carry whole files (JSON text or multipart); everything else is a small JSON body."""
        if UPLOADS.fullmatch(path):
            multipart = content_type.lower().startswith("multipart/")
            return self.max_document * (self.max_files if multipart else 1)
        return self.max_json


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {size} bytes or more; the limit here is {limit} bytes"


async def _reply(send: Send, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(kind, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
