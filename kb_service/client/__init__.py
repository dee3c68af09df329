"""Python clients for the service: in-process (:class:`LocalClient`) and over HTTP (:class:`HTTPClient`), with
the same calls and the REST API's own return types."""

from typing import Any

from kb_service.client.base import ClientError, IngestOutcome, KBClient
from kb_service.client.http import HTTPClient
from kb_service.client.local import LocalClient

__all__ = ["ClientError", "HTTPClient", "IngestOutcome", "KBClient", "LocalClient", "connect"]


def connect(url: str | None = None, *, api_key: str | None = None, **overrides: Any) -> KBClient:
    """An HTTP client when ``url`` is given, else an in-process one (``overrides`` are settings, e.g. backend)."""
    if url:
        return HTTPClient(url, api_key=api_key)
    return LocalClient(**overrides)
