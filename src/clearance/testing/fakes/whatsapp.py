"""A fake WhatsApp Cloud API: `POST /<version>/<phone_number_id>/messages` with the real
request shapes (text, interactive reply buttons, templates with quick-reply buttons), the
bearer token, the success envelope (`{"messaging_product": "whatsapp", "contacts": […],
"messages": [{"id": "wamid…"}]}`) and Graph error envelopes (`{"error": {"code": …}}`); and
the webhooks WhatsApp would send, signed with the app secret (`X-Hub-Signature-256`).

    fake = FakeWhatsApp(access_token="tok", app_secret="shh", phone_number_id="1055")
    with serve_in_thread(fake.app) as server:      # base_url=f"{server.url}/v21.0"
        ...
    fake.sent                                      # accepted messages, in order
    payload = fake.envelope(fake.tap("15550001", "a:tok", context=fake.sent[0].wamid))
    body, headers = fake.signed(payload)           # POST them to /hooks/whatsapp

The customer-service window is modelled like the real service: a free-form message to
someone who has not written in 24 hours is *accepted* (HTTP 200) and then fails
asynchronously; the `failed` status webhook (error 131047) waits in `fake.failed_statuses`
for the test to deliver. Users "write" through the builders (`text`, `tap`, …), which keep
`fake.last_inbound` up to date.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Template:
    """An approved template: its body variable count and its quick-reply buttons."""

    name: str
    language: str
    body_params: int
    quick_replies: tuple[str, ...] = ()


DEFAULT_TEMPLATES = (
    Template("clearance_approval", "en", 3, ("Approve", "Deny")),
    Template("clearance_notice", "en", 1),
)


@dataclass(frozen=True, slots=True)
class SentMessage:
    wamid: str
    to: str
    payload: dict[str, Any]
    at: datetime

    @property
    def type(self) -> str:
        return str(self.payload.get("type"))

    @property
    def text(self) -> str:
        """The visible text: a text body, an interactive body, or the template's variables."""
        if self.type == "text":
            return str(self.payload["text"]["body"])
        if self.type == "interactive":
            return str(self.payload["interactive"]["body"]["text"])
        params = [
            p.get("text", "")
            for c in self.payload["template"].get("components", [])
            if c.get("type") == "body"
            for p in c.get("parameters", [])
        ]
        return " | ".join(params)

    def button_ids(self) -> list[str]:
        """Reply-button ids, or quick-reply payloads of a template."""
        if self.type == "interactive":
            return [b["reply"]["id"] for b in self.payload["interactive"]["action"]["buttons"]]
        if self.type == "template":
            return [
                p["payload"]
                for c in self.payload["template"].get("components", [])
                if c.get("type") == "button"
                for p in c.get("parameters", [])
            ]
        return []

    def button(self, prefix: str) -> str:
        return next(b for b in self.button_ids() if b.startswith(prefix))


@dataclass(frozen=True, slots=True)
class Call:
    path: str
    authorization: str
    payload: Any
    status: int


class _GraphError(Exception):
    def __init__(self, status: int, code: int, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


class FakeWhatsApp:
    def __init__(
        self,
        *,
        access_token: str = "EAAG-test-token",  # noqa: S107 (a fake's test value)
        app_secret: str = "app-secret",  # noqa: S107 (a fake's test value)
        phone_number_id: str = "105500000000001",
        display_phone_number: str = "15550100000",
        waba_id: str = "102290000000001",
        templates: tuple[Template, ...] = DEFAULT_TEMPLATES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.access_token = access_token
        self.app_secret = app_secret
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.templates = {(t.name, t.language): t for t in templates}
        self.clock = clock or (lambda: datetime.now(UTC))
        self.calls: list[Call] = []
        self.sent: list[SentMessage] = []
        self.last_inbound: dict[str, datetime] = {}
        self.failed_statuses: list[dict[str, Any]] = []
        self._failures: list[tuple[int, int, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/{version}/{number}/messages", self._messages, methods=["POST"])]
        )

    # -- test controls -------------------------------------------------------------------------
    def fail_next(
        self, status: int = 500, code: int = 131000, message: str = "Something went wrong"
    ) -> None:
        """Answer the next send with this Graph error."""
        with self._lock:
            self._failures.append((status, code, message))

    def to(self, wa_id: str) -> list[SentMessage]:
        return [m for m in self.sent if m.to == wa_id]

    def by_id(self, wamid: str) -> SentMessage:
        return next(m for m in self.sent if m.wamid == wamid)

    # -- webhooks WhatsApp would send ----------------------------------------------------------
    def sign(self, body: bytes) -> str:
        digest = hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    def signed(self, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The raw body and headers of the webhook POST for `payload`."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return body, {"X-Hub-Signature-256": self.sign(body), "Content-Type": "application/json"}

    def envelope(
        self,
        *messages: dict[str, Any],
        statuses: list[dict[str, Any]] | None = None,
        name: str = "Approver",
    ) -> dict[str, Any]:
        """A `whatsapp_business_account` notification carrying `messages` / `statuses`."""
        value: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.display_phone_number,
                "phone_number_id": self.phone_number_id,
            },
        }
        if messages:
            value["contacts"] = [
                {"profile": {"name": name}, "wa_id": m["from"]} for m in messages[:1]
            ]
            value["messages"] = list(messages)
        if statuses:
            value["statuses"] = statuses
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba_id, "changes": [{"value": value, "field": "messages"}]}],
        }

    def _inbound(self, wa_id: str, kind: str, context: str | None) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self.last_inbound[wa_id] = now
        message: dict[str, Any] = {
            "from": wa_id,
            "id": _wamid(),
            "timestamp": str(int(now.timestamp())),
            "type": kind,
        }
        if context:
            message["context"] = {"from": self.display_phone_number, "id": context}
        return message

    def text(self, wa_id: str, body: str, *, context: str | None = None) -> dict[str, Any]:
        """`wa_id` writes `body` (replying to message `context`, when given)."""
        return {**self._inbound(wa_id, "text", context), "text": {"body": body}}

    def tap(self, wa_id: str, button_id: str, *, context: str | None = None) -> dict[str, Any]:
        """`wa_id` taps the reply button `button_id` of interactive message `context`."""
        title = "Button"
        if context:
            sent = self.by_id(context)
            for button in sent.payload.get("interactive", {}).get("action", {}).get("buttons", []):
                if button["reply"]["id"] == button_id:
                    title = button["reply"]["title"]
        return {
            **self._inbound(wa_id, "interactive", context),
            "interactive": {
                "type": "button_reply",
                "button_reply": {"id": button_id, "title": title},
            },
        }

    def tap_template(self, wa_id: str, payload: str, *, context: str) -> dict[str, Any]:
        """`wa_id` taps the quick-reply button with `payload` of template message `context`."""
        text = "Approve" if payload.startswith("a:") else "Deny"
        return {
            **self._inbound(wa_id, "button", context),
            "button": {"text": text, "payload": payload},
        }

    def status(self, wamid: str, recipient: str, status: str = "delivered") -> dict[str, Any]:
        return {
            "id": wamid,
            "status": status,
            "timestamp": str(int(self.clock().timestamp())),
            "recipient_id": recipient,
        }

    # -- the API -------------------------------------------------------------------------------
    async def _messages(self, request: Request) -> JSONResponse:
        raw = await request.body()
        authorization = request.headers.get("authorization", "")
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        try:
            result = self._accept(request, authorization, payload)
            response = JSONResponse(result)
        except _GraphError as exc:
            error: dict[str, Any] = {
                "message": exc.message,
                "type": "OAuthException",
                "code": exc.code,
                "fbtrace_id": "A" + secrets.token_hex(8),
            }
            if exc.details:
                error["error_data"] = {"messaging_product": "whatsapp", "details": exc.details}
            response = JSONResponse({"error": error}, status_code=exc.status)
        with self._lock:
            self.calls.append(Call(request.url.path, authorization, payload, response.status_code))
        return response

    def _accept(self, request: Request, authorization: str, payload: Any) -> dict[str, Any]:
        if authorization != f"Bearer {self.access_token}":
            raise _GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if request.path_params["number"] != self.phone_number_id:
            raise _GraphError(
                400,
                100,
                f"Unsupported post request. Object with ID '{request.path_params['number']}' "
                "does not exist, cannot be loaded due to missing permissions, or does not "
                "support this operation.",
            )
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            raise _GraphError(*failure)
        if not isinstance(payload, dict):
            raise _GraphError(400, 100, "(#100) Invalid parameter", "the body must be JSON")
        if payload.get("messaging_product") != "whatsapp":
            raise _GraphError(400, 100, "(#100) The parameter messaging_product is required.")
        to = payload.get("to")
        if not isinstance(to, str) or not re.fullmatch(r"\+?\d{6,15}", to):
            raise _GraphError(400, 100, "(#100) Invalid parameter", "to must be a phone number")
        kind = payload.get("type", "text")
        if kind == "text":
            _check_text(payload.get("text"))
        elif kind == "interactive":
            _check_interactive(payload.get("interactive"))
        elif kind == "template":
            self._check_template(payload.get("template"))
        else:
            raise _GraphError(400, 100, "(#100) Invalid parameter", f"type {kind!r} unsupported")
        wamid = _wamid()
        now = self.clock()
        wa_id = to.lstrip("+")
        with self._lock:
            self.sent.append(SentMessage(wamid, wa_id, payload, now))
            last = self.last_inbound.get(wa_id)
            if kind != "template" and (last is None or now - last >= WINDOW):
                self.failed_statuses.append(_reengagement(wamid, wa_id, now))
        result: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [{"id": wamid}],
        }
        if kind == "template":
            result["messages"][0]["message_status"] = "accepted"
        return result

    def _check_template(self, template: Any) -> None:
        if not isinstance(template, dict):
            raise _GraphError(400, 100, "(#100) The parameter template is required.")
        language = template.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        known = self.templates.get((str(template.get("name")), str(code)))
        if known is None:
            raise _GraphError(
                404,
                132001,
                "(#132001) Template name does not exist in the translation",
                f"template name ({template.get('name')}) does not exist in {code}",
            )
        body_params: list[Any] = []
        buttons: dict[int, str] = {}
        for component in template.get("components") or []:
            if component.get("type") == "body":
                body_params = list(component.get("parameters") or [])
            elif component.get("type") == "button":
                if component.get("sub_type") != "quick_reply":
                    raise _GraphError(400, 131009, "(#131009) Parameter value is not valid")
                index = component.get("index")
                if not isinstance(index, str) or not index.isdigit():
                    raise _GraphError(
                        400, 100, "(#100) Invalid parameter", "button index must be a string"
                    )
                if int(index) >= len(known.quick_replies):
                    raise _GraphError(
                        400, 131008, "(#131008) Required parameter is missing", "no such button"
                    )
                params = component.get("parameters") or []
                if len(params) != 1 or params[0].get("type") != "payload":
                    raise _GraphError(400, 131009, "(#131009) Parameter value is not valid")
                payload = params[0].get("payload")
                if not isinstance(payload, str) or not payload or len(payload) > 256:
                    raise _GraphError(400, 131009, "(#131009) Parameter value is not valid")
                buttons[int(index)] = payload
        if len(body_params) != known.body_params:
            raise _GraphError(
                400,
                132000,
                "(#132000) Number of parameters does not match the expected number of params",
                f"body: number of localizable_params ({len(body_params)}) does not match the "
                f"expected number of params ({known.body_params})",
            )
        for param in body_params:
            text = param.get("text") if param.get("type") == "text" else None
            if not isinstance(text, str) or not text.strip():
                raise _GraphError(400, 131008, "(#131008) Required parameter is missing")
            if re.search(r"[\n\t]| {5,}", text):
                raise _GraphError(
                    400,
                    100,
                    "(#100) Invalid parameter",
                    "Param text cannot have new-line/tab characters or more than 4 "
                    "consecutive spaces",
                )
            if len(text) > 1024:
                raise _GraphError(400, 132005, "(#132005) Translated text too long")


def _check_text(text: Any) -> None:
    body = text.get("body") if isinstance(text, dict) else None
    if not isinstance(body, str) or not body.strip():
        raise _GraphError(400, 100, "(#100) The parameter text['body'] is required.")
    if len(body) > 4096:
        raise _GraphError(
            400, 100, "(#100) Param text['body'] must be at most 4096 characters long."
        )


def _check_interactive(interactive: Any) -> None:
    def invalid(details: str) -> _GraphError:
        return _GraphError(400, 131009, "(#131009) Parameter value is not valid", details)

    if not isinstance(interactive, dict) or interactive.get("type") != "button":
        raise invalid("interactive.type must be button in this fake")
    body = (interactive.get("body") or {}).get("text")
    if not isinstance(body, str) or not body.strip() or len(body) > 1024:
        raise invalid("body.text is required, at most 1024 characters")
    for part in ("header", "footer"):
        value = interactive.get(part)
        if value is not None:
            text = value.get("text")
            if part == "header" and value.get("type") != "text":
                raise invalid("header.type must be text in this fake")
            if not isinstance(text, str) or not text or len(text) > 60:
                raise invalid(f"{part}.text is at most 60 characters")
    buttons = (interactive.get("action") or {}).get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise invalid("action.buttons must hold 1 to 3 buttons")
    ids: set[str] = set()
    titles: set[str] = set()
    for button in buttons:
        reply = button.get("reply") if button.get("type") == "reply" else None
        if not isinstance(reply, dict):
            raise invalid("buttons must be of type reply")
        button_id, title = reply.get("id"), reply.get("title")
        if not isinstance(button_id, str) or not 1 <= len(button_id) <= 256:
            raise invalid("button id is 1 to 256 characters")
        if not isinstance(title, str) or not 1 <= len(title) <= 20:
            raise invalid("button title is 1 to 20 characters")
        if button_id in ids or title in titles:
            raise invalid("button ids and titles must be unique")
        ids.add(button_id)
        titles.add(title)


def _reengagement(wamid: str, wa_id: str, now: datetime) -> dict[str, Any]:
    return {
        "id": wamid,
        "status": "failed",
        "timestamp": str(int(now.timestamp())),
        "recipient_id": wa_id,
        "errors": [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {
                    "details": "Message failed to send because more than 24 hours have passed "
                    "since the customer last replied to this number."
                },
            }
        ],
    }


def _wamid() -> str:
    return "wamid." + base64.b64encode(secrets.token_bytes(30)).decode().rstrip("=")
