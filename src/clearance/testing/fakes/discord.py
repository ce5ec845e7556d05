"""A fake of the Discord HTTP API (the endpoints Clearance uses) and of its interactions.

`FakeDiscord().app` is an ASGI app serving, under `/api/v10`, the way discord.com does:

- `POST /users/@me/channels {recipient_id}` → the DM channel object (the same one each time),
- `POST /channels/{channel_id}/messages` → the message object; `nonce` + `enforce_nonce`
  return the earlier message for a nonce repeated within `nonce_window_s` (Discord keeps
  them "a few minutes") instead of creating a second one,
- `PATCH /channels/{channel_id}/messages/{message_id}` → the edited message,

with `Authorization: Bot <token>` checked (401 `{"message": "401: Unauthorized", "code": 0}`),
Discord's error bodies (`{"code": 50035, "message": "Invalid Form Body", "errors": …}`,
10003 Unknown Channel, 10008 Unknown Message, 50007 for users who do not accept DMs, 429
with `retry_after`), and the message limits a request could break. Every call is recorded.

It also builds the interactions Discord POSTs to an app's Interactions Endpoint URL — PING, a
button click (MESSAGE_COMPONENT) on a stored message, a MODAL_SUBMIT — signed the way
Discord signs them: Ed25519 over `X-Signature-Timestamp` + body, with a test key whose public
half (`public_key`, hex) goes in the channel's settings.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nacl.signing import SigningKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

DISCORD_EPOCH_MS = 1_420_070_400_000


@dataclass
class DiscordCall:
    """One API call as the fake received it."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]
    status: int = 200


@dataclass
class FakeDiscord:
    bot_token: str = "fake-discord-bot-token"  # noqa: S105 - a fake's test token
    application_id: str = "1300000000000000001"
    seed: bytes = b"clearance-discord-fake-key-seed!"  # 32 bytes: a stable test key
    no_dms: set[str] = field(default_factory=set)  # users who do not accept DMs from the bot
    calls: list[DiscordCall] = field(default_factory=list)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[int] = field(default_factory=list)
    fail_after_create: int = 0  # create the message, then answer 500 (a lost response)
    clock: Callable[[], float] = time.time  # Discord's clock, for how long nonces are kept
    nonce_window_s: float = 300.0  # "in the past few minutes": a nonce older than this is new

    def __post_init__(self) -> None:
        self.signing_key = SigningKey(self.seed)
        self.public_key = self.signing_key.verify_key.encode().hex()
        self._seq = itertools.count(1)
        self._nonces: dict[tuple[str, str], tuple[str, float]] = {}
        self.app = Starlette(
            routes=[
                Route("/api/v10/users/@me/channels", self._open_dm, methods=["POST"]),
                Route("/api/v10/channels/{channel_id}/messages", self._create, methods=["POST"]),
                Route(
                    "/api/v10/channels/{channel_id}/messages/{message_id}",
                    self._edit,
                    methods=["PATCH"],
                ),
            ]
        )

    # -- test controls -------------------------------------------------------------------------
    def fail_next(self, *statuses: int) -> None:
        """Answer the next calls with these HTTP statuses (500, 502, 429…), in order."""
        self.failures.extend(statuses)

    def reset(self) -> None:
        self.calls.clear()
        self.channels.clear()
        self.messages.clear()
        self.failures.clear()
        self._nonces.clear()
        self.no_dms.clear()
        self.fail_after_create = 0

    def calls_to(self, method: str, suffix: str) -> list[DiscordCall]:
        """The successful calls with this method whose path ends with `suffix`."""
        return [
            c
            for c in self.calls
            if c.method == method and c.path.endswith(suffix) and c.status < 300
        ]

    def dm_channel(self, user_id: str) -> str | None:
        return next(
            (cid for cid, c in self.channels.items() if c["recipients"][0]["id"] == user_id), None
        )

    # -- the API -------------------------------------------------------------------------------
    async def _begin(self, request: Request) -> tuple[DiscordCall, Any, Response | None]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k: v for k, v in request.headers.items() if k in ("authorization", "user-agent")}
        call = DiscordCall(request.method, request.url.path, body, headers)
        self.calls.append(call)
        if self.failures:
            call.status = self.failures.pop(0)
            if call.status == 429:
                return (
                    call,
                    body,
                    _error(
                        call,
                        429,
                        {
                            "message": "You are being rate limited.",
                            "retry_after": 0.5,
                            "global": False,
                        },
                        headers={"Retry-After": "1", "X-RateLimit-Remaining": "0"},
                    ),
                )
            return call, body, PlainTextResponse("upstream connect error", call.status)
        if request.headers.get("authorization") != f"Bot {self.bot_token}":
            return call, body, _error(call, 401, {"message": "401: Unauthorized", "code": 0})
        if not isinstance(body, dict):
            return call, body, _error(call, 400, {"message": "400: Bad Request", "code": 0})
        return call, body, None

    async def _open_dm(self, request: Request) -> Response:
        call, body, early = await self._begin(request)
        if early is not None:
            return early
        recipient = str(body.get("recipient_id") or "")
        if not recipient.isdigit():
            return _invalid(call, {"recipient_id": "Value is not snowflake."})
        existing = self.dm_channel(recipient)
        if existing:
            return JSONResponse(self.channels[existing])
        channel_id = self._snowflake()
        channel: dict[str, Any] = {
            "id": channel_id,
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [
                {
                    "id": recipient,
                    "username": f"user{recipient[-4:]}",
                    "global_name": None,
                    "discriminator": "0",
                    "avatar": None,
                }
            ],
        }
        self.channels[channel_id] = channel
        return JSONResponse(channel)

    async def _create(self, request: Request) -> Response:
        call, body, early = await self._begin(request)
        if early is not None:
            return early
        channel_id = request.path_params["channel_id"]
        channel = self.channels.get(channel_id)
        if channel is None:
            return _error(call, 404, {"message": "Unknown Channel", "code": 10003})
        if channel["recipients"][0]["id"] in self.no_dms:
            return _error(
                call, 403, {"message": "Cannot send messages to this user", "code": 50007}
            )
        errors = _check_message(body, creating=True)
        if errors == {"empty": "empty"}:
            return _error(call, 400, {"message": "Cannot send an empty message", "code": 50006})
        if errors:
            return _invalid(call, errors)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get((channel_id, str(nonce)))
            if earlier is not None and self.clock() - earlier[1] < self.nonce_window_s:
                return JSONResponse(self.messages[earlier[0]])
        message = {
            "id": self._snowflake(),
            "type": 0,
            "channel_id": channel_id,
            "author": {
                "id": self.application_id,
                "username": "Clearance",
                "discriminator": "0000",
                "bot": True,
                "avatar": None,
            },
            "content": body.get("content") or "",
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "flags": 0,
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
        }
        if nonce is not None:
            message["nonce"] = nonce
            self._nonces[(channel_id, str(nonce))] = (message["id"], self.clock())
        self.messages[message["id"]] = message
        channel["last_message_id"] = message["id"]
        if self.fail_after_create > 0:
            self.fail_after_create -= 1
            call.status = 500
            return PlainTextResponse("upstream request timeout", 500)
        return JSONResponse(message)

    async def _edit(self, request: Request) -> Response:
        call, body, early = await self._begin(request)
        if early is not None:
            return early
        message = self.messages.get(request.path_params["message_id"])
        if message is None or message["channel_id"] != request.path_params["channel_id"]:
            return _error(call, 404, {"message": "Unknown Message", "code": 10008})
        errors = _check_message(body, creating=False)
        if errors:
            return _invalid(call, errors)
        for key in ("content", "embeds", "components", "flags"):
            if key in body:
                message[key] = body[key]
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        return JSONResponse(message)

    def _snowflake(self) -> str:
        ms = int(datetime.now(UTC).timestamp() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._seq) & 0x3FFFFF))

    # -- what Discord sends the app ------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return {
            "id": self._snowflake(),
            "application_id": self.application_id,
            "type": 1,
            "token": secrets.token_urlsafe(48),
            "version": 1,
            "user": None,
        }

    def click(
        self, user_id: str, message_id: str, action: str = "approve", *, in_guild: bool = False
    ) -> dict[str, Any]:
        """The MESSAGE_COMPONENT interaction for `user_id` clicking a button of a message."""
        message = self.messages[message_id]
        button = next(
            (
                b
                for row in message.get("components") or []
                for b in row.get("components") or []
                if str(b.get("custom_id", "")).startswith(f"{action}:")
            ),
            None,
        )
        if button is None:
            raise LookupError(f"the message has no {action} button (any more)")
        return self._interaction(
            3,
            user_id,
            message,
            {"custom_id": button["custom_id"], "component_type": 2},
            in_guild=in_guild,
        )

    def submit(
        self, user_id: str, message_id: str, modal: dict[str, Any], reason: str
    ) -> dict[str, Any]:
        """The MODAL_SUBMIT interaction for `user_id` filling in `modal` (a type 9 reply)."""
        data = modal["data"]
        components: list[dict[str, Any]] = []
        for n, item in enumerate(data.get("components") or [], start=1):
            inner = item.get("component") or {}
            if item.get("type") == 18 and inner.get("type") == 4:
                components.append(
                    {
                        "type": 18,
                        "id": n * 2 - 1,
                        "component": {
                            "type": 4,
                            "id": n * 2,
                            "custom_id": inner["custom_id"],
                            "value": reason,
                        },
                    }
                )
            elif item.get("type") == 1:  # legacy: text inputs in action rows
                row = [
                    {"type": 4, "custom_id": c["custom_id"], "value": reason}
                    for c in item.get("components") or []
                    if c.get("type") == 4
                ]
                components.append({"type": 1, "components": row})
        return self._interaction(
            5,
            user_id,
            self.messages[message_id],
            {"custom_id": data["custom_id"], "components": components},
        )

    def command(
        self, user_id: str, name: str = "approve", *, in_guild: bool = False, **options: str
    ) -> dict[str, Any]:
        """The APPLICATION_COMMAND interaction for `user_id` running the chat-input command
        `/name` with string options (`id`, `decision`, `reason`), in their DM with the bot."""
        channel_id = self.dm_channel(user_id) or self._snowflake()
        data = {
            "id": "1300000000000000100",
            "name": name,
            "type": 1,  # CHAT_INPUT
            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
        }
        return self._interaction(
            2, user_id, {"channel_id": channel_id}, data, in_guild=in_guild, with_message=False
        )

    def _interaction(
        self,
        kind: int,
        user_id: str,
        message: dict[str, Any],
        data: dict[str, Any],
        *,
        in_guild: bool = False,
        with_message: bool = True,
    ) -> dict[str, Any]:
        user = {
            "id": user_id,
            "username": f"user{user_id[-4:]}",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
        }
        payload: dict[str, Any] = {
            "id": self._snowflake(),
            "application_id": self.application_id,
            "type": kind,
            "data": data,
            "channel_id": message["channel_id"],
            "channel": {"id": message["channel_id"], "type": 0 if in_guild else 1},
            "token": secrets.token_urlsafe(48),
            "version": 1,
            "locale": "en-US",
            "app_permissions": "562949953601536",
            "entitlements": [],
            "authorizing_integration_owners": {"0": "1", "1": user_id},
            "context": 0 if in_guild else 1,
        }
        if with_message:
            payload["message"] = message
        if in_guild:
            payload["guild_id"] = "1200000000000000001"
            payload["member"] = {"user": user, "roles": [], "nick": None, "permissions": "0"}
        else:
            payload["user"] = user
        return payload

    def signed(
        self, payload: dict[str, Any], *, timestamp: int, key: SigningKey | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The HTTP body and headers Discord would POST for `payload`."""
        body = json.dumps(payload).encode()
        stamp = str(timestamp)
        signature = (key or self.signing_key).sign(stamp.encode() + body).signature.hex()
        headers = {
            "content-type": "application/json",
            "x-signature-ed25519": signature,
            "x-signature-timestamp": stamp,
            "user-agent": "Discord-Interactions/1.0 (+https://discord.com)",
        }
        return body, headers


def _error(
    call: DiscordCall, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    call.status = status
    return JSONResponse(body, status, headers=headers)


def _invalid(call: DiscordCall, errors: dict[str, str]) -> Response:
    detail = {
        k: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": v}]} for k, v in errors.items()
    }
    return _error(call, 400, {"code": 50035, "message": "Invalid Form Body", "errors": detail})


def _check_message(body: dict[str, Any], *, creating: bool) -> dict[str, str]:
    """Discord's message limits; {"empty": …} when a new message would have nothing in it."""
    errors: dict[str, str] = {}
    content, embeds = body.get("content") or "", body.get("embeds") or []
    components = body.get("components") or []
    if creating and not content and not embeds and not components:
        return {"empty": "empty"}
    if len(content) > 2000:
        errors["content"] = "Must be 2000 or fewer in length."
    nonce = body.get("nonce")
    if nonce is not None and len(str(nonce)) > 25:
        errors["nonce"] = "Must be 25 or fewer in length."
    if len(embeds) > 10:
        errors["embeds"] = "Must be 10 or fewer in length."
    for i, embed in enumerate(embeds):
        total = 0
        for key, limit in (("title", 256), ("description", 4096)):
            text = str(embed.get(key) or "")
            total += len(text)
            if len(text) > limit:
                errors[f"embeds.{i}.{key}"] = f"Must be {limit} or fewer in length."
        fields = embed.get("fields") or []
        if len(fields) > 25:
            errors[f"embeds.{i}.fields"] = "Must be 25 or fewer in length."
        for j, f in enumerate(fields):
            name, value = str(f.get("name") or ""), str(f.get("value") or "")
            total += len(name) + len(value)
            if not name or len(name) > 256 or not value or len(value) > 1024:
                errors[f"embeds.{i}.fields.{j}"] = "Field name/value empty or too long."
        total += len(str((embed.get("footer") or {}).get("text") or ""))
        if total > 6000:
            errors[f"embeds.{i}"] = "Embed size exceeds maximum size of 6000"
    if len(components) > 5:
        errors["components"] = "Must be 5 or fewer in length."
    custom_ids: set[str] = set()
    for i, row in enumerate(components):
        buttons = row.get("components") or []
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            errors[f"components.{i}"] = "An action row holds 1 to 5 components."
            continue
        for j, b in enumerate(buttons):
            where = f"components.{i}.components.{j}"
            style, custom_id = b.get("style"), b.get("custom_id")
            if b.get("type") != 2 or style not in (1, 2, 3, 4, 5):
                errors[where] = "Invalid button."
            elif style == 5 and (not b.get("url") or custom_id):
                errors[where] = "A link button has a url and no custom_id."
            elif style != 5 and (not custom_id or len(custom_id) > 100 or b.get("url")):
                errors[where] = "A button has a custom_id of at most 100 characters and no url."
            elif len(str(b.get("label") or "")) > 80:
                errors[where] = "Label must be 80 or fewer in length."
            if custom_id:
                if custom_id in custom_ids:
                    errors[where] = "Component custom id cannot be duplicated"
                custom_ids.add(custom_id)
    return errors
