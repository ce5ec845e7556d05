"""A fake Standard Webhooks counterpart: a receiver for the events Clearance sends, and a
sender of signed decisions. Both use the `standardwebhooks` reference implementation, not
Clearance's own code, so a test proves we speak the spec.

    receiver = WebhookReceiver(secret, fail=1)        # answers 500 once, then 200
    with serve_in_thread(receiver.app) as server: ... # events go to f"{server.url}/events"
    receiver.delivered                                # verified, accepted, one per webhook-id
    body, headers = WebhookSender(secret).decision(user="ext-bob", token=..., decision=...)
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def generate_secret(size: int = 32) -> str:
    """A new `whsec_<base64>` secret."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(size)).decode()


@dataclass(frozen=True, slots=True)
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any  # the JSON body when the signature verified, else None
    verified: bool
    status: int  # what the receiver answered

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def type(self) -> str:
        return str(self.payload.get("type")) if isinstance(self.payload, dict) else ""


class WebhookReceiver:
    """Verifies each POST with `secret` (the wall clock, 5 minutes, like a real receiver),
    records it, and answers `fail_status` to the first `fail` verified POSTs."""

    def __init__(self, secret: str, *, fail: int = 0, fail_status: int = 500) -> None:
        self._webhook = Webhook(secret)
        self.fail = fail
        self.fail_status = fail_status
        self.attempts: list[Received] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            payload = self._webhook.verify(body, headers)
            verified = True
        except (WebhookVerificationError, ValueError):
            payload, verified = None, False
        with self._lock:
            if not verified:
                status = 401
            elif self.fail > 0:
                self.fail -= 1
                status = self.fail_status
            else:
                status = 200
            self.attempts.append(
                Received(request.url.path, headers, body, payload, verified, status)
            )
        return JSONResponse({"ok": status == 200}, status_code=status)

    @property
    def delivered(self) -> list[Received]:
        """Verified and accepted events, once per `webhook-id` (how a receiver dedupes)."""
        seen: set[str] = set()
        out: list[Received] = []
        for item in list(self.attempts):
            if item.status == 200 and item.webhook_id not in seen:
                seen.add(item.webhook_id)
                out.append(item)
        return out

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The payloads delivered, optionally only those of one `type`."""
        return [d.payload for d in self.delivered if kind is None or d.type == kind]


class WebhookSender:
    """The external system's side: decisions signed the Standard Webhooks way."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def sign(
        self, body: bytes, *, msg_id: str | None = None, timestamp: datetime | None = None
    ) -> dict[str, str]:
        msg_id = msg_id or f"msg_{secrets.token_hex(12)}"
        when = (timestamp or datetime.now(UTC)).astimezone(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, when, body.decode()),
        }

    def decision(
        self,
        *,
        user: str,
        decision: str,
        token: str | None = None,
        approval_id: str | None = None,
        comment: str | None = None,
        msg_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A signed decision callback: `(body, headers)`."""
        data: dict[str, Any] = {"user": user, "decision": decision}
        if token is not None:
            data["token"] = token
        if approval_id is not None:
            data["approval_id"] = approval_id
        if comment is not None:
            data["comment"] = comment
        body = json.dumps(data).encode()
        return body, self.sign(body, msg_id=msg_id, timestamp=timestamp)
