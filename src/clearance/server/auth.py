"""Who is calling the API: a bearer API key, resolved to an agent or a person.

Verified keys are cached for a few seconds (by the hash of the token, never the token), so
the hot path does not read the database on every check; revoking a key through this
process clears the cache at once, and another process's revocation applies within
`CACHE_TTL_S`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from ..identity import keys
from ..store.reads import read
from .errors import HTTPProblem

CACHE_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    kind: Literal["agent", "person"]
    subject: str
    via: Literal["key", "session"] = "key"
    key_id: str | None = None


class KeyCache:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, keys.ApiKey]] = {}

    def get(self, digest: str) -> keys.ApiKey | None:
        item = self._items.get(digest)
        if item is None or item[0] < time.monotonic():
            self._items.pop(digest, None)
            return None
        return item[1]

    def put(self, digest: str, key: keys.ApiKey) -> None:
        if len(self._items) > 10_000:
            self._items.clear()
        self._items[digest] = (time.monotonic() + CACHE_TTL_S, key)

    def clear(self) -> None:
        self._items.clear()


async def authenticate(request: Request) -> Principal:
    """The caller behind the `Authorization: Bearer clr_…` header; 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPProblem(401, "unauthenticated", "send an API key: Authorization: Bearer clr_…")
    token = token.strip()
    state = request.app.state
    digest = hashlib.sha256(token.encode()).hexdigest()
    key = state.key_cache.get(digest)
    if key is None:
        gateway = state.gateway
        now = gateway.clock()
        key = await read(gateway.db, lambda c: keys.verify_token(c, token, now))
        if key is None:
            raise HTTPProblem(401, "invalid_key", "this API key is unknown or revoked")
        state.key_cache.put(digest, key)
    return Principal(kind=key.kind, subject=key.subject, key_id=key.id)
