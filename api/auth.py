"""Optional API keys (``KB_API_KEYS``): ``Authorization: Bearer <key>`` (what the OpenAI SDK sends) or
``X-API-Key``. A key may be scoped to some knowledge bases: 401 without a valid key, 403 outside its scope.
Keys are compared by SHA-256 digest in constant time and never logged or echoed."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from kb_service.core.config import Settings
from kb_service.core.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    name: str
    kbs: frozenset[str] | None  # None: every knowledge base

    def allows(self, kb: str) -> bool:
        """Names compare in their NFC form, as the knowledge bases are stored."""
        return self.kbs is None or unicodedata.normalize("NFC", kb) in self.kbs

    def check(self, kb: str) -> None:
        if not self.allows(kb):
            raise Forbidden(f"API key {self.name!r} may not use knowledge base {kb!r}")


ANONYMOUS = Principal("anonymous", None)


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self._keys = {
            _digest(k.key.get_secret_value()): Principal(
                k.name, None if k.kbs is None else frozenset(unicodedata.normalize("NFC", kb) for kb in k.kbs)
            )
            for k in settings.api.keys
        }

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def lookup(self, presented: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not presented:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = _digest(presented)
        for known, principal in self._keys.items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthorized("the API key is not valid")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def presented_key(authorization: str, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``X-API-Key``."""
    return authorization[7:].strip() if authorization.lower().startswith("bearer ") else x_api_key


def authenticate(request: Request) -> Principal:
    """Router dependency: who is calling (found by the request guard when keys are set), checked against the
    ``{kb}`` of the path when there is one."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # no keys are set: anonymous
        presented = presented_key(request.headers.get("authorization", ""), request.headers.get("x-api-key"))
        principal = request.app.state.keys.lookup(presented)
    if (kb := request.path_params.get("kb")) is not None:
        principal.check(kb)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
