"""Discord: a DM from the bot with an embed and Approve / Deny buttons; Deny opens a modal.

Settings: `{bot_token, public_key (the application's hex Ed25519 key), application_id,
base_url (default https://discord.com/api/v10), timeout (seconds, default 10)}`.

- `send`: open the DM channel (`POST /users/@me/channels {recipient_id}`), then
  `POST /channels/{id}/messages` with an embed and one action row: Approve (style 3) and
  Deny (style 4) whose `custom_id` is `approve:<token>` / `deny:<token>` — the opaque token
  only. The delivery id (request, stage, recipient) as `nonce`, with `enforce_nonce: true`,
  makes a send retried within minutes (a lost answer, a crash before our commit) return the
  first message instead of a second.
  `update` is `PATCH /channels/{channel_id}/messages/{message_id}`.
- `/hooks/discord` (the Interactions Endpoint URL): `X-Signature-Ed25519` is checked over
  `X-Signature-Timestamp` + the raw body (PyNaCl), and timestamps older than 5 minutes are
  refused, before the JSON is parsed. PING (type 1) is answered `{"type": 1}`. A button
  (MESSAGE_COMPONENT, type 3): Approve is a vote; Deny answers with a MODAL (type 9) asking
  for the reason, whose MODAL_SUBMIT (type 5) is the vote.
- The answer to a vote is the HTTP reply itself: UPDATE_MESSAGE (type 7) with the refreshed
  embed and no buttons, or an ephemeral CHANNEL_MESSAGE_WITH_SOURCE (type 4, flags 64) with
  the refusal. The hub decides after `parse_callback` returns but acknowledges before the
  hook answers, so `acknowledge` fills in the reply `parse_callback` handed out.
- The `/approve` slash command (APPLICATION_COMMAND, type 2; register it with string options
  `id` (required), `decision` (choices approve / deny) and `reason`; `/deny` with `id` and
  `reason` works too) is the text command of `textcommand`, answered with an ephemeral
  message saying what happened; the sender is the interaction's verified user.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from . import textcommand
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

DEFAULT_BASE_URL = "https://discord.com/api/v10"
USER_AGENT = "DiscordBot (https://github.com/clearance-dev/clearance, 1.0)"
WINDOW_S = 5 * 60
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 1, 2, 3, 5
PONG, CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL = 1, 4, 6, 7, 9
EPHEMERAL = 64
OPTION_STRING = 3
REASON_INPUT = "reason"
NO_MENTIONS: dict[str, Any] = {"parse": []}
COLORS = {"pending": 0x3B82F6, "approved": 0x16A34A, "denied": 0xDC2626, "blocked": 0xDC2626}
GREY = 0x6B7280
MAX_PARAM_FIELDS = 20
EMBED_BUDGET = 5800  # Discord's limit on all of an embed's text is 6000 characters
PENDING_REPLIES = 1000
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()#<@-])")


class _LateReply(CallbackReply):
    """The interaction's HTTP reply, settled by `acknowledge` once the hub has decided.

    CallbackReply is frozen; this is its one writer, and it writes before the hook reads."""

    __slots__ = ()

    def settle(self, payload: Mapping[str, Any]) -> None:
        object.__setattr__(self, "body", json.dumps(payload).encode())


class _UnknownChannel(ChannelError):
    """Discord's 10003: the channel id is not (or no longer) valid."""


class DiscordChannel:
    """Approval requests as Discord DMs, decided with buttons (and a modal for reasons)."""

    # Discord drops a message create whose enforced nonce it saw "in the past few minutes".
    dedupes_sends_within = 120.0

    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "discord"))
        token = _required(settings, "bot_token", self.name)
        public_key = _required(settings, "public_key", self.name)
        self.application_id = _required(settings, "application_id", self.name)
        try:
            self._verify_key = VerifyKey(bytes.fromhex(public_key.strip()))
        except (ValueError, TypeError):
            raise ValueError(
                f"{self.name} channel: 'public_key' must be the application's hex Ed25519 key"
            ) from None
        base_url = str(settings.get("base_url") or DEFAULT_BASE_URL)
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{self.name} channel: 'base_url' must be an http(s) URL")
        try:
            timeout = float(settings.get("timeout", 10))
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name} channel: 'timeout' must be a number of seconds"
            ) from None
        self.public_url = public_url
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bot {token}", "User-Agent": USER_AGENT},
            timeout=timeout,
        )
        self._dm_channels: dict[str, str] = {}
        self._replies: OrderedDict[str, _LateReply] = OrderedDict()

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        cached = address in self._dm_channels
        try:
            return await self._send(message, address)
        except _UnknownChannel:
            if not cached:
                raise
            self._dm_channels.pop(address, None)  # a stale DM channel id: open it again
            return await self._send(message, address)

    async def _send(self, message: Message, address: str) -> Sent:
        channel_id = await self._dm_channel(address)
        body = {
            **render(message),
            "allowed_mentions": NO_MENTIONS,
            "nonce": nonce(message, address),
            "enforce_nonce": True,
        }
        data = await self._request("POST", f"channels/{channel_id}/messages", body, "send")
        ref = {
            "channel_id": str(data.get("channel_id") or channel_id),
            "message_id": str(data["id"]),
        }
        return Sent(ref, {"id": ref["message_id"], "channel_id": ref["channel_id"]})

    async def _dm_channel(self, user_id: str) -> str:
        known = self._dm_channels.get(user_id)
        if known:
            return known
        data = await self._request("POST", "users/@me/channels", {"recipient_id": user_id}, "dm")
        channel_id = str(data["id"])
        self._dm_channels[user_id] = channel_id
        return channel_id

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        channel_id, message_id = ref.get("channel_id"), ref.get("message_id")
        if not channel_id or not message_id:
            raise ChannelError(f"{self.name}: message reference without ids", retry=False)
        body = {**render(message), "allowed_mentions": NO_MENTIONS}
        await self._request("PATCH", f"channels/{channel_id}/messages/{message_id}", body, "update")

    # -- callbacks -----------------------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        self._verify(request)  # nothing is parsed before this
        try:
            data = json.loads(request.body)
        except ValueError:
            raise CallbackRejected("malformed Discord interaction", 400) from None
        if not isinstance(data, dict):
            raise CallbackRejected("malformed Discord interaction", 400)
        if str(data.get("application_id")) != self.application_id:
            raise CallbackRejected("interaction for another Discord application", 400)
        kind = data.get("type")
        if kind == PING:
            return Parsed(reply=_reply({"type": PONG}))
        if kind == MESSAGE_COMPONENT:
            return self._component(data)
        if kind == MODAL_SUBMIT:
            return self._modal_submit(data)
        if kind == APPLICATION_COMMAND:
            return self._command(data)
        raise CallbackRejected(f"unsupported Discord interaction type {kind!r}", 400)

    def _verify(self, request: RawRequest) -> None:
        signature = request.headers.get("x-signature-ed25519", "")
        timestamp = request.headers.get("x-signature-timestamp", "")
        if not signature or not timestamp:
            raise CallbackRejected("missing Discord signature headers")
        try:
            self._verify_key.verify(timestamp.encode() + request.body, bytes.fromhex(signature))
        except (BadSignatureError, ValueError, TypeError):
            raise CallbackRejected("bad Discord signature") from None
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise CallbackRejected("malformed Discord signature timestamp") from None
        if abs(request.received_at.timestamp() - sent_at) > WINDOW_S:
            raise CallbackRejected("stale Discord interaction (older than 5 minutes)")

    def _component(self, data: dict[str, Any]) -> Parsed:
        custom_id = str((data.get("data") or {}).get("custom_id") or "")
        kind, _, token = custom_id.partition(":")
        if kind not in ("approve", "deny", "always") or not token:
            raise CallbackRejected("unknown Discord component", 400)
        if kind == "deny":  # a denial needs a reason: ask for it first
            return Parsed(reply=_reply(reason_modal(token)))
        return self._vote(data, token, kind, None)  # approve, or always (a standing grant)

    def _modal_submit(self, data: dict[str, Any]) -> Parsed:
        submitted = data.get("data") or {}
        kind, _, token = str(submitted.get("custom_id") or "").partition(":")
        if kind != "deny" or not token:
            raise CallbackRejected("unknown Discord modal", 400)
        reason = next(
            (
                str(c.get("value") or "")
                for c in _walk(submitted.get("components") or [])
                if c.get("custom_id") == REASON_INPUT
            ),
            "",
        )
        return self._vote(data, token, "deny", reason or None)

    def _command(self, data: dict[str, Any]) -> Parsed:
        """The `/approve` (or `/deny`) slash command: options `id`, `decision`, `reason`,
        checked exactly like the typed command; the sender is the interaction's user."""
        command = data.get("data") or {}
        name = str(command.get("name") or "") if isinstance(command, dict) else ""
        if name not in ("approve", "deny"):
            return Parsed(reply=_reply(_ephemeral(textcommand.USAGE)))
        options = {
            str(o.get("name")): str(o.get("value") or "").strip()
            for o in command.get("options") or []
            if isinstance(o, dict) and o.get("type") == OPTION_STRING
        }
        words = [f"/{name}", options.get("id", "")]
        if name == "approve":
            words.append(options.get("decision") or "approve")
        words.append(options.get("reason", ""))
        try:
            parsed = textcommand.parse(" ".join(w for w in words if w))
        except textcommand.CommandError as exc:
            return Parsed(reply=_reply(_ephemeral(str(exc))))
        if parsed is None:
            return Parsed(reply=_reply(_ephemeral(textcommand.USAGE)))
        interaction_id = str(data.get("id") or "")
        if not interaction_id:
            raise CallbackRejected("Discord interaction without an id", 400)
        reply_key, reply = self._late_reply(_ephemeral("Working on it…"))
        interaction = parsed.interaction(
            event_id=interaction_id,
            user_id=_user_id(data),
            reply_ref={"reply_key": reply_key, "command": True},
        )
        return Parsed((interaction,), reply)

    def _late_reply(self, first: Mapping[str, Any]) -> tuple[str, _LateReply]:
        reply = _LateReply(body=json.dumps(first).encode())
        reply_key = secrets.token_hex(8)  # one per delivery, even of a replayed interaction
        self._replies[reply_key] = reply
        while len(self._replies) > PENDING_REPLIES:
            self._replies.popitem(last=False)
        return reply_key, reply

    def _vote(self, data: dict[str, Any], token: str, decision: str, comment: str | None) -> Parsed:
        interaction_id = str(data.get("id") or "")
        user_id = _user_id(data)
        if not interaction_id:
            raise CallbackRejected("Discord interaction without an id", 400)
        message = data.get("message") or {}
        reply_key, reply = self._late_reply({"type": DEFERRED_UPDATE})
        interaction = Interaction(
            event_id=interaction_id,
            user_id=user_id,
            token=token,
            decision=decision,
            comment=comment,
            reply_ref={
                "reply_key": reply_key,
                "interaction_id": interaction_id,
                "channel_id": data.get("channel_id") or message.get("channel_id"),
                "message_id": message.get("id"),
            },
        )
        return Parsed((interaction,), reply)

    async def acknowledge(self, outcome: Outcome) -> None:
        reply = self._replies.pop(str(outcome.interaction.reply_ref.get("reply_key")), None)
        if reply is None:
            return
        command = bool(outcome.interaction.reply_ref.get("command"))
        if outcome.ok and outcome.message is not None and not command:
            reply.settle({"type": UPDATE_MESSAGE, "data": render(outcome.message)})
        else:
            reply.settle(_ephemeral(outcome.text))

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- the HTTP boundary ---------------------------------------------------------------------
    async def _request(
        self, method: str, path: str, body: Mapping[str, Any], what: str
    ) -> dict[str, Any]:
        try:
            response = await self.http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise ChannelError(f"{self.name} {what}: timed out", retry=True) from None
        except httpx.HTTPError as exc:
            raise ChannelError(f"{self.name} {what}: {type(exc).__name__}", retry=True) from None
        if response.status_code >= 400:
            retry = response.status_code == 429 or response.status_code >= 500
            code, detail = _detail(response)
            error = _UnknownChannel if code == 10003 else ChannelError
            raise error(f"{self.name} {what}: HTTP {response.status_code}{detail}", retry=retry)
        try:
            data = response.json()
        except ValueError:
            raise ChannelError(f"{self.name} {what}: unexpected response", retry=True) from None
        if not isinstance(data, dict):
            raise ChannelError(f"{self.name} {what}: unexpected response", retry=True)
        return data


# -- rendering ---------------------------------------------------------------------------------
def nonce(message: Message, address: str) -> str:
    """Stable for one request, stage and recipient: a retried send is not a second message.
    The dispatcher's delivery id (24 characters) when there is one."""
    if message.delivery_id:
        return message.delivery_id[:25]
    seed = f"{message.approval_id}:{message.stage.index}:{message.state}:{address}"
    return hashlib.sha256(seed.encode()).hexdigest()[:25]


def escape(text: str) -> str:
    """Discord markdown (and masked links, mentions) in agent input is shown as typed."""
    return _MARKDOWN.sub(r"\\\1", text)


def render(message: Message) -> dict[str, Any]:
    """`embeds` and `components` for a message create, edit or UPDATE_MESSAGE reply."""
    title = message.alert_title if message.state == "blocked" else message.title
    embed: dict[str, Any] = {
        "title": _clip(title, 256),
        "color": COLORS.get(message.state, GREY),
        "footer": {"text": "Clearance"},
    }
    if message.inbox_url.startswith(("http://", "https://")):
        embed["url"] = message.inbox_url
    if message.state == "blocked":
        embed["description"] = _clip(escape(message.status_line), 4096)
        return {"embeds": [embed], "components": []}
    who = escape(message.requester or message.agent or "An agent")
    lines = [f"**{who}** wants to run `{message.action.replace('`', 'ˋ')}`"]
    lines.extend(f"**Why:** {escape(reason)}" for reason in message.reasons)
    embed["description"] = _clip("\n".join(lines), 2000)
    budget = EMBED_BUDGET - len(embed["title"]) - len(embed["description"]) - 400
    fields: list[dict[str, Any]] = []
    items = list(message.params.items())
    for key, value in items[:MAX_PARAM_FIELDS]:
        name, text = _clip(escape(str(key)), 256), _clip(escape(_value(value)), 1024) or "\u200b"
        if len(name) + len(text) > budget:
            break
        budget -= len(name) + len(text)
        fields.append({"name": name, "value": text, "inline": len(text) <= 40})
    if len(fields) < len(items):
        fields.append({"name": "…", "value": f"{len(items) - len(fields)} more arguments"})
    stage = message.stage
    epoch = int(message.expires_at.timestamp())
    fields.extend(
        [
            {
                "name": "Stage",
                "value": _clip(f"{stage.index + 1} of {stage.count}: {escape(stage.name)}", 1024),
                "inline": True,
            },
            {"name": "Decide by", "value": f"<t:{epoch}:f> (<t:{epoch}:R>)", "inline": True},
            {"name": "Status", "value": _clip(escape(message.status_line), 1024)},
        ]
    )
    embed["fields"] = fields
    components: list[dict[str, Any]] = []
    if message.open and message.approve_token and message.deny_token:
        buttons: list[dict[str, Any]] = [
            {
                "type": 2,
                "style": 3,
                "label": "Approve",
                "custom_id": f"approve:{message.approve_token}",
            },
            {"type": 2, "style": 4, "label": "Deny", "custom_id": f"deny:{message.deny_token}"},
        ]
        if message.always_token:
            buttons.append(
                {
                    "type": 2,
                    "style": 2,
                    "label": "Approve always",
                    "custom_id": f"always:{message.always_token}",
                }
            )
        if "url" in embed:
            buttons.append({"type": 2, "style": 5, "label": "Open in inbox", "url": embed["url"]})
        components.append({"type": 1, "components": buttons})
    return {"embeds": [embed], "components": components}


def reason_modal(token: str) -> dict[str, Any]:
    """The MODAL reply asking why; its submission comes back with the same custom_id."""
    return {
        "type": MODAL,
        "data": {
            "custom_id": f"deny:{token}",
            "title": "Deny this request",
            "components": [
                {
                    "type": 18,  # label
                    "label": "Why are you denying it?",
                    "description": "The reason is recorded and sent back to the requester.",
                    "component": {
                        "type": 4,  # text input
                        "custom_id": REASON_INPUT,
                        "style": 2,  # paragraph
                        "min_length": 1,
                        "max_length": 1000,
                        "required": True,
                    },
                }
            ],
        },
    }


def _ephemeral(text: str) -> dict[str, Any]:
    return {
        "type": CHANNEL_MESSAGE,
        "data": {"content": _clip(text, 2000), "flags": EPHEMERAL, "allowed_mentions": NO_MENTIONS},
    }


def _reply(payload: Mapping[str, Any]) -> CallbackReply:
    return CallbackReply(body=json.dumps(payload).encode())


def _walk(components: Any) -> Iterator[dict[str, Any]]:
    """Every component of a modal submission: in action rows (legacy) or labels."""
    if not isinstance(components, list):
        return
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        yield from _walk(component.get("components"))
        inner = component.get("component")
        if isinstance(inner, dict):
            yield from _walk([inner])


def _user_id(data: Mapping[str, Any]) -> str:
    member = data.get("member") or {}
    user = (member.get("user") if isinstance(member, dict) else None) or data.get("user") or {}
    user_id = user.get("id") if isinstance(user, dict) else None
    if not user_id:
        raise CallbackRejected("Discord interaction without a user", 400)
    return str(user_id)


def _detail(response: httpx.Response) -> tuple[int | None, str]:
    """Discord's JSON error code and a short text for the message (never the request)."""
    try:
        data = response.json()
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    code, text = data.get("code"), str(data.get("message") or "")[:200]
    if isinstance(code, int):
        return code, f" ({code}: {text})"
    return None, f" ({text})" if text else ""


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _required(settings: Mapping[str, Any], key: str, name: str) -> str:
    value = settings.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # an application id written unquoted in YAML
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} channel: missing setting {key!r}")
    return value.strip()
