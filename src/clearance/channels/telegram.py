"""Telegram: approval requests as bot messages with inline Approve / Deny buttons.

Settings (`channels: telegram: {…}`):

- `bot_token` (required): the token from @BotFather.
- `mode`: `webhook` (default) or `polling`.
- `secret_token`: required in webhook mode. Telegram sends it back in the
  `X-Telegram-Bot-Api-Secret-Token` header of every update (set it with `setup_webhook()`,
  which registers `<public_url>/hooks/<name>`); 1-256 characters of `A-Z a-z 0-9 _ -`.
- `base_url`: the Bot API server, default `https://api.telegram.org` (a local Bot API server
  or a test fake).
- `bot_username` (optional): lets group chats address us as `/approve@<bot_username>` and
  ignore commands addressed to other bots.

The directory maps a person to their numeric Telegram user id (`channels: {telegram: "…"}`),
which is also the chat id of their private chat with the bot (they must /start the bot
once; the bot answers /start with their user id, for the directory).

Outgoing calls go through python-telegram-bot's async `telegram.Bot` (v22: `base_url` is
`"<base_url>/bot"` and the token is appended), on request objects this channel owns and closes.
It runs on our event loop like any httpx client; PTB's `Application`/updater machinery is not
used, because updates reach us through `/hooks/<name>` (or `poll_once`) and the shared hub.

Callbacks: the secret-token header is compared in constant time before the body is parsed.
A button carries `a:<token>` / `d:<token>` (24 bytes; Telegram allows 64). Approve goes to the
hub as a vote by `callback_query.from.id` (event id: `update_id`) and is answered with
`answerCallbackQuery`. Deny needs a reason, so the Deny button records nothing: it asks the
clicker to reply (a ForceReply message naming the request), and the reply — or a text command
`/deny <id> <reason>` — is the vote. Text commands (`textcommand`) are accepted from anyone;
the hub decides whether the verified sender may vote.

Long polling, for a gateway with no public URL (`mode: polling`): `run_polling(handle)` calls
`getUpdates` in a loop and feeds every update through `parse_callback` exactly like a webhook
(the channel fills in its own secret header: the update came from our authenticated call).
Start it next to the dispatcher, e.g.
`asyncio.create_task(channel.run_polling(lambda raw: hub.handle(channel.name, raw)))`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from . import textcommand
from .base import (
    CallbackRejected,
    ChannelError,
    Interaction,
    Message,
    Outcome,
    Parsed,
    RawRequest,
    Sent,
)

log = structlog.get_logger("clearance.channels.telegram")

DEFAULT_BASE_URL = "https://api.telegram.org"
SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 (a header name)
TEXT_LIMIT = 4096
ALERT_LIMIT = 200  # answerCallbackQuery text
CALLBACK_DATA_LIMIT = 64
ALLOWED_UPDATES = ["message", "callback_query"]
DENY_PROMPT = "Why deny request {id}? Reply to this message with your reason."
_DENY_PROMPT_RE = re.compile(r"^Why deny request (\S+)\?")
_REQUEST_LINE_RE = re.compile(r"^Request: (\S+)$", re.MULTILINE)
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_REMEMBERED = 2048

Handler = Callable[[RawRequest], Awaitable[Any]]


class TelegramChannel:
    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "telegram"))
        self.public_url = public_url.rstrip("/")
        token = settings.get("bot_token")
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"channel {self.name!r}: bot_token is required")
        self._token = token.strip()
        mode = str(settings.get("mode", "webhook"))
        if mode not in ("webhook", "polling"):
            raise ValueError(f"channel {self.name!r}: mode must be webhook or polling")
        self.mode = mode
        secret = settings.get("secret_token")
        if secret is None or secret == "":
            if mode == "webhook":
                raise ValueError(f"channel {self.name!r}: secret_token is required in webhook mode")
            secret = secrets.token_urlsafe(32)  # polling: only our own poller knows it
        if not isinstance(secret, str) or not _SECRET_RE.match(secret):
            raise ValueError(
                f"channel {self.name!r}: secret_token must be 1-256 characters of "
                "A-Z, a-z, 0-9, _ and -"
            )
        self._secret = secret
        base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base_url
        prefix = self._token.split(":", 1)[0]
        self.bot_id: int | None = int(prefix) if prefix.isdigit() else None
        self.bot_username: str | None = settings.get("bot_username") or None
        self._request = HTTPXRequest(
            connection_pool_size=8,
            connect_timeout=5.0,
            read_timeout=10.0,
            write_timeout=10.0,
            pool_timeout=5.0,
        )
        self._updates_request = HTTPXRequest(
            connection_pool_size=1, connect_timeout=5.0, read_timeout=10.0
        )
        self.bot = Bot(
            self._token,
            base_url=f"{base_url}/bot",
            request=self._request,
            get_updates_request=self._updates_request,
        )
        self._offset: int | None = None
        # (chat id, message id) of each request we sent → its id, to name it in a deny
        # prompt; after a restart the id is read back from the message text instead.
        self._sent: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._noticed: OrderedDict[str, None] = OrderedDict()

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        chat_id = _chat_id(address)
        try:
            result = await self.bot.send_message(
                chat_id=chat_id,
                text=render(message),
                parse_mode="HTML",
                reply_markup=self._keyboard(message),
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        except TelegramError as exc:
            raise self._error(exc, "sendMessage") from None
        ref = {"chat_id": result.chat.id, "message_id": result.message_id}
        self._remember((result.chat.id, result.message_id), message.approval_id)
        return Sent(ref, {"message_id": result.message_id, "chat_id": result.chat.id})

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        try:
            await self.bot.edit_message_text(
                chat_id=ref["chat_id"],
                message_id=int(ref["message_id"]),
                text=render(message),
                parse_mode="HTML",
                reply_markup=self._keyboard(message),  # None removes the buttons
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
        except BadRequest as exc:
            text = str(exc).lower()
            if "not modified" in text:
                return  # already shows this state
            if "not found" in text or "can't be edited" in text:
                log.info("telegram_message_gone", channel=self.name, error=self._scrub(str(exc)))
                return  # deleted by the user: there is nothing left to update
            raise self._error(exc, "editMessageText") from None
        except TelegramError as exc:
            raise self._error(exc, "editMessageText") from None

    def _keyboard(self, message: Message) -> InlineKeyboardMarkup | None:
        if not message.open or not message.approve_token or not message.deny_token:
            return None
        approve, deny = f"a:{message.approve_token}", f"d:{message.deny_token}"
        always = f"A:{message.always_token}" if message.always_token else ""
        if max(len(approve.encode()), len(deny.encode()), len(always)) > CALLBACK_DATA_LIMIT:
            raise ChannelError("telegram: button token too long for callback_data", retry=False)
        rows = [
            [
                InlineKeyboardButton("✅ Approve", callback_data=approve),
                InlineKeyboardButton("❌ Deny", callback_data=deny),
            ]
        ]
        if always:  # "approve always": a standing grant, where the rule allows it
            rows.append([InlineKeyboardButton("♾ Approve always", callback_data=always)])
        return InlineKeyboardMarkup(rows)

    # -- callbacks -----------------------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        if request.method != "POST":
            raise CallbackRejected("telegram updates are POSTed", 405)
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            raise CallbackRejected("bad or missing secret token")
        try:
            update = json.loads(request.body)
        except ValueError:
            raise CallbackRejected("malformed update: not JSON", 400) from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise CallbackRejected("malformed update: no update_id", 400)
        interaction = await self._interpret(update)
        return Parsed((interaction,) if interaction else ())

    async def _interpret(self, update: dict[str, Any]) -> Interaction | None:
        event_id = str(update["update_id"])
        query = update.get("callback_query")
        if isinstance(query, dict):
            return await self._callback_query(event_id, query)
        message = update.get("message")
        if isinstance(message, dict):
            return await self._text_message(event_id, message)
        return None  # edited messages, member updates…: nothing to decide

    async def _callback_query(self, event_id: str, query: dict[str, Any]) -> Interaction | None:
        query_id = str(query.get("id", ""))
        user_id = _user_id(query.get("from"))
        data = query.get("data")
        if not query_id or user_id is None:
            raise CallbackRejected("malformed callback_query", 400)
        raw_message = query.get("message")
        message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
        chat_id = _chat_of(message)
        message_id = message.get("message_id")
        reply_ref: dict[str, Any] = {"callback_query_id": query_id}
        if chat_id is not None and isinstance(message_id, int):
            reply_ref.update(chat_id=chat_id, message_id=message_id)
        kind, _, token = data.partition(":") if isinstance(data, str) else ("", "", "")
        if kind in ("a", "A") and token:
            return Interaction(
                event_id=event_id,
                user_id=user_id,
                token=token,
                decision="approve" if kind == "a" else "always",
                reply_ref=reply_ref,
            )
        if not self._fresh(event_id):
            return None  # a redelivered update: the question or answer went out already
        if kind == "d" and token:
            await self._ask_reason(query_id, message, chat_id, message_id)
            return None
        await self._answer(query_id, "This button is not valid.", alert=True)
        return None

    async def _ask_reason(
        self, query_id: str, message: dict[str, Any], chat_id: int | None, message_id: Any
    ) -> None:
        """The Deny button: a denial needs a reason, so ask for it with a ForceReply."""
        approval_id = None
        if chat_id is not None and isinstance(message_id, int):
            approval_id = self._sent.get((chat_id, message_id))
        if approval_id is None and isinstance(message.get("text"), str):
            found = _REQUEST_LINE_RE.search(message["text"])
            approval_id = found.group(1) if found else None
        await self._answer(query_id, "Reply with your reason to deny.")
        if chat_id is None:
            return
        if approval_id:
            text = DENY_PROMPT.format(id=approval_id) + f" (Or send /deny {approval_id} <reason>.)"
        else:
            text = "To deny, send /deny <request id> <reason>; the id is shown in the request."
        reply = (
            ReplyParameters(message_id=message_id, allow_sending_without_reply=True)
            if isinstance(message_id, int)
            else None
        )
        try:
            await self.bot.send_message(
                chat_id=chat_id,
                text=text,
                reply_markup=ForceReply(selective=True, input_field_placeholder="Reason"),
                reply_parameters=reply,
            )
        except TelegramError as exc:
            log.warning("telegram_prompt_failed", channel=self.name, error=self._scrub(str(exc)))

    async def _text_message(self, event_id: str, message: dict[str, Any]) -> Interaction | None:
        user_id = _user_id(message.get("from"))
        chat_id = _chat_of(message)
        text = message.get("text")
        if user_id is None or chat_id is None or not isinstance(text, str):
            return None  # channel posts, photos, service messages
        message_id = message.get("message_id")
        reply_ref: dict[str, Any] = {"chat_id": chat_id}
        if isinstance(message_id, int):
            reply_ref["message_id"] = message_id
        try:
            command = textcommand.parse(text, bot_username=self.bot_username)
        except textcommand.CommandError as exc:
            if self._fresh(event_id):
                await self._say(chat_id, str(exc), message_id)
            return None
        if command is not None:
            return command.interaction(event_id=event_id, user_id=user_id, reply_ref=reply_ref)
        prompt = self._prompted_request(message.get("reply_to_message"))
        if prompt is not None:
            reason = text.strip()
            if len(reason) > textcommand.MAX_COMMENT:
                if self._fresh(event_id):
                    await self._say(chat_id, "That reason is too long.", message_id)
                return None
            return textcommand.Command(prompt, "deny", reason).interaction(
                event_id=event_id, user_id=user_id, reply_ref=reply_ref
            )
        if not self._fresh(event_id):
            return None
        greeting = ""
        if text.strip().split(maxsplit=1)[:1] in (["/start"], ["/help"]):
            greeting = (
                f"This is Clearance. Your Telegram user id is {user_id}: your administrator "
                "puts it in the directory so that requests reach you here.\n\n"
            )
        await self._say(chat_id, greeting + textcommand.USAGE, message_id)
        return None

    def _prompted_request(self, replied: Any) -> str | None:
        """The request named by our deny prompt, when `replied` is that prompt."""
        if not isinstance(replied, dict) or not isinstance(replied.get("text"), str):
            return None
        author = replied.get("from")
        if not isinstance(author, dict) or author.get("is_bot") is not True:
            return None
        if self.bot_id is not None and author.get("id") != self.bot_id:
            return None
        found = _DENY_PROMPT_RE.match(replied["text"])
        return found.group(1) if found else None

    async def acknowledge(self, outcome: Outcome) -> None:
        ref = outcome.interaction.reply_ref
        query_id = ref.get("callback_query_id")
        if query_id:
            await self._answer(str(query_id), outcome.text, alert=not outcome.ok)
            return
        chat_id = ref.get("chat_id")
        if chat_id is not None:
            await self._say(chat_id, outcome.text, ref.get("message_id"))

    async def _answer(self, query_id: str, text: str, *, alert: bool = False) -> None:
        try:
            await self.bot.answer_callback_query(
                callback_query_id=query_id,
                text=textcommand.clip(text, ALERT_LIMIT),
                show_alert=alert,
            )
        except TelegramError as exc:  # too old, already answered: the click still counted
            log.warning("telegram_answer_failed", channel=self.name, error=self._scrub(str(exc)))

    async def _say(self, chat_id: Any, text: str, reply_to: Any = None) -> None:
        """A plain-text notice (no parse mode: nothing to escape), best effort."""
        reply = (
            ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if isinstance(reply_to, int)
            else None
        )
        try:
            await self.bot.send_message(
                chat_id=chat_id,
                text=textcommand.clip(text, TEXT_LIMIT),
                reply_parameters=reply,
            )
        except TelegramError as exc:
            log.warning("telegram_notice_failed", channel=self.name, error=self._scrub(str(exc)))

    # -- webhook registration and long polling ------------------------------------------------
    async def setup_webhook(self) -> None:
        """Register `<public_url>/hooks/<name>` with our secret token (webhook mode)."""
        try:
            await self.bot.set_webhook(
                url=f"{self.public_url}/hooks/{self.name}",
                secret_token=self._secret,
                allowed_updates=ALLOWED_UPDATES,
            )
        except TelegramError as exc:
            raise self._error(exc, "setWebhook") from None

    async def poll_once(
        self,
        handle: Handler,
        *,
        timeout: int = 0,
        clock: Callable[[], datetime] | None = None,
    ) -> int:
        """Fetch pending updates once (waiting up to `timeout` s) and pass each, as the
        RawRequest a webhook would have produced, to `handle` (the hub). Returns how many."""
        try:
            updates = await self.bot.get_updates(
                offset=self._offset, timeout=timeout, allowed_updates=ALLOWED_UPDATES
            )
        except TelegramError as exc:
            raise self._error(exc, "getUpdates") from None
        now = clock or (lambda: datetime.now(UTC))
        for update in updates:
            # Confirmed on the next call; an update handled twice is dropped by the hub.
            self._offset = update.update_id + 1
            raw = RawRequest(
                method="POST",
                path=f"/hooks/{self.name}",
                headers={SECRET_HEADER: self._secret, "content-type": "application/json"},
                query={},
                body=json.dumps(update.to_dict()).encode(),
                received_at=now(),
            )
            try:
                await handle(raw)
            except CallbackRejected:
                pass  # audited by the hub; the next update still counts
            except Exception as exc:
                log.error("telegram_update_failed", channel=self.name, error=repr(exc))
        return len(updates)

    async def run_polling(
        self,
        handle: Handler,
        *,
        timeout: int = 30,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Long-poll forever (a task to cancel on shutdown); drops a webhook first, since
        Telegram refuses getUpdates while one is set."""
        try:
            await self.bot.delete_webhook()
        except TelegramError as exc:
            log.warning("telegram_delete_webhook_failed", error=self._scrub(str(exc)))
        backoff = 1.0
        while True:
            try:
                await self.poll_once(handle, timeout=timeout, clock=clock)
                backoff = 1.0
            except Exception as exc:  # a bad network day must not end the poller
                log.warning("telegram_poll_failed", channel=self.name, error=self._scrub(str(exc)))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def aclose(self) -> None:
        for request in (self._request, self._updates_request):
            with contextlib.suppress(Exception):
                await request.shutdown()

    # -- helpers -------------------------------------------------------------------------------
    def _remember(self, key: tuple[int, int], approval_id: str) -> None:
        self._sent[key] = approval_id
        while len(self._sent) > _REMEMBERED:
            self._sent.popitem(last=False)

    def _fresh(self, event_id: str) -> bool:
        """False for an update this process already answered with a notice (Telegram
        redelivers a webhook it did not see acknowledged); votes are deduped by the hub."""
        if event_id in self._noticed:
            return False
        self._noticed[event_id] = None
        while len(self._noticed) > _REMEMBERED:
            self._noticed.popitem(last=False)
        return True

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<bot token>")

    def _error(self, exc: TelegramError, method: str) -> ChannelError:
        """PTB's exception → ChannelError: retry for 5xx, timeouts and flood control."""
        retry = True
        if isinstance(exc, (BadRequest, Forbidden, InvalidToken, ChatMigrated, Conflict)):
            retry = False
        if isinstance(exc, RetryAfter):
            retry = True
        detail = self._scrub(exc.message)
        uncertain = isinstance(exc, TimedOut)  # the request may have been carried out
        return ChannelError(f"telegram {method} failed: {detail}", retry=retry, uncertain=uncertain)


def render(message: Message) -> str:
    """The request as Telegram HTML: everything from the request is escaped."""
    e = html.escape
    if message.state == "blocked":
        lines = textcommand.fit_lines([message.status_line], TEXT_LIMIT - 200)
        out = [f"<b>⛔ {e(message.alert_title)}</b>", *(e(line) for line in lines)]
        if message.inbox_url:
            out.append(f'<a href="{e(message.inbox_url)}">Open Clearance</a>')
        return "\n".join(out)
    tail_plain = [
        "",
        f"Request: {message.approval_id}",
        message.status_line,
        "Open in Clearance",
    ]
    budget = TEXT_LIMIT - len(message.title) - sum(len(t) + 1 for t in tail_plain) - 8
    body = textcommand.fit_lines(message.summary_lines(), budget)
    out = [f"<b>{e(textcommand.clip(message.title, 300))}</b>"]
    for line in body:
        out.append(f"<code>{e(line.strip())}</code>" if line.startswith("  ") else e(line))
    out.append("")
    out.append(f"Request: <code>{e(message.approval_id)}</code>")
    out.append(f"<i>{e(textcommand.clip(message.status_line, 300))}</i>")
    if message.inbox_url:
        out.append(f'<a href="{e(message.inbox_url)}">Open in Clearance</a>')
    return "\n".join(out)


def _chat_id(address: str) -> int | str:
    text = str(address).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.startswith("@"):
        return text
    raise ChannelError(f"telegram: {text[:40]!r} is not a chat id", retry=False)


def _user_id(user: Any) -> str | None:
    if isinstance(user, dict) and isinstance(user.get("id"), int):
        return str(user["id"])
    return None


def _chat_of(message: Mapping[str, Any]) -> int | None:
    chat = message.get("chat")
    if isinstance(chat, dict) and isinstance(chat.get("id"), int):
        return int(chat["id"])
    return None
