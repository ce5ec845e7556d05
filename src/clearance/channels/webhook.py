"""The signed webhook channel (Standard Webhooks): for systems that build their own approval UI.

Settings: `{url, secret, timeout, agents}`.

- `url`: where we POST events. Each is signed per the Standard Webhooks spec: headers
  `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
  (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`).
- `secret`: one or more `whsec_<base64>` secrets separated by spaces, for rotation: we sign
  with the first and accept an inbound signature made with any of them.
- `timeout`: seconds for one POST (default 10).
- `agents`: agents (or `"*"`, every agent) whose own requests are reported to `url` when they
  are decided, for callers that cannot hold a long poll open: `{"type": "approval.decided",
  "approval_id", "agent", "state", "approval": {… as GET /v1/approvals/{id}}}`, sent once
  per final state (its `webhook-id` is derived from the approval and the state).

Outbound events (one per recipient; the receiver shows the request to `recipient`):
`{"type": "approval.requested" | "approval.updated", "approval_id", "action", "params",
"reasons", "stage": {"index", "name", "count"}, "expires_at", "status", "state",
"approve_token", "decide_url", "always_allowed", "recipient", "inbox_url"}`; a blocked
action is sent as `"type": "action.blocked"`, and the result of an inbound decision as
`"decision.result"`.
The `webhook-id` is derived from (approval, person, stage, kind) — and, for an update, the
state it reports — so a send retried by the dispatcher carries the same id and the receiver
can drop the duplicate.

Inbound decisions: POST `/hooks/<name>` with `{"token" | "approval_id", "user", "decision":
"approve" | "deny" | "always", "comment"}` (always: approve and grant the rule's scope),
signed the same way by the external system. The signature
and a 5-minute timestamp window are checked before the body is parsed; the `webhook-id` is
the event id (a replay is dropped); `user` is the external system's user id, mapped through
`person.channels.<name>` like any platform user.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from .base import (
    CallbackRejected,
    CallbackReply,
    ChannelError,
    Interaction,
    Message,
    Outcome,
    Parsed,
    RawRequest,
    Sent,
)

log = structlog.get_logger("clearance.channels")

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
TOLERANCE = timedelta(minutes=5)
MAX_EVENT_ID = 255
MAX_COMMENT = 4000
DECISIONS = ("approve", "deny", "always")  # always: approve + a standing grant


def parse_secrets(value: object) -> tuple[bytes, ...]:
    """The keys of a `secret` setting: `whsec_<base64>` values separated by whitespace.

    Raises ValueError without ever quoting the secret."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("webhook channel: setting 'secret' is required (whsec_<base64>)")
    keys: list[bytes] = []
    for n, item in enumerate(value.split(), start=1):
        encoded = item.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < 16:
            raise ValueError(
                f"webhook channel: secret #{n} in setting 'secret' is not a whsec_ base64 "
                "secret of at least 16 bytes"
            )
        keys.append(key)
    return tuple(keys)


def signature_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for `body` (signed with the `standardwebhooks`
    reference implementation)."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = Webhook(key).sign(msg_id, when, body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def _expected(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def verify(keys: tuple[bytes, ...], headers: Mapping[str, str], body: bytes, now: datetime) -> str:
    """Check a signed request against any of `keys` and `now`; return its `webhook-id`.

    Raises CallbackRejected. Runs before anything in the body is looked at."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and timestamp and signatures):
        raise CallbackRejected("missing webhook signature headers", 401)
    if len(msg_id) > MAX_EVENT_ID or not msg_id.isprintable():
        raise CallbackRejected("invalid webhook-id", 400)
    if not timestamp.isdigit() or len(timestamp) > 12 or str(int(timestamp)) != timestamp:
        raise CallbackRejected("invalid webhook-timestamp", 401)
    sent_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    if abs(now - sent_at) > TOLERANCE:
        raise CallbackRejected("webhook timestamp outside the 5-minute window", 401)
    expected = [_expected(key, msg_id, timestamp, body) for key in keys]
    for item in signatures.split(" ")[:10]:
        version, _, encoded = item.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Compare against every key (no early exit on the key that matched).
        matched = [hmac.compare_digest(given, e) for e in expected]
        if any(matched):
            return msg_id
    raise CallbackRejected("bad webhook signature", 401)


def stable_id(*parts: object) -> str:
    """A `webhook-id` that is the same each time the same event is sent."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _agents(value: object, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} channel: setting 'agents' is a list of agent names, or '*'")
    return frozenset(value)


class WebhookChannel:
    """Approval requests as signed JSON events; decisions as signed JSON callbacks."""

    # A retried send carries the same `webhook-id`: the receiver drops the repeat.
    dedupes_sends_within = float("inf")

    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "webhook"))
        url = settings.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{self.name} channel: setting 'url' is required (an http(s) URL)")
        self.url = url
        self.keys = parse_secrets(settings.get("secret"))
        try:
            self.timeout = float(settings.get("timeout", 10.0))
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} channel: setting 'timeout' must be a number") from None
        if self.timeout <= 0:
            raise ValueError(f"{self.name} channel: setting 'timeout' must be positive")
        self.agents = _agents(settings.get("agents"), self.name)
        self.public_url = public_url.rstrip("/")
        self.decide_url = f"{self.public_url}/hooks/{self.name}"
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._background: set[asyncio.Task[None]] = set()

    # -- outbound ------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        person = message.recipient.id if message.recipient else address
        if message.state == "blocked":
            kind = "action.blocked"
            msg_id = stable_id(message.approval_id, person, "blocked")
        else:
            kind = "approval.requested"
            msg_id = stable_id(message.approval_id, person, message.stage.index, "requested")
        response = await self._post(msg_id, self._event(kind, message, address))
        ref = {"webhook_id": msg_id, "address": address, "person": person}
        return Sent(ref, {"status": response.status_code})

    def wants_agent(self, agent: str | None) -> bool:
        """Whether `agent`'s decided requests are reported here (setting `agents`)."""
        return agent is not None and ("*" in self.agents or agent in self.agents)

    async def send_agent_event(self, approval: Mapping[str, Any]) -> None:
        """`approval.decided` for the agent that asked (`approval` as the API shows it)."""
        event = {
            "type": "approval.decided",
            "approval_id": approval["id"],
            "agent": approval.get("agent"),
            "state": approval["state"],
            "approval": dict(approval),
        }
        msg_id = stable_id(approval["id"], "decided", approval["state"])
        await self._post(msg_id, event)

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        address = str(ref.get("address", ""))
        person = str(ref.get("person", address))
        # The same update retried keeps its id; a different state is a different event.
        msg_id = stable_id(
            message.approval_id,
            person,
            message.stage.index,
            "updated",
            message.state,
            message.status_line,
        )
        await self._post(msg_id, self._event("approval.updated", message, address))

    def _event(self, kind: str, message: Message, address: str) -> dict[str, Any]:
        return {
            "type": kind,
            "approval_id": message.approval_id,
            "action": message.action,
            "params": dict(message.params),
            "reasons": list(message.reasons),
            "requester": message.requester,
            "agent": message.agent,
            "stage": {
                "index": message.stage.index,
                "name": message.stage.name,
                "count": message.stage.count,
            },
            "expires_at": message.expires_at.astimezone(UTC).isoformat(),
            "state": message.state,
            "status": message.status_line,
            "approve_token": message.approve_token if message.open else None,
            "decide_url": self.decide_url if message.open else None,
            "always_allowed": bool(message.open and message.always_token),
            "recipient": address,
            "inbox_url": message.inbox_url,
        }

    async def _post(self, msg_id: str, payload: dict[str, Any]) -> httpx.Response:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        timestamp = int(datetime.now(UTC).timestamp())  # the receiver checks its wall clock
        headers = signature_headers(self.keys[0], msg_id, timestamp, body)
        headers["content-type"] = "application/json"
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise ChannelError(f"{self.name}: the receiver timed out", retry=True) from None
        except httpx.HTTPError as exc:
            raise ChannelError(
                f"{self.name}: could not reach the receiver ({type(exc).__name__})", retry=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return response
        retry = status >= 500 or status in (408, 425, 429)
        raise ChannelError(f"{self.name}: the receiver answered HTTP {status}", retry=retry)

    # -- inbound -------------------------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        if request.method != "POST":
            raise CallbackRejected("decisions are POSTed", 405)
        event_id = verify(self.keys, request.headers, request.body, request.received_at)
        try:
            data = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejected("malformed body: not JSON", 400) from None
        if not isinstance(data, dict):
            raise CallbackRejected("malformed body: not a JSON object", 400)
        user = data.get("user")
        decision = data.get("decision")
        token = data.get("token")
        approval_id = data.get("approval_id")
        comment = data.get("comment")
        if not isinstance(user, str | int) or isinstance(user, bool) or str(user) == "":
            raise CallbackRejected("malformed body: 'user' is required", 400)
        if decision not in DECISIONS:
            raise CallbackRejected(
                "malformed body: 'decision' must be approve, deny or always", 400
            )
        if not isinstance(token, str) and not isinstance(approval_id, str):
            raise CallbackRejected("malformed body: 'token' or 'approval_id' is required", 400)
        if comment is not None and not isinstance(comment, str):
            raise CallbackRejected("malformed body: 'comment' must be a string", 400)
        interaction = Interaction(
            event_id=event_id,
            user_id=str(user),
            token=token if isinstance(token, str) else None,
            approval_id=approval_id if isinstance(approval_id, str) else None,
            decision=str(decision),
            comment=comment[:MAX_COMMENT] if comment else None,
            reply_ref={"address": str(user)},
        )
        reply = CallbackReply(200, b'{"received":true}')
        return Parsed((interaction,), reply)

    async def acknowledge(self, outcome: Outcome) -> None:
        """Tell the external system what became of the decision it sent (a refusal is
        otherwise invisible to it: nothing changed, so no `approval.updated` follows).

        Sent in the background: the reply to its callback must not wait on a POST back to
        it (a single-threaded receiver would deadlock until our timeout). `settle()` waits."""
        interaction = outcome.interaction
        payload = {
            "type": "decision.result",
            "event_id": interaction.event_id,
            "user": interaction.user_id,
            "approval_id": (
                outcome.message.approval_id if outcome.message else interaction.approval_id
            ),
            "ok": outcome.ok,
            "text": outcome.text,
        }
        msg_id = stable_id(self.name, interaction.event_id, "result", outcome.ok, outcome.text)
        task = asyncio.create_task(self._post_quietly(msg_id, payload))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post_quietly(self, msg_id: str, payload: dict[str, Any]) -> None:
        try:
            await self._post(msg_id, payload)
        except ChannelError as exc:
            log.warning("webhook_result_not_delivered", channel=self.name, error=str(exc))

    async def settle(self) -> None:
        """Wait for the results still being sent."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        await self.settle()
        await self._client.aclose()
