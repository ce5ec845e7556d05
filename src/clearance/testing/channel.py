"""An in-memory channel: records what it sends, fails on demand, and accepts callbacks signed
with an HMAC secret — for testing routing, retries and fallbacks without a platform.

Settings: `{kind: memory, secret: "...", fail: 0, permanent: false}`: `fail` sends fail before
one succeeds (`permanent` makes them non-retryable).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from ..channels.base import (
    CallbackRejected,
    ChannelError,
    Interaction,
    Message,
    Outcome,
    Parsed,
    RawRequest,
    Sent,
)


def sign_memory_callback(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class MemoryChannel:
    instances: ClassVar[dict[str, MemoryChannel]] = {}

    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "memory"))
        self.secret = str(settings.get("secret", "memory-secret"))
        self.fail = int(settings.get("fail", 0))
        self.permanent = bool(settings.get("permanent", False))
        self.sent: list[tuple[str, Message]] = []
        self.updated: list[tuple[dict[str, Any], Message]] = []
        self.acknowledged: list[Outcome] = []
        MemoryChannel.instances[self.name] = self

    async def send(self, message: Message, address: str) -> Sent:
        if self.fail > 0:
            self.fail -= 1
            raise ChannelError("memory channel: failing on purpose", retry=not self.permanent)
        self.sent.append((address, message))
        return Sent({"address": address, "n": len(self.sent)})

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        self.updated.append((dict(ref), message))

    async def parse_callback(self, request: RawRequest) -> Parsed:
        signature = request.headers.get("x-memory-signature", "")
        expected = sign_memory_callback(self.secret, request.body)
        if not hmac.compare_digest(signature, expected):
            raise CallbackRejected("bad signature")
        try:
            data = json.loads(request.body)
        except ValueError:
            raise CallbackRejected("malformed body", 400) from None
        return Parsed(
            (
                Interaction(
                    event_id=str(data["event_id"]),
                    user_id=str(data["user"]),
                    token=data.get("token"),
                    approval_id=data.get("approval_id"),
                    decision=data.get("decision"),
                    comment=data.get("comment"),
                ),
            )
        )

    async def acknowledge(self, outcome: Outcome) -> None:
        self.acknowledged.append(outcome)
        return None

    async def aclose(self) -> None:
        MemoryChannel.instances.pop(self.name, None)
