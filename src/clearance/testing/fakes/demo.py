"""Clickable demo pages for the platform fakes: `clearance demo --fake NAME` (`make run
FAKE=NAME`) runs the fake of one platform beside the gateway, points the channel at it, and
serves a page that shows what the gateway sent, in the platform's shape, with buttons that
send the platform's real signed callback to the gateway's `/hooks/<name>` — the gateway
cannot tell the click from the platform's.

One page framework (`install`: the page at `/` and the click endpoint at `/click`) and one
small adapter per platform, which knows three things: the channel settings that point at its
fake, how to list what was sent as `Card`s, and how a click becomes the platform's callback
(`Demo.click`). `start(name, gateway_url)` runs one; `NAMES` lists them.
"""

from __future__ import annotations

import abc
import html
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .server import FakeServer, serve_in_thread

Hook = Callable[[bytes, Mapping[str, str]], Awaitable[httpx.Response]]
DEMO_PORT = 8751  # the fake's page, when the port is free (else any free port)


@dataclass(frozen=True, slots=True)
class Card:
    """One message the gateway sent, as the page shows it."""

    key: str  # names the message to its adapter (a form field of the click)
    heading: str  # to whom, where
    body: str  # the text as it now stands
    actions: tuple[str, ...] = ()  # "approve", "deny": the buttons it still has
    links: tuple[tuple[str, str], ...] = ()  # (label, url): links in the message


class Demo(abc.ABC):
    """A platform's fake, seen by a person: subclasses fill in the platform's parts."""

    name = ""  # the channel name, and `--fake NAME`
    title = ""  # the page's heading
    app: Starlette

    @abc.abstractmethod
    def settings(self, url: str) -> dict[str, Any]:
        """The channel settings pointing at this fake, served at `url`."""

    def note(self, url: str) -> str:
        """What to tell the person starting the demo."""
        return f"{self.title}: {url}/  (alice's messages arrive there; click as her)"

    @abc.abstractmethod
    def cards(self) -> list[Card]:
        """The messages the gateway sent to the demo's person, as the page shows them."""

    @abc.abstractmethod
    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        """Send what the platform sends when the message's recipient clicks `action`."""

    def start(self) -> None:  # noqa: B027 - optional: most demos have nothing else to start
        """Start anything besides the page (the email demo's SMTP server)."""

    def stop(self) -> None:  # noqa: B027 - optional, as start
        """Stop what `start` started."""


def install(demo: Demo, gateway_url: str) -> None:
    """Add the page (`GET /`) and the click endpoint (`POST /click`) to the fake's app."""
    hook_url = f"{gateway_url.rstrip('/')}/hooks/{demo.name}"

    async def page(request: Request) -> Response:
        return HTMLResponse(render(demo))

    async def click(request: Request) -> Response:
        form = await request.form()
        key, action = str(form.get("key") or ""), str(form.get("action") or "")
        reason = str(form.get("reason") or "").strip() or "denied from the demo"
        if action not in ("approve", "deny") or not key:
            return HTMLResponse("Unknown button", status_code=400)
        async with httpx.AsyncClient(timeout=15) as client:

            async def hook(body: bytes, headers: Mapping[str, str]) -> httpx.Response:
                return await client.post(hook_url, content=body, headers=dict(headers))

            try:
                await demo.click(key, action, reason, hook)
            except LookupError as exc:  # the button is gone (decided meanwhile)
                return HTMLResponse(html.escape(str(exc)), status_code=409)
        return RedirectResponse("/", status_code=303)

    demo.app.router.routes.insert(0, Route("/", page, methods=["GET"]))
    demo.app.router.routes.insert(0, Route("/click", click, methods=["POST"]))


def render(demo: Demo) -> str:
    cards = []
    for card in reversed(demo.cards()):
        form = ""
        if card.actions:
            reason = (
                '<input name="reason" placeholder="Reason (to deny)">'
                if "deny" in card.actions
                else ""
            )
            buttons = "".join(
                f'<button name="action" value="{a}">{a.title()}</button>' for a in card.actions
            )
            form = (
                '<form method="post" action="/click"><input type="hidden" name="key" '
                f'value="{html.escape(card.key)}">{reason}{buttons}</form>'
            )
        links = "".join(
            f'<p><a href="{html.escape(url)}">{html.escape(label)}</a></p>'
            for label, url in card.links
        )
        cards.append(
            f"<article><h2>{html.escape(card.heading)}</h2><pre>{html.escape(card.body)}</pre>"
            f"{links}{form}</article>"
        )
    title = html.escape(demo.title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<meta http-equiv='refresh' content='10'><style>body{font:15px system-ui;margin:2rem;"
        "max-width:52rem}article{border:1px solid #ccc;border-radius:8px;padding:1rem;"
        "margin:1rem 0}pre{white-space:pre-wrap;font:inherit}button{margin-left:.5rem}</style>"
        f"</head><body><h1>{title}</h1><p>What the gateway sent, newest first. A button sends "
        "the platform's signed callback to the gateway.</p>"
        + ("".join(cards) or "<p>Nothing yet.</p>")
        + "</body></html>"
    )


@dataclass
class Running:
    """A demo fake, served: `settings` go in the channel's config."""

    demo: Demo
    server: FakeServer
    settings: dict[str, Any]
    note: str

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()
        self.demo.stop()


def start(name: str, gateway_url: str, *, port: int = DEMO_PORT) -> Running:
    """Run the demo fake `name` for the gateway at `gateway_url` (KeyError: no such demo)."""
    demo = DEMOS[name]()
    install(demo, gateway_url)
    demo.start()
    try:
        server = serve_in_thread(demo.app, port=port)
    except (RuntimeError, OSError):  # the port is taken: any free port will do
        server = serve_in_thread(demo.app)
    return Running(demo, server, demo.settings(server.url), demo.note(server.url))


def _now() -> int:
    return int(time.time())


# -- Slack -------------------------------------------------------------------------------------
class SlackDemo(Demo):
    name, title = "slack", "Slack workspace (fake)"

    def __init__(self) -> None:
        from .slack import FakeSlack

        self.fake = FakeSlack()
        self.app = self.fake.app

    def settings(self, url: str) -> dict[str, Any]:
        return {
            "bot_token": self.fake.bot_token,
            "signing_secret": self.fake.signing_secret,
            "base_url": f"{url}/api/",
        }

    def cards(self) -> list[Card]:
        out = []
        for (channel, ts), message in list(self.fake.messages.items()):
            blocks = message.get("blocks") or []
            text = "\n\n".join(_slack_text(b) for b in blocks if b.get("type") != "actions")
            actions = tuple(
                str(e["action_id"]).removeprefix("clearance_")
                for b in blocks
                if b.get("type") == "actions"
                for e in b.get("elements") or []
                if e.get("action_id") in ("clearance_approve", "clearance_deny")
            )
            out.append(Card(f"{channel} {ts}", f"DM {channel}", text or message["text"], actions))
        return out

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        channel, _, ts = key.partition(" ")
        user = "U" + channel[1:] if channel.startswith("D") else channel  # the DM's person
        payload = self.fake.click(user, {"channel": channel, "ts": ts}, action)
        await hook(*self.fake.signed(payload, timestamp=_now()))
        if action == "deny" and self.fake.views:  # the modal asking why, submitted
            await hook(*self.fake.signed(self.fake.submit(user, reason), timestamp=_now()))


def _slack_text(block: Mapping[str, Any]) -> str:
    parts: list[str] = []
    text = block.get("text")
    if isinstance(text, dict):
        parts.append(str(text.get("text", "")))
    parts.extend(str(f.get("text", "")) for f in block.get("fields") or [])
    parts.extend(
        str(e.get("text", ""))
        for e in block.get("elements") or []
        if e.get("type") in ("mrkdwn", "plain_text")
    )
    return "\n".join(p for p in parts if p)


# -- Discord -----------------------------------------------------------------------------------
class DiscordDemo(Demo):
    name, title = "discord", "Discord (fake)"

    def __init__(self) -> None:
        from .discord import FakeDiscord

        self.fake = FakeDiscord()
        self.app = self.fake.app

    def settings(self, url: str) -> dict[str, Any]:
        return {
            "bot_token": self.fake.bot_token,
            "public_key": self.fake.public_key,
            "application_id": self.fake.application_id,
            "base_url": f"{url}/api/v10",
        }

    def cards(self) -> list[Card]:
        out = []
        for message_id, message in list(self.fake.messages.items()):
            lines = [str(message.get("content") or "")]
            for embed in message.get("embeds") or []:
                lines += [str(embed.get("title") or ""), str(embed.get("description") or "")]
                lines += [f"{f.get('name')}: {f.get('value')}" for f in embed.get("fields") or []]
            actions = tuple(
                str(b.get("custom_id")).partition(":")[0]
                for row in message.get("components") or []
                for b in row.get("components") or []
                if str(b.get("custom_id", "")).startswith(("approve:", "deny:"))
            )
            user = self._recipient(message["channel_id"])
            text = "\n".join(line for line in lines if line)
            out.append(Card(message_id, f"DM with {user}", text, actions))
        return out

    def _recipient(self, channel_id: str) -> str:
        channel = self.fake.channels.get(channel_id) or {}
        return str(((channel.get("recipients") or [{}])[0]).get("id", ""))

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        message = self.fake.messages[key]
        user = self._recipient(message["channel_id"])
        payload = self.fake.click(user, key, action)
        answer = (await hook(*self.fake.signed(payload, timestamp=_now()))).json()
        if answer.get("type") == 9:  # MODAL: Discord shows it; the person fills it in
            submit = self.fake.submit(user, key, answer, reason)
            answer = (await hook(*self.fake.signed(submit, timestamp=_now()))).json()
        if answer.get("type") == 7:  # UPDATE_MESSAGE: Discord edits the clicked message
            message.update(
                {
                    k: v
                    for k, v in (answer.get("data") or {}).items()
                    if k in ("embeds", "components")
                }
            )


# -- Teams -------------------------------------------------------------------------------------
class TeamsDemo(Demo):
    name, title = "teams", "Microsoft Teams (fake)"

    def __init__(self) -> None:
        from .teams import FakeTeams

        self.fake = FakeTeams()
        self.app = self.fake.app

    def settings(self, url: str) -> dict[str, Any]:
        self.fake.base_url = url
        return self.fake.settings()

    def cards(self) -> list[Card]:
        out = []
        for (conversation, activity_id), activity in list(self.fake.activities.items()):
            card = ((activity.get("attachments") or [{}])[0]).get("content") or {}
            lines = []
            for item in card.get("body") or []:
                if item.get("type") == "TextBlock":
                    lines.append(str(item.get("text") or ""))
                for fact in item.get("facts") or []:
                    lines.append(f"{fact.get('title')}: {fact.get('value')}")
            actions = tuple(
                str(a.get("verb"))
                for a in card.get("actions") or []
                if a.get("type") == "Action.Execute" and a.get("verb") in ("approve", "deny")
            )
            member = self._member(conversation)
            key = f"{conversation} {activity_id}"
            text = "\n".join(lines) or str(activity.get("text") or "")
            out.append(Card(key, f"Chat with {member}", text, actions))
        return out

    def _member(self, conversation: str) -> str:
        members = (self.fake.conversations.get(conversation) or {}).get("members") or [{}]
        return str(members[0].get("id", ""))

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        conversation, _, activity_id = key.partition(" ")
        activity = self.fake.activities[(conversation, activity_id)]
        card = activity["attachments"][0]["content"]
        execute = next((a for a in card.get("actions") or [] if a.get("verb") == action), None)
        if execute is None:
            raise LookupError(f"the card has no {action} button (any more)")
        body, headers = self.fake.invoke(
            str(execute["data"]["token"]),
            action,
            user=self._member(conversation),
            now=datetime.now(UTC),
            reason=reason if action == "deny" else None,
            conversation_id=conversation,
            reply_to=activity_id,
        )
        answer = (await hook(body, headers)).json()
        if answer.get("type") == "application/vnd.microsoft.card.adaptive":
            activity["attachments"][0]["content"] = answer["value"]  # Teams shows it in place


# -- Telegram ----------------------------------------------------------------------------------
class TelegramDemo(Demo):
    name, title = "telegram", "Telegram (fake)"
    secret = "demo-telegram-secret"  # noqa: S105 - the demo's webhook secret

    def __init__(self) -> None:
        from .telegram import FakeTelegram

        self.fake = FakeTelegram("777000:demo-telegram-bot-token", secret_token=self.secret)
        self.app = self.fake.app

    def settings(self, url: str) -> dict[str, Any]:
        return {
            "bot_token": self.fake.token,
            "secret_token": self.secret,
            "base_url": url,
            "mode": "webhook",
        }

    def cards(self) -> list[Card]:
        out = []
        for (chat_id, message_id), message in list(self.fake.messages.items()):
            actions = tuple(
                {"a": "approve", "d": "deny"}[str(b["callback_data"])[0]]
                for b in message.buttons
                if str(b.get("callback_data", ""))[:2] in ("a:", "d:")
            )
            out.append(Card(f"{chat_id} {message_id}", f"Chat {chat_id}", message.text, actions))
        return out

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        chat, _, message_id = key.partition(" ")
        message = self.fake.messages[(int(chat), int(message_id))]
        data = message.callback_data("a:" if action == "approve" else "d:")
        headers = self.fake.webhook_headers()
        before = len(self.fake.sent)
        update = self.fake.click(int(chat), data, message)  # a private chat's id is the user's
        await hook(self.fake.body(update), headers)
        if action == "deny":  # the bot asks why; the person replies to that question
            asked = [m for m in self.fake.sent[before:] if m.chat_id == int(chat)]
            answer = self.fake.text(int(chat), reason, reply_to=asked[-1] if asked else None)
            await hook(self.fake.body(answer), headers)


# -- WhatsApp ----------------------------------------------------------------------------------
class WhatsAppDemo(Demo):
    name, title = "whatsapp", "WhatsApp (fake)"
    verify_token = "demo-verify-token"  # noqa: S105 - the demo's handshake token

    def __init__(self) -> None:
        from .whatsapp import FakeWhatsApp

        self.fake = FakeWhatsApp()
        self.app = self.fake.app

    def settings(self, url: str) -> dict[str, Any]:
        return {
            "access_token": self.fake.access_token,
            "app_secret": self.fake.app_secret,
            "verify_token": self.verify_token,
            "phone_number_id": self.fake.phone_number_id,
            "base_url": f"{url}/v21.0",
        }

    def cards(self) -> list[Card]:
        out = []
        for sent in list(self.fake.sent):
            actions = tuple(
                {"a": "approve", "d": "deny"}[b[0]]
                for b in sent.button_ids()
                if b[:2] in ("a:", "d:")
            )
            out.append(Card(sent.wamid, f"To +{sent.to} ({sent.type})", sent.text, actions))
        return out

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        sent = self.fake.by_id(key)
        button = sent.button("a:" if action == "approve" else "d:")
        if sent.type == "template":
            tap = self.fake.tap_template(sent.to, button, context=sent.wamid)
        else:
            tap = self.fake.tap(sent.to, button, context=sent.wamid)
        await hook(*self.fake.signed(self.fake.envelope(tap)))
        if action == "deny":  # asked for a reason, the person writes it
            await hook(*self.fake.signed(self.fake.envelope(self.fake.text(sent.to, reason))))


# -- the signed webhook ------------------------------------------------------------------------
class WebhookDemo(Demo):
    name, title = "webhook", "Webhook receiver (fake external system)"

    def __init__(self) -> None:
        from .webhook import WebhookReceiver, WebhookSender, generate_secret

        self.secret = generate_secret()
        self.receiver = WebhookReceiver(self.secret)
        self.sender = WebhookSender(self.secret)
        self.app = self.receiver.app

    def settings(self, url: str) -> dict[str, Any]:
        return {"url": f"{url}/events", "secret": self.secret}

    def cards(self) -> list[Card]:
        events = [e for e in self.receiver.events() if isinstance(e, dict)]
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for event in events:
            latest[(str(event.get("approval_id")), str(event.get("recipient")))] = event
        out = []
        for n, event in enumerate(events):
            key = (str(event.get("approval_id")), str(event.get("recipient")))
            still_open = latest[key].get("state") == "pending" and event.get("approve_token")
            actions = ("approve", "deny") if still_open and latest[key] is event else ()
            body = json.dumps(event, indent=2, ensure_ascii=False)
            out.append(Card(str(n), f"{event.get('type')} for {key[1]}", body, actions))
        return out

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        event = self.receiver.events()[int(key)]
        body, headers = self.sender.decision(
            user=str(event["recipient"]),
            decision=action,
            token=str(event["approve_token"]),
            comment=reason if action == "deny" else None,
        )
        await hook(body, headers)


# -- email -------------------------------------------------------------------------------------
class EmailDemo(Demo):
    name, title = "email", "Mailbox (fake SMTP server)"

    def __init__(self) -> None:
        from .email import FakeMailbox

        self.mailbox = FakeMailbox()
        self.app = Starlette()

    def start(self) -> None:
        self.mailbox.start()

    def stop(self) -> None:
        self.mailbox.stop()

    def settings(self, url: str) -> dict[str, Any]:
        return {
            "smtp_host": self.mailbox.host,
            "smtp_port": self.mailbox.port,
            "tls": "none",
            "sender": "approvals@clearance.demo",
        }

    def note(self, url: str) -> str:
        return (
            f"{self.title}: {url}/  (SMTP on {self.mailbox.host}:{self.mailbox.port}; alice's "
            "mail arrives there: open its links)"
        )

    def cards(self) -> list[Card]:
        out = []
        for n, mail in enumerate(list(self.mailbox.mails)):
            links = tuple(
                ("Approve…" if link.endswith("d=approve") else "Deny…", link)
                for link in mail.links()
                if "/confirm?" in link
            )
            heading = f"To {', '.join(mail.recipients)}: {mail.subject}"
            out.append(Card(str(n), heading, mail.text, links=links))
        return out

    async def click(self, key: str, action: str, reason: str, hook: Hook) -> None:
        raise LookupError("email is decided on the gateway's confirmation page: open the link")


DEMOS: dict[str, Callable[[], Demo]] = {
    demo.name: demo
    for demo in (
        SlackDemo,
        DiscordDemo,
        TeamsDemo,
        TelegramDemo,
        WhatsAppDemo,
        WebhookDemo,
        EmailDemo,
    )
}
NAMES = tuple(sorted(DEMOS))
