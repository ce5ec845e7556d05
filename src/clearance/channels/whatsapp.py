"""WhatsApp (Cloud API): approval requests with Approve / Deny reply buttons.

Settings (`channels: whatsapp: {…}`):

- `access_token` (required): a system-user token with `whatsapp_business_messaging`.
- `app_secret` (required): the Meta app's secret; webhooks are signed with it.
- `verify_token` (required): the string you type into the webhook setup; Meta's GET
  handshake must echo it back.
- `phone_number_id` (required): the business number that sends.
- `base_url`: default `https://graph.facebook.com/v21.0`.
- `template_name` (default `clearance_approval`) and `template_language` (default `en`): the
  approved template used outside the 24-hour window. Create it as a UTILITY template with a
  body of three variables and two quick-reply buttons, in this order:
  body `Approval needed: {{1}}. {{2}} Request {{3}}.`, buttons `Approve`, `Deny`.
  ({{1}}: who wants to run what; {{2}}: arguments, reasons, stage and deadline on one line;
  {{3}}: the request id. Template variables cannot hold line breaks, so they are flattened.)
- `notice_template_name` (optional): a template with one body variable ({{1}}), used for
  status updates and blocked-action alerts outside the window. Without it, an alert outside
  the window fails (so the dispatcher falls back to the person's next channel) and a status
  update outside the window is skipped.

The directory maps a person to their WhatsApp id (`channels: {whatsapp: "15551234567"}`).

The 24-hour customer-service window: free-form messages (interactive buttons, text) reach a
user only within 24 hours of the last message *they* sent us; after that only templates do.
The channel remembers, in memory, when each user last wrote (from the `timestamp` of every
inbound message in the webhooks it verified, so also button taps) and sends interactive
buttons when that was less than 23h50m ago, a template otherwise; when Meta reports error
131047 ("re-engagement message": the window was closed after all), at send time or later in a
`failed` status webhook, it forgets the window and sends the request again as a template. The
memory is per process and lost on restart: then everyone starts outside the window and gets
the template until they write again, which is always deliverable.

Callbacks: GET /hooks/whatsapp is the subscription handshake (the challenge is echoed only
for the right verify token, 403 otherwise); POSTs are verified against `X-Hub-Signature-256`
(HMAC-SHA256 of the raw body with the app secret, constant time) before anything is parsed.
Reply buttons (`interactive.button_reply.id`) and template quick replies (`button.payload`)
carry `a:<token>` / `d:<token>`; the user is `from` (the wa_id), the event id the message id.
Deny needs a reason: the Deny button records nothing and asks for it; the user's next text
(within 15 minutes, or any reply to that question) is the reason, as is `/deny <id> <reason>`.
WhatsApp cannot edit a message, so `update` sends the new status as a follow-up message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from . import textcommand
from .base import (
    RESENT_NOTE,
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

log = structlog.get_logger("clearance.channels.whatsapp")

DEFAULT_BASE_URL = "https://graph.facebook.com/v21.0"
SIGNATURE_HEADER = "x-hub-signature-256"
WINDOW = timedelta(hours=24)
WINDOW_MARGIN = timedelta(minutes=10)  # a send takes time; do not race the window's end
REASON_WAIT = timedelta(minutes=15)
MAX_AGE = timedelta(days=7)  # Meta retries an unacknowledged webhook for up to 7 days
BODY_LIMIT = 1024  # interactive body text
TEXT_LIMIT = 4096
HEADER_LIMIT = 60
TEMPLATE_PARAM_LIMIT = 600
REENGAGEMENT = 131047
# Graph / WhatsApp error codes worth trying again: throttling and temporary outages.
RETRY_CODES = frozenset({1, 2, 4, 17, 32, 613, 80007, 130429, 131000, 131016, 131048, 131056})
_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class _Sent:
    message: Message
    to: str


class _WindowClosed(Exception):
    pass


class WhatsAppChannel:
    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "whatsapp"))
        self.public_url = public_url.rstrip("/")
        required = ("access_token", "app_secret", "verify_token", "phone_number_id")
        values: dict[str, str] = {}
        for key in required:
            value = settings.get(key)
            if value is None or not str(value).strip():
                raise ValueError(f"channel {self.name!r}: {key} is required")
            values[key] = str(value).strip()
        self._access_token = values["access_token"]
        self._app_secret = values["app_secret"].encode()
        self._verify_token = values["verify_token"]
        self.phone_number_id = values["phone_number_id"]
        if not self.phone_number_id.isdigit():
            raise ValueError(f"channel {self.name!r}: phone_number_id must be numeric")
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.template_name = str(settings.get("template_name") or "clearance_approval")
        self.template_language = str(settings.get("template_language") or "en")
        notice = settings.get("notice_template_name")
        self.notice_template: str | None = str(notice) if notice else None
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self._access_token}"},
            timeout=httpx.Timeout(10.0, connect=5.0),
        )
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.last_inbound: dict[str, datetime] = {}  # wa_id → when they last wrote to us
        self._sent: OrderedDict[str, _Sent] = OrderedDict()  # wamid → what we sent
        self._prompts: OrderedDict[str, str] = OrderedDict()  # deny-question wamid → request
        self._awaiting: dict[str, tuple[str, datetime]] = {}  # wa_id → (request, asked at)
        self._last_status: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._noticed: OrderedDict[str, None] = OrderedDict()

    # -- the customer-service window -----------------------------------------------------------
    def window_open(self, wa_id: str) -> bool:
        last = self.last_inbound.get(wa_id)
        return last is not None and self.clock() - last < WINDOW - WINDOW_MARGIN

    def _saw_inbound(self, wa_id: str, sent_at: datetime) -> None:
        if sent_at > self.last_inbound.get(wa_id, datetime.min.replace(tzinfo=UTC)):
            self.last_inbound[wa_id] = sent_at

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        to = _wa_id(address)
        if message.open:
            payload = (
                self._interactive(message, to)
                if self.window_open(to)
                else self._template(message, to)
            )
        elif self.window_open(to):
            payload = self._text(to, _alert_text(message))
        elif self.notice_template:
            payload = self._notice(to, _alert_text(message))
        else:
            raise ChannelError(
                f"whatsapp: {to} has not written in 24 hours and no notice_template_name is "
                "set, so this notice cannot be delivered",
                retry=False,
            )
        try:
            response = await self._post(payload, "send")
        except _WindowClosed:
            self.last_inbound.pop(to, None)
            if not message.open and not self.notice_template:
                raise ChannelError("whatsapp: outside the 24-hour window", retry=False) from None
            fallback = (
                self._template(message, to)
                if message.open
                else self._notice(to, _alert_text(message))
            )
            response = await self._post(fallback, "send")
        wamid = _message_id(response)
        self._remember(self._sent, wamid, _Sent(message, to))
        return Sent({"to": to, "message_id": wamid}, {"message_id": wamid})

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        """A follow-up message with the new status (messages cannot be edited)."""
        to = str(ref.get("to", ""))
        if not to or message.open:
            return  # still waiting for this person: the original buttons still work
        key = (to, message.approval_id)
        if self._last_status.get(key) == message.status_line:
            return  # already told (the acknowledgement of their own click, or an update)
        text = f"Update on request {message.approval_id} ({message.action}): {message.status_line}"
        if self.window_open(to):
            payload = self._text(to, text, context=str(ref.get("message_id") or "") or None)
        elif self.notice_template:
            payload = self._notice(to, text)
        else:
            log.info("whatsapp_update_skipped", channel=self.name, reason="outside the window")
            return
        try:
            await self._post(payload, "update")
        except _WindowClosed:
            self.last_inbound.pop(to, None)
            return
        self._remember(self._last_status, key, message.status_line)

    def _interactive(self, message: Message, to: str) -> dict[str, Any]:
        footer = f"Request {message.approval_id}"
        tail = ["", textcommand.clip(message.status_line, 300), message.inbox_url]
        budget = BODY_LIMIT - sum(len(t) + 1 for t in tail)
        lines = textcommand.fit_lines(message.summary_lines(), budget)
        body = "\n".join([*lines, *tail]).strip()
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "interactive",
            "interactive": {
                "type": "button",
                "header": {"type": "text", "text": textcommand.clip(message.title, HEADER_LIMIT)},
                "body": {"text": textcommand.clip(body, BODY_LIMIT)},
                "footer": {"text": textcommand.clip(footer, HEADER_LIMIT)},
                "action": {
                    "buttons": [
                        _reply_button(f"a:{message.approve_token}", "Approve"),
                        _reply_button(f"d:{message.deny_token}", "Deny"),
                        *(  # a standing grant, where the rule allows it (3 buttons at most)
                            [_reply_button(f"A:{message.always_token}", "Approve always")]
                            if message.always_token
                            else []
                        ),
                    ]
                },
            },
        }

    def _template(self, message: Message, to: str) -> dict[str, Any]:
        lines = message.summary_lines()
        details = " · ".join(line.strip() for line in lines[1:])
        if message.status_line.endswith(RESENT_NOTE):  # a template shows no status otherwise
            details += " ·" + RESENT_NOTE
        params = [lines[0], details, message.approval_id]
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": {
                "name": self.template_name,
                "language": {"code": self.template_language},
                "components": [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": _flat(p)} for p in params],
                    },
                    _quick_reply(0, f"a:{message.approve_token}"),
                    _quick_reply(1, f"d:{message.deny_token}"),
                ],
            },
        }

    def _notice(self, to: str, text: str) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": {
                "name": self.notice_template,
                "language": {"code": self.template_language},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": _flat(text)}]}
                ],
            },
        }

    @staticmethod
    def _text(to: str, text: str, *, context: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": textcommand.clip(text, TEXT_LIMIT)},
        }
        if context:
            payload["context"] = {"message_id": context}
        return payload

    async def _post(self, payload: dict[str, Any], what: str) -> dict[str, Any]:
        """POST /<phone_number_id>/messages; errors become ChannelError (or _WindowClosed)."""
        try:
            response = await self._http.post(f"/{self.phone_number_id}/messages", json=payload)
        except httpx.TimeoutException:
            raise ChannelError(f"whatsapp {what}: timed out", retry=True, uncertain=True) from None
        except httpx.HTTPError as exc:
            raise ChannelError(f"whatsapp {what}: {type(exc).__name__}", retry=True) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        if code == REENGAGEMENT:
            raise _WindowClosed()
        retry = response.status_code >= 500 or response.status_code == 429 or code in RETRY_CODES
        detail = str(error.get("message") or response.reason_phrase).replace(
            self._access_token, "<access token>"
        )
        raise ChannelError(
            f"whatsapp {what} failed: HTTP {response.status_code}, code {code}: {detail[:300]}",
            retry=retry,
        )

    async def _say(self, to: str, text: str, context: str | None = None) -> str | None:
        """A text message, best effort (the sender just wrote to us: the window is open)."""
        try:
            response = await self._post(self._text(to, text, context=context), "reply")
            return _message_id(response)
        except (ChannelError, _WindowClosed) as exc:
            log.warning("whatsapp_reply_failed", channel=self.name, error=str(exc))
            return None

    # -- callbacks -----------------------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        if request.method == "GET":
            return self._handshake(request)
        if request.method != "POST":
            raise CallbackRejected("method not allowed", 405)
        header = request.headers.get(SIGNATURE_HEADER, "")
        expected = "sha256=" + hmac.new(self._app_secret, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(header.encode(), expected.encode()):
            raise CallbackRejected("bad or missing X-Hub-Signature-256")
        try:
            payload = json.loads(request.body)
        except ValueError:
            raise CallbackRejected("malformed webhook: not JSON", 400) from None
        if not isinstance(payload, dict):
            raise CallbackRejected("malformed webhook", 400)
        interactions: list[Interaction] = []
        for value in self._values(payload):
            for status in _list(value.get("statuses")):
                await self._status(status)
            for message in _list(value.get("messages")):
                interaction = await self._message(message, request.received_at)
                if interaction is not None:
                    interactions.append(interaction)
        return Parsed(tuple(interactions))

    def _handshake(self, request: RawRequest) -> Parsed:
        mode = request.query.get("hub.mode", "")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        if mode != "subscribe" or not hmac.compare_digest(
            token.encode(), self._verify_token.encode()
        ):
            raise CallbackRejected("webhook verification failed", 403)
        return Parsed(reply=CallbackReply(200, challenge.encode(), "text/plain"))

    def _values(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The `value`s of the `messages` changes for our phone number."""
        out: list[dict[str, Any]] = []
        for entry in _list(payload.get("entry")):
            for change in _list(entry.get("changes")):
                value = change.get("value")
                if change.get("field") != "messages" or not isinstance(value, dict):
                    continue
                metadata = value.get("metadata")
                number = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
                if number is not None and str(number) != self.phone_number_id:
                    continue  # another number of the same app
                out.append(value)
        return out

    async def _status(self, status: dict[str, Any]) -> None:
        """A `failed` delivery for a closed window: resend the request as a template."""
        if status.get("status") != "failed":
            return
        codes = {e.get("code") for e in _list(status.get("errors"))}
        wamid = str(status.get("id", ""))
        if REENGAGEMENT not in codes:
            log.warning(
                "whatsapp_delivery_failed", channel=self.name, codes=sorted(map(str, codes))
            )
            return
        sent = self._sent.pop(wamid, None)
        recipient = str(status.get("recipient_id") or (sent.to if sent else ""))
        self.last_inbound.pop(recipient, None)
        if sent is None or not sent.message.open:
            return
        try:
            response = await self._post(self._template(sent.message, sent.to), "resend")
        except (ChannelError, _WindowClosed) as exc:
            log.warning("whatsapp_resend_failed", channel=self.name, error=str(exc))
            return
        self._remember(self._sent, _message_id(response), sent)

    async def _message(self, message: dict[str, Any], received_at: datetime) -> Interaction | None:
        sender = message.get("from")
        event_id = message.get("id")
        if not isinstance(sender, str) or not isinstance(event_id, str) or not event_id:
            return None
        sent_at = _timestamp(message.get("timestamp"), received_at)
        if received_at - sent_at > MAX_AGE:
            log.warning("whatsapp_stale_message", channel=self.name, age=str(received_at - sent_at))
            return None  # older than Meta's redelivery period: a replay, not a retry
        self._saw_inbound(sender, sent_at)
        context = message.get("context")
        context_id = str(context.get("id") or "") if isinstance(context, dict) else ""
        reply_ref = {"to": sender, "message_id": event_id}
        kind = message.get("type")
        if kind == "interactive":
            interactive = message.get("interactive")
            reply = interactive.get("button_reply") if isinstance(interactive, dict) else None
            data = reply.get("id") if isinstance(reply, dict) else None
            return await self._button(data, event_id, sender, context_id, reply_ref)
        if kind == "button":
            button = message.get("button")
            data = button.get("payload") if isinstance(button, dict) else None
            return await self._button(data, event_id, sender, context_id, reply_ref)
        if kind == "text":
            text = message.get("text")
            body = text.get("body") if isinstance(text, dict) else None
            if isinstance(body, str):
                return await self._typed(body, event_id, sender, context_id, reply_ref, sent_at)
        return None

    async def _button(
        self,
        data: Any,
        event_id: str,
        sender: str,
        context_id: str,
        reply_ref: dict[str, Any],
    ) -> Interaction | None:
        kind, _, token = data.partition(":") if isinstance(data, str) else ("", "", "")
        if kind in ("a", "A") and token:
            return Interaction(
                event_id=event_id,
                user_id=sender,
                token=token,
                decision="approve" if kind == "a" else "always",
                reply_ref=reply_ref,
            )
        if not self._fresh(event_id):
            return None  # a redelivered webhook: the question or notice went out already
        if kind == "d" and token:
            sent = self._sent.get(context_id)
            approval_id = sent.message.approval_id if sent else None
            if approval_id is None:
                await self._say(
                    sender,
                    "To deny, send /deny <request id> <reason>; the request id is at the end "
                    "of the request.",
                    event_id,
                )
                return None
            question = (
                f"Why deny request {approval_id}? Reply with your reason "
                f"(or send /deny {approval_id} <reason>)."
            )
            wamid = await self._say(sender, question, event_id)
            if wamid:
                self._remember(self._prompts, wamid, approval_id)
            self._awaiting[sender] = (approval_id, self.clock())
            return None
        await self._say(sender, "That button is not valid any more.", event_id)
        return None

    async def _typed(
        self,
        text: str,
        event_id: str,
        sender: str,
        context_id: str,
        reply_ref: dict[str, Any],
        sent_at: datetime,
    ) -> Interaction | None:
        try:
            command = textcommand.parse(text)
        except textcommand.CommandError as exc:
            if self._fresh(event_id):
                await self._say(sender, str(exc), event_id)
            return None
        if command is not None:
            self._awaiting.pop(sender, None)
            return command.interaction(event_id=event_id, user_id=sender, reply_ref=reply_ref)
        approval_id = self._prompts.get(context_id) if context_id else None
        awaiting = self._awaiting.get(sender)
        if approval_id is None and awaiting and sent_at - awaiting[1] <= REASON_WAIT:
            approval_id = awaiting[0]
        if approval_id is not None:
            self._awaiting.pop(sender, None)
            reason = text.strip()
            if len(reason) > textcommand.MAX_COMMENT:
                if self._fresh(event_id):
                    await self._say(sender, "That reason is too long.", event_id)
                return None
            return textcommand.Command(approval_id, "deny", reason).interaction(
                event_id=event_id, user_id=sender, reply_ref=reply_ref
            )
        if self._fresh(event_id):
            await self._say(sender, textcommand.USAGE, event_id)
        return None

    async def acknowledge(self, outcome: Outcome) -> None:
        ref = outcome.interaction.reply_ref
        to = ref.get("to")
        if not to:
            return
        await self._say(str(to), outcome.text, ref.get("message_id"))
        if outcome.ok and outcome.message is not None:
            key = (str(to), outcome.message.approval_id)
            self._remember(self._last_status, key, outcome.message.status_line)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _fresh(self, event_id: str) -> bool:
        """False for a message this process already answered with a notice (Meta delivers
        webhooks at least once); votes are deduped by the hub."""
        if event_id in self._noticed:
            return False
        self._remember(self._noticed, event_id, None)
        return True

    @staticmethod
    def _remember(store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > _REMEMBERED:
            store.popitem(last=False)


def _reply_button(button_id: str, title: str) -> dict[str, Any]:
    return {"type": "reply", "reply": {"id": button_id, "title": title[:20]}}


def _quick_reply(index: int, payload: str) -> dict[str, Any]:
    return {
        "type": "button",
        "sub_type": "quick_reply",
        "index": str(index),
        "parameters": [{"type": "payload", "payload": payload}],
    }


def _flat(text: str) -> str:
    """A template variable: no line breaks, tabs or runs of spaces; not empty; bounded."""
    flat = re.sub(r"\s+", " ", text).strip() or "-"
    return textcommand.clip(flat, TEMPLATE_PARAM_LIMIT)


def _alert_text(message: Message) -> str:
    return f"{message.status_line}\n{message.inbox_url}".strip()


def _wa_id(address: str) -> str:
    digits = str(address).strip().lstrip("+")
    if not digits.isdigit():
        raise ChannelError(f"whatsapp: {digits[:40]!r} is not a WhatsApp id", retry=False)
    return digits


def _message_id(response: Mapping[str, Any]) -> str:
    messages = response.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        return str(messages[0].get("id", ""))
    raise ChannelError("whatsapp: the response names no message id", retry=False)


def _timestamp(value: Any, received_at: datetime) -> datetime:
    """When the user sent it (never later than we received it)."""
    try:
        sent = datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return received_at
    return min(sent, received_at)


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
