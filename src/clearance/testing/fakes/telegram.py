"""A fake Telegram Bot API server: the methods Clearance uses, with the real wire format
(`/bot<token>/<method>`, parameters as query, form, JSON or multipart, `{"ok": true,
"result": …}` / `{"ok": false, "error_code": …, "description": …}`), and builders of the
updates Telegram would deliver, with the secret-token header it would send.

    fake = FakeTelegram(token="123:ABC", secret_token="s3cret")
    with serve_in_thread(fake.app) as server:   # channel setting base_url=server.url
        ...
    fake.sent                                   # messages sendMessage accepted
    update = fake.click(user_id=111, data="a:tok", message=fake.sent[0])
    headers = fake.webhook_headers()            # X-Telegram-Bot-Api-Secret-Token
    fake.fail_next("sendMessage", status=500)   # one failure, then normal service

What is checked like Telegram does: the token (401), HTML parse mode (only Telegram's tags
and entities, balanced; a raw `<`, `>` or `&` fails with "can't parse entities"), text length
(4096 after parsing), `callback_data` (1-64 bytes), editing a message that does not exist or
without any change, answering an unknown callback query, text of a callback answer (200),
`getUpdates` while a webhook is set (409).
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "tg-emoji",
    "code",
    "pre",
    "blockquote",
}
_TAG = re.compile(r"<(/?)([a-zA-Z-]+)((?:\s+[a-zA-Z-]+=\"[^\"<>]*\")*)\s*>")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


class ParseError(ValueError):
    pass


def parse_html(text: str) -> str:
    """The plain text of Telegram-HTML `text`; ParseError where Telegram would refuse it."""
    stack: list[str] = []
    plain: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "<":
            match = _TAG.match(text, pos)
            if match is None:
                raise ParseError(f"can't parse entities: unexpected '<' at byte offset {pos}")
            closing, tag = match.group(1) == "/", match.group(2).lower()
            if tag not in _TAGS:
                raise ParseError(
                    f'can\'t parse entities: Unsupported start tag "{tag}" at byte offset {pos}'
                )
            if closing:
                if not stack or stack[-1] != tag:
                    raise ParseError(
                        f"can't parse entities: Unexpected end tag at byte offset {pos}\""
                    )
                stack.pop()
            else:
                stack.append(tag)
            pos = match.end()
        elif char == "&":
            match = _ENTITY.match(text, pos)
            if match is None:
                raise ParseError(f"can't parse entities: unexpected '&' at byte offset {pos}")
            plain.append(html.unescape(match.group(0)))
            pos = match.end()
        elif char == ">":
            raise ParseError(f"can't parse entities: unexpected '>' at byte offset {pos}")
        else:
            plain.append(char)
            pos += 1
    if stack:
        raise ParseError(
            f"can't parse entities: Can't find end tag corresponding to \"{stack[-1]}\""
        )
    return "".join(plain)


@dataclass
class Call:
    """One Bot API call the fake received."""

    method: str
    params: dict[str, Any]
    status: int


@dataclass
class StoredMessage:
    """A message the bot sent, as the fake keeps it."""

    chat_id: int
    message_id: int
    text: str  # plain text, after HTML parsing
    source: str  # what was sent, before parsing
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    date: int
    edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]

    def callback_data(self, prefix: str) -> str:
        """The callback data of the button whose data starts with `prefix` (`a:` / `d:`)."""
        return next(
            str(b["callback_data"]) for b in self.buttons if b["callback_data"].startswith(prefix)
        )


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None
    times: int


class FakeTelegram:
    def __init__(
        self,
        token: str = "123456:TEST-token",  # noqa: S107 (a fake's test value)
        *,
        secret_token: str | None = None,
        bot_username: str = "clearance_bot",
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.secret_token = secret_token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self.sent: list[StoredMessage] = []  # in order, including notices and prompts
        self.answers: list[dict[str, Any]] = []
        self.webhook_url: str | None = None
        self.users: dict[int, dict[str, Any]] = {}
        self._open_queries: set[str] = set()
        self._updates: list[dict[str, Any]] = []
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(700_000_001)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"])]
        )

    # -- test controls -------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with an error."""
        with self._lock:
            self._failures.append(_Failure(method, status, description, retry_after, times))

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def requests_to(self, chat_id: int) -> list[StoredMessage]:
        """The approval requests (messages with buttons) sent to `chat_id`, oldest first."""
        return [m for m in self.sent if m.chat_id == chat_id and m.buttons]

    def user(self, user_id: int, first_name: str | None = None) -> dict[str, Any]:
        return self.users.setdefault(
            user_id,
            {"id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}"},
        )

    # -- updates Telegram would deliver --------------------------------------------------------
    def webhook_headers(self, secret: str | None = None) -> dict[str, str]:
        """The header Telegram sends with each webhook update."""
        value = secret if secret is not None else self.secret_token
        return {SECRET_HEADER: value or "", "Content-Type": "application/json"}

    def click(
        self, user_id: int, data: str, message: StoredMessage | None = None
    ) -> dict[str, Any]:
        """The `callback_query` update for `user_id` pressing a button with `data`."""
        query_id = str(4_000_000_000_000_000_000 + next(self._ids))
        with self._lock:
            self._open_queries.add(query_id)
        query: dict[str, Any] = {
            "id": query_id,
            "from": self.user(user_id),
            "chat_instance": "-4242424242",
            "data": data,
        }
        if message is not None:
            query["message"] = self._message_json(message)
        return {"update_id": next(self._update_ids), "callback_query": query}

    def text(
        self, user_id: int, text: str, reply_to: StoredMessage | None = None
    ) -> dict[str, Any]:
        """The `message` update for `user_id` writing `text` in their private chat."""
        user = self.user(user_id)
        message: dict[str, Any] = {
            "message_id": 10_000 + next(self._ids),
            "from": user,
            "chat": {"id": user_id, "type": "private", "first_name": user["first_name"]},
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        if reply_to is not None:
            message["reply_to_message"] = self._message_json(reply_to)
        return {"update_id": next(self._update_ids), "message": message}

    def enqueue(self, update: dict[str, Any]) -> None:
        """Make `update` available to getUpdates (long polling)."""
        with self._lock:
            self._updates.append(update)

    @staticmethod
    def body(update: dict[str, Any]) -> bytes:
        return json.dumps(update).encode()

    # -- the API -------------------------------------------------------------------------------
    async def _endpoint(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        params = await _params(request)
        if request.path_params["token"] != self.token:
            return self._record(method, params, _error(401, "Unauthorized"))
        failure = self._take_failure(method)
        if failure is not None:
            extra = {"retry_after": failure.retry_after} if failure.retry_after else None
            return self._record(method, params, _error(failure.status, failure.description, extra))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._record(method, params, _error(404, "Not Found"))
        try:
            result = await handler(params)
        except _ApiError as exc:
            return self._record(method, params, _error(exc.status, exc.description))
        return self._record(method, params, JSONResponse({"ok": True, "result": result}))

    def _record(self, method: str, params: dict[str, Any], response: JSONResponse) -> JSONResponse:
        with self._lock:
            self.calls.append(Call(method, params, response.status_code))
        return response

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.method == method and failure.times > 0:
                    failure.times -= 1
                    return failure
        return None

    async def _m_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "Clearance",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _int(params.get("chat_id"), "chat not found")
        source, plain, mode = _text(params)
        markup = _markup(params.get("reply_markup"))
        with self._lock:
            message_id = next(self._ids)
            stored = StoredMessage(
                chat_id, message_id, plain, source, mode, markup, int(time.time())
            )
            self.messages[(chat_id, message_id)] = stored
            self.sent.append(stored)
        return self._message_json(stored)

    async def _m_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._find(params)
        source, plain, mode = _text(params)
        markup = _markup(params.get("reply_markup"))
        inline = markup if markup and "inline_keyboard" in markup else None
        if plain == stored.text and inline == stored.reply_markup:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of "
                "the message",
            )
        with self._lock:
            stored.edits.append({"text": plain, "reply_markup": inline})
            stored.text, stored.source, stored.parse_mode = plain, source, mode
            stored.reply_markup = inline  # no reply_markup: the inline keyboard goes away
        return {**self._message_json(stored), "edit_date": int(time.time())}

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self._find(params)
        markup = _markup(params.get("reply_markup"))
        inline = markup if markup and "inline_keyboard" in markup else None
        if inline == stored.reply_markup:
            raise _ApiError(400, "Bad Request: message is not modified")
        with self._lock:
            stored.edits.append({"text": stored.text, "reply_markup": inline})
            stored.reply_markup = inline
        return {**self._message_json(stored), "edit_date": int(time.time())}

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        text = str(params.get("text") or "")
        if len(text) > 200:
            raise _ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        with self._lock:
            if query_id not in self._open_queries:
                raise _ApiError(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID "
                    "is invalid",
                )
            self._open_queries.discard(query_id)
            self.answers.append(
                {
                    "callback_query_id": query_id,
                    "text": text,
                    "show_alert": _bool(params.get("show_alert")),
                }
            )
        return True

    async def _m_setWebhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        with self._lock:
            self.webhook_url = url or None
            if secret is not None:
                self.secret_token = str(secret)
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self.webhook_url = None
        return True

    async def _m_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": 0 if self.webhook_url else len(self._updates),
        }

    async def _m_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = params.get("offset")
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 5.0)
        while True:
            with self._lock:
                if offset is not None:
                    self._updates = [u for u in self._updates if u["update_id"] >= int(offset)]
                pending = list(self._updates[:limit])
            if pending or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(0.05)

    # -- helpers -------------------------------------------------------------------------------
    def _find(self, params: dict[str, Any]) -> StoredMessage:
        if params.get("inline_message_id"):
            raise _ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat_id = _int(params.get("chat_id"), "chat not found")
        message_id = _int(params.get("message_id"), "message to edit not found")
        stored = self.messages.get((chat_id, message_id))
        if stored is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        return stored

    def _message_json(self, stored: StoredMessage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": stored.message_id,
            "from": {
                "id": self.bot_id,
                "is_bot": True,
                "first_name": "Clearance",
                "username": self.bot_username,
            },
            "chat": {"id": stored.chat_id, "type": "private"},
            "date": stored.date,
            "text": stored.text,
        }
        if stored.reply_markup and "inline_keyboard" in stored.reply_markup:
            out["reply_markup"] = stored.reply_markup  # Telegram echoes inline keyboards only
        return out


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return JSONResponse(body, status_code=status)


async def _params(request: Request) -> dict[str, Any]:
    """Bot API parameters from the query string and the body (JSON, form or multipart);
    nested objects arrive JSON-encoded in forms, as PTB sends them."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if "application/json" in content_type:
        body = await request.body()
        if body:
            data = json.loads(body)
            if isinstance(data, dict):
                params.update(data)
    elif "form" in content_type:
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _text(params: dict[str, Any]) -> tuple[str, str, str | None]:
    source = params.get("text")
    if not isinstance(source, str) or not source.strip():
        raise _ApiError(400, "Bad Request: message text is empty")
    mode = params.get("parse_mode")
    plain = source
    if isinstance(mode, str) and mode.upper() == "HTML":
        try:
            plain = parse_html(source)
        except ParseError as exc:
            raise _ApiError(400, f"Bad Request: {exc}") from None
    elif mode:
        raise _ApiError(400, "Bad Request: unsupported parse_mode in this fake")
    if len(plain) > 4096:
        raise _ApiError(400, "Bad Request: message is too long")
    return source, plain, mode if isinstance(mode, str) else None


def _markup(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    try:
        markup = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        markup = None
    if not isinstance(markup, dict):
        raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is not None:
        for row in rows:
            for button in row:
                if not str(button.get("text") or ""):
                    raise _ApiError(400, "Bad Request: text buttons are unallowed")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    elif markup.get("force_reply") is not True and "keyboard" not in markup:
        raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    return markup


def _int(value: Any, missing: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _ApiError(400, f"Bad Request: {missing}") from None


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
