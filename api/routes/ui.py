"""The web page (``/ui/``): static files shipped in the package (``api/ui``), nothing built at install time and
nothing fetched from elsewhere. The page itself holds no data and needs no key; it calls the public REST API with
the key its user types in, so every request it makes is authorised exactly as a client's would be."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
PREFIX = "/ui"
# The page may reach only this service: scripts, styles, images (page renders come as blob: URLs) and API calls.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),  # revalidated (ETag) so an upgraded service never runs yesterday's script
]

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/")


class _Assets(StaticFiles):
    """The static files with the page's security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PREFIX, _Assets(directory=UI_DIR, html=True), name="ui")
