"""A fake of the Slack Web API (the methods Clearance uses) and of Slack's interactivity.

`FakeSlack().app` is an ASGI app serving `POST /api/<method>` the way slack.com does: a bearer
token (or a `token` form field), JSON or form-encoded arguments, and the envelope
`{"ok": true, ...}` / `{"ok": false, "error": "invalid_auth"}` with HTTP 200 (429 for rate
limits). It implements chat.postMessage (with message `metadata`), chat.update,
chat.postEphemeral, views.open, conversations.open and conversations.history (`oldest`,
`latest`, cursor paging; metadata returned only with `include_all_metadata`), keeps the
messages as they now stand, and records every call.

It also builds what Slack sends to an app's Interactivity Request URL: `block_actions` when a
button of a stored message is clicked, `view_submission` when an opened modal is submitted,
form-encoded as `payload=<json>` and signed with the signing secret (`X-Slack-Signature`,
`X-Slack-Request-Timestamp`) by the official SDK's signature code.

    fake = FakeSlack()
    with serve_in_thread(fake.app) as server:   # base_url: f"{server.url}/api/"
        ...
        body, headers = fake.signed(fake.click("U0BOB", ref, "approve"), timestamp=now)
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

BOT_USER = "U0CLEARBOT"
BOT_ID = "B0CLEARBOT"
TEAM = "T0CLEARANCE"
APP = "A0CLEARANCE"
BLOCK_TYPES = {"section", "header", "context", "actions", "divider", "input", "image"}


@dataclass
class SlackCall:
    """One Web API call as the fake received it."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int = 200
    error: str | None = None


@dataclass
class FakeSlack:
    bot_token: str = "xoxb-fake-bot-token"  # noqa: S105 - a fake's test token
    signing_secret: str = "fake-slack-signing-secret"  # noqa: S105 - a test secret
    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    views: list[dict[str, Any]] = field(default_factory=list)
    triggers: set[str] = field(default_factory=set)
    failures: list[int] = field(default_factory=list)
    clock: Callable[[], float] = time.time  # Slack's clock: message timestamps come from it
    fail_after_post: int = 0  # post the message, then answer 500 (a lost response)

    def __post_init__(self) -> None:
        self._seq = itertools.count(1)
        self.app = Starlette(
            routes=[Route("/api/{method}", self._endpoint, methods=["GET", "POST"])]
        )

    # -- test controls -------------------------------------------------------------------------
    def fail_next(self, *statuses: int) -> None:
        """Answer the next calls with these HTTP statuses (500, 503, 429…), in order."""
        self.failures.extend(statuses)

    def reset(self) -> None:
        self.calls.clear()
        self.messages.clear()
        self.ephemeral.clear()
        self.views.clear()
        self.triggers.clear()
        self.failures.clear()
        self.fail_after_post = 0

    def calls_to(self, method: str) -> list[SlackCall]:
        """The successful calls of one method."""
        return [c for c in self.calls if c.method == method and c.error is None]

    # -- the Web API ---------------------------------------------------------------------------
    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        args = await _arguments(request)
        token = _bearer(request.headers.get("authorization")) or args.pop("token", None)
        args.pop("token", None)
        call = SlackCall(method, args, token)
        self.calls.append(call)
        if self.failures:
            call.status = self.failures.pop(0)
            if call.status == 429:
                call.error = "ratelimited"
                return JSONResponse(
                    {"ok": False, "error": "ratelimited"}, 429, headers={"Retry-After": "1"}
                )
            call.error = "http_error"
            return PlainTextResponse("upstream connect error", call.status)
        handler = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
        }.get(method)
        if handler is None:
            call.error, call.status = "unknown_method", 404
            return JSONResponse({"ok": False, "error": "unknown_method"}, 404)
        if not token:
            call.error = "not_authed"
        elif token != self.bot_token:
            call.error = "invalid_auth"
        if call.error:
            return JSONResponse({"ok": False, "error": call.error})
        result = handler(args)
        if not result.get("ok"):
            call.error = str(result.get("error"))
        elif method == "chat.postMessage" and self.fail_after_post > 0:
            self.fail_after_post -= 1
            call.status, call.error = 500, "http_error"
            return PlainTextResponse("upstream request timeout", 500)
        return JSONResponse(result)

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        blocks = _json_arg(args.get("blocks"))
        text = args.get("text")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks is not None and (error := _check_blocks(blocks)):
            return {"ok": False, "error": "invalid_blocks", "errors": [error]}
        if channel[0] in "UW":  # a user id: the app's DM with that user
            channel = "D" + channel[1:]
        metadata = _json_arg(args.get("metadata"))
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            return {"ok": False, "error": "invalid_metadata_format"}
        n = next(self._seq)
        ts = f"{int(self.clock())}.{n:06d}"
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": text or "",
            "blocks": blocks or [],
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "app_id": APP,
            "team": TEAM,
            "ts": ts,
        }
        if metadata is not None:
            message["metadata"] = metadata
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users") or "")
        if not users or "," in users or users[0] not in "UW":
            return {"ok": False, "error": "user_not_found" if users else "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": "D" + users[1:]}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Newest first; `oldest`/`latest` exclusive; metadata only with include_all_metadata."""
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        try:
            oldest = float(args.get("oldest") or 0)
            latest = float(args.get("latest") or "inf")
            limit = min(max(int(args.get("limit") or 100), 1), 999)
            start = int(args.get("cursor") or 0)
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("true", "1")
        found = sorted(
            (
                m
                for (c, ts), m in self.messages.items()
                if c == channel and oldest < float(ts) < latest
            ),
            key=lambda m: float(m["ts"]),
            reverse=True,
        )
        page = found[start : start + limit]
        shown = [
            m if with_metadata else {k: v for k, v in m.items() if k != "metadata"} for m in page
        ]
        more = start + limit < len(found)
        return {
            "ok": True,
            "messages": shown,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args.get("channel") or ""), str(args.get("ts") or ""))
        message = self.messages.get(key)
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        blocks = _json_arg(args.get("blocks"))
        if blocks is not None and (error := _check_blocks(blocks)):
            return {"ok": False, "error": "invalid_blocks", "errors": [error]}
        if "text" in args:
            message["text"] = args["text"]
        if blocks is not None:
            message["blocks"] = blocks
        message["edited"] = {"user": BOT_USER, "ts": key[1]}
        return {
            "ok": True,
            "channel": key[0],
            "ts": key[1],
            "text": message["text"],
            "message": message,
        }

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        n = next(self._seq)
        ts = f"{1_790_000_000 + n}.{n:06d}"
        self.ephemeral.append({**args, "message_ts": ts})
        return {"ok": True, "message_ts": ts}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = str(args.get("trigger_id") or "")
        if not trigger:
            return {"ok": False, "error": "invalid_arguments"}
        if trigger not in self.triggers:
            return {"ok": False, "error": "invalid_trigger_id"}
        self.triggers.discard(trigger)  # a trigger opens one view
        view = _json_arg(args.get("view"))
        if not isinstance(view, dict) or view.get("type") != "modal":
            return {"ok": False, "error": "invalid_arguments"}
        title = (view.get("title") or {}).get("text") or ""
        if not title or len(title) > 24 or len(str(view.get("private_metadata") or "")) > 3000:
            return {"ok": False, "error": "invalid_arguments"}
        if error := _check_blocks(view.get("blocks") or []):
            return {"ok": False, "error": "invalid_blocks", "errors": [error]}
        n = next(self._seq)
        opened = {
            **view,
            "id": f"V{n:010d}",
            "team_id": TEAM,
            "app_id": APP,
            "bot_id": BOT_ID,
            "hash": f"{1_790_000_000 + n}.{secrets.token_hex(4)}",
            "state": {"values": {}},
            "root_view_id": f"V{n:010d}",
            "previous_view_id": None,
        }
        self.views.append(opened)
        return {"ok": True, "view": opened}

    # -- what Slack sends the app --------------------------------------------------------------
    def click(self, user: str, ref: dict[str, Any], action: str = "approve") -> dict[str, Any]:
        """The `block_actions` payload for `user` clicking `clearance_<action>` on a message."""
        channel, ts = str(ref["channel"]), str(ref["ts"])
        message = self.messages[(channel, ts)]
        action_id = f"clearance_{action}"
        button, block_id = None, None
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("action_id") == action_id:
                    button, block_id = element, block.get("block_id")
        if button is None:
            raise LookupError(f"the message has no {action_id} button (any more)")
        n = next(self._seq)
        trigger = f"{n}.{1_790_000_000}.{secrets.token_hex(16)}"
        self.triggers.add(trigger)
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
            "api_app_id": APP,
            "token": "verification-token-deprecated",
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger,
            "team": {"id": TEAM, "domain": "clearance-test"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "directmessage"},
            "message": message,
            "state": {"values": {}},
            "response_url": f"https://hooks.slack.com/actions/{TEAM}/{n}/{secrets.token_hex(8)}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": button["text"],
                    "value": button.get("value"),
                    "style": button.get("style"),
                    "action_ts": f"{1_790_000_000 + n}.{n:06d}",
                }
            ],
        }

    def submit(self, user: str, reason: str, view: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `view_submission` payload for `user` submitting an opened modal (the last one)."""
        view = view or self.views[-1]
        values: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks") or []:
            element = block.get("element") or {}
            if block.get("type") == "input" and element.get("type") == "plain_text_input":
                values[block["block_id"]] = {
                    element["action_id"]: {"type": "plain_text_input", "value": reason}
                }
        n = next(self._seq)
        return {
            "type": "view_submission",
            "team": {"id": TEAM, "domain": "clearance-test"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
            "api_app_id": APP,
            "token": "verification-token-deprecated",
            "trigger_id": f"{n}.{1_790_000_000}.{secrets.token_hex(16)}",
            "view": {**view, "state": {"values": values}},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def slash_command(
        self, user: str, text: str, *, command: str = "/approve", channel: str | None = None
    ) -> dict[str, str]:
        """The form fields Slack POSTs to a slash command's Request URL when `user` types
        `command text` (in their DM with the app, unless `channel` says otherwise)."""
        n = next(self._seq)
        return {
            "token": "verification-token-deprecated",
            "team_id": TEAM,
            "team_domain": "clearance-test",
            "channel_id": channel or "D" + user[1:],
            "channel_name": "directmessage",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": APP,
            "is_enterprise_install": "false",
            "response_url": f"https://hooks.slack.com/commands/{TEAM}/{n}/{secrets.token_hex(8)}",
            "trigger_id": f"{n}.{1_790_000_000}.{secrets.token_hex(16)}",
        }

    def signed(
        self,
        payload: dict[str, Any],
        *,
        timestamp: int,
        secret: str | None = None,
        form: bool = False,
    ) -> tuple[bytes, dict[str, str]]:
        """The HTTP body and headers Slack would POST for `payload` (an interaction payload,
        or with `form` the fields of a slash command)."""
        fields = payload if form else {"payload": json.dumps(payload)}
        body = urlencode(fields).encode()
        verifier = SignatureVerifier(secret or self.signing_secret)
        signature = verifier.generate_signature(timestamp=str(timestamp), body=body) or ""
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(timestamp),
            "x-slack-signature": signature,
            "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        return body, headers


async def _arguments(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query_params)
    raw = await request.body()
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json") and raw:
        data = json.loads(raw)
        if isinstance(data, dict):
            args.update(data)
    elif raw:
        args.update({k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()})
    return args


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _json_arg(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _check_blocks(blocks: Any) -> str | None:
    """Block Kit's limits that a message of ours could plausibly break."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return f"[{i}] unsupported block type"
        text = block.get("text") or {}
        if len(str(text.get("text") or "")) > (150 if block["type"] == "header" else 3000):
            return f"[{i}] text too long"
        fields = block.get("fields") or []
        if len(fields) > 10 or any(len(str(f.get("text") or "")) > 2000 for f in fields):
            return f"[{i}] too many or too long fields"
        if block["type"] == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > 25:
                return f"[{i}] actions needs 1-25 elements"
            for element in elements:
                action_id = str(element.get("action_id") or "")
                if element.get("type") != "button" or not action_id or len(action_id) > 255:
                    return f"[{i}] bad button"
                if action_id in seen:
                    return f"[{i}] duplicate action_id"
                seen.add(action_id)
                if len(str((element.get("text") or {}).get("text") or "")) > 75:
                    return f"[{i}] button text too long"
                if len(str(element.get("value") or "")) > 2000:
                    return f"[{i}] button value too long"
                if element.get("style") not in (None, "primary", "danger"):
                    return f"[{i}] bad button style"
        if block["type"] == "context" and len(block.get("elements") or []) > 10:
            return f"[{i}] too many context elements"
    return None
