"""A browsable face for the fake Slack: see the messages the gateway sent, and click their
buttons as the person they were sent to — a Slack-shaped demo without a Slack workspace.

`clearance demo --fake slack` mounts it on the fake's server. A click is turned into the
`block_actions` payload Slack would send, signed with the signing secret, and POSTed to the
gateway's /hooks/slack: the gateway cannot tell it from Slack.
"""

from __future__ import annotations

import html
import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .slack import FakeSlack


def install(fake: FakeSlack, gateway_url: str) -> None:
    """Add `/` (the messages) and `/click` (a button) to the fake's app."""

    async def page(request: Request) -> Response:
        return HTMLResponse(_render(fake))

    async def click(request: Request) -> Response:
        form = await request.form()
        channel, ts = str(form.get("channel")), str(form.get("ts"))
        action = str(form.get("action"))
        ref = {"channel": channel, "ts": ts}
        # A DM (D…) is clicked by the person it was sent to (U…, as the fake opened it).
        user = "U" + channel[1:] if channel.startswith("D") else channel
        async with httpx.AsyncClient(timeout=15) as client:
            payload = fake.click(user, ref, action)
            body, headers = fake.signed(payload, timestamp=int(time.time()))
            await client.post(f"{gateway_url}/hooks/slack", content=body, headers=headers)
            reason = str(form.get("reason") or "").strip()
            if action == "deny" and fake.views:
                submit = fake.submit(user, reason or "denied from the demo")
                body, headers = fake.signed(submit, timestamp=int(time.time()))
                await client.post(f"{gateway_url}/hooks/slack", content=body, headers=headers)
        return RedirectResponse("/", status_code=303)

    fake.app.router.routes.insert(0, Route("/", page, methods=["GET"]))
    fake.app.router.routes.insert(0, Route("/click", click, methods=["POST"]))


def _text(block: dict[str, Any]) -> str:
    parts: list[str] = []
    text = block.get("text")
    if isinstance(text, dict):
        parts.append(str(text.get("text", "")))
    for field in block.get("fields") or []:
        parts.append(str(field.get("text", "")))
    for element in block.get("elements") or []:
        if element.get("type") in ("mrkdwn", "plain_text"):
            parts.append(str(element.get("text", "")))
    return "\n".join(p for p in parts if p)


def _render(fake: FakeSlack) -> str:
    cards = []
    for (channel, ts), message in reversed(list(fake.messages.items())):
        lines = [_text(b) for b in message.get("blocks") or [] if b.get("type") != "actions"]
        buttons = [
            e
            for b in message.get("blocks") or []
            if b.get("type") == "actions"
            for e in b.get("elements") or []
            if str(e.get("action_id", "")).startswith("clearance_")
        ]
        form = ""
        if buttons:
            form = (
                f'<form method="post" action="/click"><input type="hidden" name="channel" '
                f'value="{html.escape(channel)}"><input type="hidden" name="ts" '
                f'value="{html.escape(ts)}"><input name="reason" placeholder="Reason (to deny)">'
                '<button name="action" value="approve">Approve</button>'
                '<button name="action" value="deny">Deny</button></form>'
            )
        body = html.escape("\n\n".join(lines) or str(message.get("text", "")))
        cards.append(
            f"<article><h2>DM {html.escape(channel)}</h2><pre>{body}</pre>{form}</article>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Fake Slack</title>"
        "<meta http-equiv='refresh' content='5'><style>body{font:15px system-ui;margin:2rem;"
        "max-width:52rem}article{border:1px solid #ccc;border-radius:8px;padding:1rem;"
        "margin:1rem 0}pre{white-space:pre-wrap;font:inherit}button{margin-left:.5rem}</style>"
        "</head><body><h1>Fake Slack workspace</h1><p>Messages the gateway sent, newest first. "
        "Clicking a button sends Slack's signed callback to the gateway.</p>"
        + ("".join(cards) or "<p>No messages yet.</p>")
        + "</body></html>"
    )
