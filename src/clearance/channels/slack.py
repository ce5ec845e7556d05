"""Slack: a Block Kit message with Approve / Deny buttons; Deny opens a modal for the reason.

Settings: `{bot_token, signing_secret, base_url (default https://slack.com/api/), channel
(optional: post every request to this channel instead of the approver's DM), timeout
(seconds, default 10)}`.

- `send`: `chat.postMessage` to the approver's user id (Slack delivers it as a DM from the
  app) or to the configured channel (mentioning the approver). The buttons carry only the
  opaque token; `ref` is the `{channel, ts}` Slack answered with, for `chat.update`.
- `/hooks/slack` (the app's Interactivity Request URL): `X-Slack-Signature` is checked over
  the raw body (v0 HMAC-SHA256 of `v0:{timestamp}:{body}`, 5-minute window, constant-time
  compare) before the form-encoded `payload=` is parsed. `block_actions` with Approve is a
  vote; with Deny it opens a modal (`views.open`, the token in `private_metadata`) whose
  `view_submission` is the vote with its reason — Slack buttons cannot carry text.
- `acknowledge`: the clicked DM is refreshed at once (`chat.update`); a refused click gets a
  `chat.postEphemeral` only the clicker sees.
- The `/approve` slash command (Request URL: the same `/hooks/slack`; `/deny` too): the
  form-encoded command, after the same signature check, is the text command of `textcommand`
  sent by the verified `user_id` (event id: its `trigger_id`); the answer to its request is
  an ephemeral message saying what happened.
- No duplicate after a crash: each request carries message `metadata` (`event_type`
  `clearance_approval_request`, the dispatcher's `delivery_id` in `event_payload`). When an
  earlier attempt may have reached Slack, `find_sent` opens the DM (`conversations.open`) and
  reads `conversations.history` since that attempt with `include_all_metadata`; a message
  with this delivery id is recorded instead of posting a second one (scopes `im:write`,
  `im:history`; `channels:history` with `channel`).

The official SDK's `WebClient` is used from a worker thread: `AsyncWebClient` needs aiohttp,
which Clearance does not depend on. Retries are the dispatcher's, so the SDK retries nothing.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import http.client
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

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

log = structlog.get_logger("clearance.channels.slack")

DEFAULT_BASE_URL = "https://slack.com/api/"
WINDOW_S = 5 * 60
APPROVE = "clearance_approve"
DENY = "clearance_deny"
ALWAYS = "clearance_always"  # approve, and grant the rule's scope (clearance.grants)
OPEN = "clearance_open"
ACTIONS_BLOCK = "clearance_actions"
DENY_VIEW = "clearance_deny_reason"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"
MAX_PARAM_FIELDS = 30  # three sections of ten fields
METADATA_EVENT = "clearance_approval_request"
HISTORY_MARGIN = timedelta(minutes=5)  # our clock and Slack's may disagree a little
HISTORY_PAGES = 5
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class SlackChannel:
    """Approval requests as Slack messages, decided with buttons (and a modal for reasons)."""

    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "slack"))
        self._token = _required(settings, "bot_token", self.name)
        self._secret = _required(settings, "signing_secret", self.name)
        base_url = str(settings.get("base_url") or DEFAULT_BASE_URL)
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{self.name} channel: 'base_url' must be an http(s) URL")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        channel = settings.get("channel")
        self.channel: str | None = str(channel) if channel else None
        try:
            timeout = int(settings.get("timeout", 10))
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name} channel: 'timeout' must be a number of seconds"
            ) from None
        self.public_url = public_url
        self.client = WebClient(
            token=self._token, base_url=self.base_url, timeout=timeout, retry_handlers=[]
        )

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        mention = address if self.channel else None
        extra: dict[str, Any] = {}
        if message.delivery_id:  # lets `find_sent` recognise this message after a crash
            extra["metadata"] = {
                "event_type": METADATA_EVENT,
                "event_payload": {
                    "delivery_id": message.delivery_id,
                    "approval_id": message.approval_id,
                },
            }
        data = await self._call(
            "chat.postMessage",
            channel=self.channel or address,
            text=fallback_text(message),
            blocks=render_blocks(message, mention=mention),
            unfurl_links=False,
            unfurl_media=False,
            **extra,
        )
        ref = {"channel": str(data["channel"]), "ts": str(data["ts"])}
        return Sent(ref, {"ok": True, **ref})

    async def find_sent(self, message: Message, address: str, since: datetime) -> Sent | None:
        """The message an earlier attempt of this delivery posted, found by its metadata in
        the conversation's history since `since` (less a margin for clock skew), or None.
        Needs the `im:history` and `im:write` scopes (`channels:history` with `channel`)."""
        if not message.delivery_id:
            return None
        channel = self.channel
        if channel is None:
            opened = await self._call("conversations.open", form=True, users=address)
            channel = str((opened.get("channel") or {}).get("id") or "")
            if not channel:
                raise ChannelError(f"{self.name} conversations.open: no channel", retry=True)
        oldest = f"{(since - HISTORY_MARGIN).timestamp():.6f}"
        cursor = ""
        for _ in range(HISTORY_PAGES):
            args: dict[str, Any] = {
                "channel": channel,
                "oldest": oldest,
                "include_all_metadata": "true",
                "limit": 200,
            }
            if cursor:
                args["cursor"] = cursor
            data = await self._call("conversations.history", form=True, **args)
            for item in data.get("messages") or []:
                metadata = item.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if (
                    metadata.get("event_type") == METADATA_EVENT
                    and payload.get("delivery_id") == message.delivery_id
                    and item.get("ts")
                ):
                    ref = {"channel": channel, "ts": str(item["ts"])}
                    return Sent(ref, {"ok": True, "found": True, **ref})
            cursor = str((data.get("response_metadata") or {}).get("next_cursor") or "")
            if not data.get("has_more") or not cursor:
                return None
        return None

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        channel, ts = ref.get("channel"), ref.get("ts")
        if not channel or not ts:
            raise ChannelError(f"{self.name}: message reference without channel/ts", retry=False)
        mention = self._mention(message)
        await self._call(
            "chat.update",
            channel=str(channel),
            ts=str(ts),
            text=fallback_text(message),
            blocks=render_blocks(message, mention=mention),
        )

    def _mention(self, message: Message) -> str | None:
        if self.channel and message.recipient is not None:
            return message.recipient.channel_id(self.name)
        return None

    # -- callbacks -----------------------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        self._verify(request)  # nothing is parsed before this
        form = _form(request.body)
        if "payload" not in form and "command" in form:
            return self._slash_command(form)
        payload = _payload(form)
        kind = payload.get("type")
        if kind == "block_actions":
            return await self._block_actions(payload)
        if kind == "view_submission":
            return self._view_submission(payload)
        return Parsed()  # view_closed, shortcuts…: nothing to decide

    def _verify(self, request: RawRequest) -> None:
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not timestamp or not signature:
            raise CallbackRejected("missing Slack signature headers")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise CallbackRejected("malformed Slack request timestamp") from None
        if abs(request.received_at.timestamp() - sent_at) > WINDOW_S:
            raise CallbackRejected("stale Slack request timestamp (older than 5 minutes)")
        expected = sign(self._secret, timestamp, request.body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise CallbackRejected("bad Slack signature")

    async def _block_actions(self, payload: dict[str, Any]) -> Parsed:
        user_id = _user_id(payload)
        trigger_id = str(payload.get("trigger_id") or "")
        container = payload.get("container") or {}
        channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (payload.get("message") or {}).get("ts")
        ref = {"channel": channel, "ts": ts, "user": user_id}
        interactions: list[Interaction] = []
        for action in payload.get("actions") or []:
            action_id = action.get("action_id")
            token = action.get("value")
            if action_id not in (APPROVE, DENY, ALWAYS) or not isinstance(token, str) or not token:
                continue  # the inbox link button also reports its clicks: nothing to do
            if not trigger_id:
                raise CallbackRejected("Slack block_actions without trigger_id", 400)
            if action_id in (APPROVE, ALWAYS):
                interactions.append(
                    Interaction(
                        event_id=f"{trigger_id}:{action.get('action_ts', '')}",
                        user_id=user_id,
                        token=token,
                        decision="approve" if action_id == APPROVE else "always",
                        reply_ref=ref,
                    )
                )
            else:
                await self._ask_reason(trigger_id, token, ref, payload.get("message") or {})
        return Parsed(tuple(interactions))

    async def _ask_reason(
        self, trigger_id: str, token: str, ref: dict[str, Any], original: Mapping[str, Any]
    ) -> None:
        """Deny needs a reason: open a modal; its submission carries the token back."""
        metadata = json.dumps({"token": token, "channel": ref["channel"], "ts": ref["ts"]})
        try:
            await self._call(
                "views.open", trigger_id=trigger_id, view=reason_view(metadata, original)
            )
        except ChannelError as exc:  # the click changes nothing; they can click again
            log.warning("slack_views_open_failed", channel=self.name, error=str(exc))

    def _view_submission(self, payload: dict[str, Any]) -> Parsed:
        view = payload.get("view") or {}
        if view.get("callback_id") != DENY_VIEW:
            return Parsed()
        try:
            metadata = json.loads(view.get("private_metadata") or "")
            token = str(metadata["token"])
        except (ValueError, KeyError, TypeError):
            raise CallbackRejected("Slack view_submission without a token", 400) from None
        values = (view.get("state") or {}).get("values") or {}
        reason = ((values.get(REASON_BLOCK) or {}).get(REASON_ACTION) or {}).get("value")
        user_id = _user_id(payload)
        event = payload.get("trigger_id") or view.get("hash") or ""
        interaction = Interaction(
            event_id=f"{event}:{view.get('id', '')}",
            user_id=user_id,
            token=token,
            decision="deny",
            comment=str(reason) if reason else None,
            reply_ref={
                "channel": metadata.get("channel"),
                "ts": metadata.get("ts"),
                "user": user_id,
            },
        )
        return Parsed((interaction,))  # an empty 200 closes the modal

    def _slash_command(self, form: Mapping[str, str]) -> Parsed:
        """`/approve <id> [approve|deny] [reason]` (or `/deny <id> <reason>`) typed in Slack:
        the sender is Slack's verified `user_id`; the event id is the command's trigger."""
        user_id, trigger_id = form.get("user_id", ""), form.get("trigger_id", "")
        if not user_id or not trigger_id:
            raise CallbackRejected("Slack slash command without user_id or trigger_id", 400)
        try:
            command = textcommand.parse(f"{form.get('command', '')} {form.get('text', '')}")
        except textcommand.CommandError as exc:
            return Parsed(reply=_command_reply(str(exc)))
        if command is None:
            return Parsed(reply=_command_reply(textcommand.USAGE))
        interaction = command.interaction(
            event_id=f"command:{trigger_id}",
            user_id=user_id,
            reply_ref={"command": True, "channel": form.get("channel_id"), "user": user_id},
        )
        return Parsed((interaction,), _command_reply("Working on it…"))

    async def acknowledge(self, outcome: Outcome) -> CallbackReply | None:
        ref = outcome.interaction.reply_ref
        if ref.get("command"):  # a slash command: the answer to its request says it all
            return _command_reply(outcome.text)
        channel, ts, user = ref.get("channel"), ref.get("ts"), ref.get("user")
        if outcome.ok and outcome.message is not None and channel and ts and not self.channel:
            # The clicker's own DM: show the new state (and drop their buttons) right away.
            await self._call(
                "chat.update",
                channel=str(channel),
                ts=str(ts),
                text=fallback_text(outcome.message),
                blocks=render_blocks(outcome.message),
            )
            return None
        if channel and user:
            await self._call(
                "chat.postEphemeral", channel=str(channel), user=str(user), text=outcome.text
            )
        return None

    async def aclose(self) -> None:
        return None

    # -- the SDK boundary ----------------------------------------------------------------------
    async def _call(self, method: str, *, form: bool = False, **args: Any) -> dict[str, Any]:
        """One Web API call through the SDK, its errors translated into ChannelError. `form`:
        the arguments form-encoded (the read methods do not take JSON bodies)."""
        call = functools.partial(
            self.client.api_call, method, data=args if form else None, json=None if form else args
        )
        try:
            response = await asyncio.to_thread(call)
        except SlackApiError as exc:
            status = int(exc.response.status_code)
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            retry = status == 429 or status >= 500 or error in RETRYABLE_ERRORS
            detail = str(error) if error and status < 500 else f"HTTP {status}"
            raise ChannelError(
                f"{self.name} {method}: {detail}", retry=retry, uncertain=status >= 500
            ) from None
        except SlackClientError as exc:
            raise ChannelError(f"{self.name} {method}: {type(exc).__name__}", retry=False) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, refused, reset
            raise ChannelError(
                f"{self.name} {method}: {type(exc).__name__}", retry=True, uncertain=True
            ) from None
        data = response.data
        if not isinstance(data, dict):
            raise ChannelError(f"{self.name} {method}: unexpected response", retry=True)
        return data


# -- rendering ---------------------------------------------------------------------------------
def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature over the raw body."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def escape(text: str) -> str:
    """Slack's three control characters; keeps `<!channel>` & co. out of agent input."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fallback_text(message: Message) -> str:
    """The notification text (and what screen readers and old clients show)."""
    return _clip(f"{_title(message)} — {message.status_line}", 3000)


def render_blocks(message: Message, *, mention: str | None = None) -> list[dict[str, Any]]:
    """The Block Kit layout: what, with which arguments, why, stage, deadline, and buttons."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(_title(message), 150)}}
    ]
    if mention:
        blocks.append(_context(f"For <@{escape(mention)}>"))
    if message.state == "blocked":
        blocks.append(_section(escape(message.status_line)))
        blocks.append(_context(f"<{message.inbox_url}|Open the web inbox>"))
        return blocks
    who = escape(message.requester or message.agent or "An agent")
    blocks.append(_section(f"*{who}* wants to run `{escape(message.action)}`"))
    items = list(message.params.items())
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{escape(str(k))}*\n{escape(_value(v))}", 2000)}
        for k, v in items[:MAX_PARAM_FIELDS]
    ]
    for start in range(0, len(fields), 10):
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    if len(items) > MAX_PARAM_FIELDS:
        blocks.append(_context(f"… and {len(items) - MAX_PARAM_FIELDS} more arguments"))
    if message.reasons:
        why = "\n".join(f"• {escape(r)}" for r in message.reasons)
        blocks.append(_section(f"*Why*\n{why}"))
    stage = message.stage
    deadline = message.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    epoch = int(message.expires_at.timestamp())
    blocks.append(
        _context(
            f"Stage {stage.index + 1} of {stage.count}: {escape(stage.name)}",
            f"Decide by <!date^{epoch}^{{date_short_pretty}} {{time}}|{deadline}>",
        )
    )
    blocks.append(_section(f"*Status:* {escape(message.status_line)}"))
    if message.open and message.approve_token and message.deny_token:
        blocks.append(
            {
                "type": "actions",
                "block_id": ACTIONS_BLOCK,
                "elements": [
                    _button("Approve", APPROVE, value=message.approve_token, style="primary"),
                    _button("Deny", DENY, value=message.deny_token, style="danger"),
                    *(
                        [_button("Approve always", ALWAYS, value=message.always_token)]
                        if message.always_token
                        else []
                    ),
                    _button("Open in inbox", OPEN, url=message.inbox_url),
                ],
            }
        )
    else:
        blocks.append(_context(f"<{message.inbox_url}|Open in the web inbox>"))
    return blocks


def reason_view(metadata: str, original: Mapping[str, Any]) -> dict[str, Any]:
    """The modal that asks why; `private_metadata` brings the token back on submit."""
    about = str(original.get("text") or "").split(" — ")[0]
    blocks: list[dict[str, Any]] = []
    if about:
        blocks.append(_section(escape(_clip(about, 2900))))
    blocks.append(
        {
            "type": "input",
            "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": "Why are you denying it?"},
            "hint": {"type": "plain_text", "text": "The reason is recorded and sent back."},
            "element": {
                "type": "plain_text_input",
                "action_id": REASON_ACTION,
                "multiline": True,
                "min_length": 1,
                "max_length": 1000,
            },
        }
    )
    return {
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def _title(message: Message) -> str:
    return message.alert_title if message.state == "blocked" else message.title


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}}


def _context(*texts: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(t, 3000)} for t in texts],
    }


def _button(
    text: str, action_id: str, *, value: str | None = None, url: str | None = None, style: str = ""
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
    }
    if value is not None:
        button["value"] = value
    if url is not None:
        button["url"] = url
    if style:
        button["style"] = style
    return button


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _form(body: bytes) -> dict[str, str]:
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise CallbackRejected("malformed Slack request body", 400) from None
    return {key: values[-1] for key, values in form.items()}


def _command_reply(text: str) -> CallbackReply:
    """The answer to a slash command's request: a message only the sender sees."""
    body = {"response_type": "ephemeral", "text": _clip(text, 3000)}
    return CallbackReply(body=json.dumps(body).encode())


def _payload(form: Mapping[str, str]) -> dict[str, Any]:
    try:
        payload = json.loads(form["payload"])
    except (KeyError, ValueError):
        raise CallbackRejected("malformed Slack interaction payload", 400) from None
    if not isinstance(payload, dict):
        raise CallbackRejected("malformed Slack interaction payload", 400)
    return payload


def _user_id(payload: Mapping[str, Any]) -> str:
    user = payload.get("user") or {}
    user_id = user.get("id") if isinstance(user, dict) else None
    if not user_id:
        raise CallbackRejected("Slack interaction without a user", 400)
    return str(user_id)


def _required(settings: Mapping[str, Any], key: str, name: str) -> str:
    value = settings.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} channel: missing setting {key!r}")
    return value
