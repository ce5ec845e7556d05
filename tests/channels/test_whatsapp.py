"""The WhatsApp Cloud API channel against a local fake: reply buttons inside the 24-hour
window, templates outside it, signed webhooks at /hooks/whatsapp, follow-up status messages,
and everything that must be refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.channels.base import ChannelError
from clearance.channels.hub import ChannelHub
from clearance.channels.message import build
from clearance.channels.whatsapp import WhatsAppChannel
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import serve_in_thread
from clearance.testing.fakes.whatsapp import FakeWhatsApp, SentMessage

ACCESS_TOKEN = "EAAG-access-token-xyz"
APP_SECRET = "app-secret-123"
VERIFY_TOKEN = "verify-me-456"
NUMBER_ID = "105500000000001"
ALICE, BOB, CAROL, DANA = "15550001001", "15550001002", "15550001003", "15550001004"

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {whatsapp: "15550001001"}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {whatsapp: "15550001002"}}
    - {id: carol, name: Carol Diaz, groups: [managers], channels: {whatsapp: "15550001003"}}
    - {id: dana, name: Dana Lee, groups: [finance], channels: {whatsapp: "15550001004"}}
policies:
  default: deny
  rules:
    - id: big
      description: Big transfers need a manager and finance
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
          - {name: finance, approvers: [group:finance]}
channels:
  whatsapp:
    access_token: "%(token)s"
    app_secret: "%(secret)s"
    verify_token: "%(verify)s"
    phone_number_id: "%(number)s"
    base_url: "%(url)s/v21.0"
    notice_template_name: clearance_notice
server: {public_url: "http://clearance.test"}
"""


@dataclass
class Env:
    fake: FakeWhatsApp
    url: str
    gw: Gateway
    hub: ChannelHub
    client: httpx.AsyncClient
    clock: FrozenClock

    @property
    def channel(self) -> WhatsAppChannel:
        channel = self.hub.channels["whatsapp"]
        assert isinstance(channel, WhatsAppChannel)
        return channel

    async def deliver(
        self, *messages: dict[str, Any], statuses: list[dict[str, Any]] | None = None
    ) -> httpx.Response:
        body, headers = self.fake.signed(self.fake.envelope(*messages, statuses=statuses))
        return await self.client.post("/hooks/whatsapp", content=body, headers=headers)

    async def drain(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            while await self.hub.dispatcher.run_once():
                pass
            self.clock.advance(seconds=31)

    async def ask(self, amount: int = 500) -> str:
        result = await self.gw.check(Request("pay", {"amount": amount}, {"user": "carol"}))
        assert result.approval is not None
        return result.approval.approval.id

    def kinds(self) -> list[str]:
        return [e.kind for e in iter_entries(self.gw.db)]

    async def votes(self, approval_id: str) -> list[tuple[str, str]]:
        stored = await self.gw.approvals.get(approval_id)
        return [(v.person, v.decision.value) for v in stored.approval.votes]

    def requests_to(self, wa_id: str) -> list[SentMessage]:
        return [m for m in self.fake.to(wa_id) if m.button_ids()]


@pytest.fixture
def fake(clock: FrozenClock) -> Iterator[tuple[FakeWhatsApp, str]]:
    whatsapp = FakeWhatsApp(
        access_token=ACCESS_TOKEN, app_secret=APP_SECRET, phone_number_id=NUMBER_ID, clock=clock
    )
    with serve_in_thread(whatsapp.app) as server:
        yield whatsapp, server.url


@pytest.fixture
async def env(
    tmp_path: Path, clock: FrozenClock, fake: tuple[FakeWhatsApp, str]
) -> AsyncIterator[Env]:
    whatsapp, url = fake
    path = tmp_path / "p.yaml"
    path.write_text(
        POLICY
        % {
            "token": ACCESS_TOKEN,
            "secret": APP_SECRET,
            "verify": VERIFY_TOKEN,
            "number": NUMBER_ID,
            "url": url,
        }
    )
    gw = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gw)
    channel = hub.channels["whatsapp"]
    assert isinstance(channel, WhatsAppChannel)
    channel.clock = clock
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield Env(whatsapp, url, gw, hub, client, clock)
    await hub.aclose()
    await gw.aclose()


def only(messages: list[SentMessage]) -> SentMessage:
    assert len(messages) == 1, messages
    return messages[0]


async def test_whole_flow_buttons_in_window_templates_outside(env: Env) -> None:
    """Bob wrote recently and gets reply buttons, Alice and Dana get the template; Bob's tap
    passes stage 1, Dana's quick reply approves; the agent's wait returns approved and
    follow-ups report the outcome (once each)."""
    await env.deliver(env.fake.text(BOB, "hi"))  # opens Bob's window (and gets the help)
    assert "/approve <request id>" in env.fake.to(BOB)[-1].text
    approval_id = await env.ask()
    waiter = asyncio.create_task(env.gw.approvals.wait(approval_id, timeout=20))
    await env.drain()
    to_bob, to_alice = only(env.requests_to(BOB)), only(env.requests_to(ALICE))
    assert to_bob.type == "interactive" and to_alice.type == "template"
    interactive = to_bob.payload["interactive"]
    assert interactive["header"]["text"] == "Approval needed: pay"
    assert "Carol Diaz wants to run pay" in interactive["body"]["text"]
    assert interactive["footer"]["text"] == f"Request {approval_id}"
    assert [b["reply"]["title"] for b in interactive["action"]["buttons"]] == ["Approve", "Deny"]
    template = to_alice.payload["template"]
    assert template["name"] == "clearance_approval" and template["language"] == {"code": "en"}
    assert template["components"][1] == {
        "type": "button",
        "sub_type": "quick_reply",
        "index": "0",
        "parameters": [{"type": "payload", "payload": to_alice.button("a:")}],
    }
    assert env.fake.failed_statuses == []  # nothing free-form went outside a window

    response = await env.deliver(env.fake.tap(BOB, to_bob.button("a:"), context=to_bob.wamid))
    assert response.status_code == 200
    ack = env.fake.to(BOB)[-1]
    assert ack.type == "text" and "stage 1 of 2 done" in ack.text
    assert ack.payload["context"] == {
        "message_id": env.fake.sent[-1].payload["context"]["message_id"]
    }
    await env.drain()
    to_dana = only(env.requests_to(DANA))
    assert to_dana.type == "template"
    alice_update = env.fake.to(ALICE)[-1]  # outside her window: the notice template
    assert alice_update.payload["template"]["name"] == "clearance_notice"
    assert "Approved by Bob Ortiz" in alice_update.text
    assert not waiter.done()

    await env.deliver(env.fake.tap_template(DANA, to_dana.button("a:"), context=to_dana.wamid))
    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    await env.drain()
    finals = [m for m in env.fake.to(DANA) if "Approved by Bob Ortiz, Dana Lee" in m.text]
    assert len(finals) == 1  # the acknowledgement; the update is not repeated
    assert any("Approved by Bob Ortiz, Dana Lee" in m.text for m in env.fake.to(BOB))
    assert await env.votes(approval_id) == [("bob", "approve"), ("dana", "approve")]
    assert env.fake.failed_statuses == []


async def test_verification_handshake(env: Env) -> None:
    """GET answers the challenge as text only for subscribe + the right verify token."""
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "8812"}
    ok = await env.client.get("/hooks/whatsapp", params=query)
    assert ok.status_code == 200 and ok.text == "8812"
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = await env.client.get("/hooks/whatsapp", params={**query, "hub.verify_token": "x"})
    assert wrong.status_code == 403 and "8812" not in wrong.text
    mode = await env.client.get("/hooks/whatsapp", params={**query, "hub.mode": "unsubscribe"})
    assert mode.status_code == 403


async def test_forged_signature_is_rejected(env: Env) -> None:
    """A bad or missing X-Hub-Signature-256 is refused before parsing; nothing is voted."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.requests_to(BOB))
    body, headers = env.fake.signed(
        env.fake.envelope(env.fake.tap_template(BOB, to_bob.button("a:"), context=to_bob.wamid))
    )
    forged = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert (
        await env.client.post("/hooks/whatsapp", content=body, headers=forged)
    ).status_code == 401
    unsigned = {"Content-Type": "application/json"}
    assert (
        await env.client.post("/hooks/whatsapp", content=body, headers=unsigned)
    ).status_code == 401
    tampered = body.replace(BOB.encode(), ALICE.encode())
    response = await env.client.post("/hooks/whatsapp", content=tampered, headers=headers)
    assert response.status_code == 401
    assert await env.votes(approval_id) == []
    assert env.kinds().count("channel.rejected") == 3
    assert len(env.fake.to(BOB)) == 1  # no acknowledgement went out


async def test_replayed_message_is_dropped(env: Env) -> None:
    """The same signed webhook twice counts once (dedupe on the message id)."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.requests_to(BOB))
    tap = env.fake.tap_template(BOB, to_bob.button("a:"), context=to_bob.wamid)
    await env.deliver(tap)
    await env.deliver(tap)
    assert await env.votes(approval_id) == [("bob", "approve")]
    assert "already handled" in env.fake.to(BOB)[-1].text
    assert env.kinds().count("channel.rejected") == 1


async def test_taps_by_the_wrong_people_are_refused(env: Env) -> None:
    """Finance cannot vote on the manager stage, a stranger is unknown, and the requester
    cannot vote on her own request by text command; each is told why."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.requests_to(BOB))
    await env.deliver(env.fake.tap_template(DANA, to_bob.button("a:"), context=to_bob.wamid))
    assert "may not vote" in env.fake.to(DANA)[-1].text
    await env.deliver(
        env.fake.tap_template("15559999999", to_bob.button("a:"), context=to_bob.wamid)
    )
    assert "directory" in env.fake.to("15559999999")[-1].text
    await env.deliver(env.fake.text(CAROL, f"/approve {approval_id}"))
    assert "requested this action" in env.fake.to(CAROL)[-1].text
    assert await env.votes(approval_id) == []


async def test_taps_after_the_decision_or_expiry_are_refused(env: Env) -> None:
    """Once denied, an approve tap changes nothing; after the deadline a tap is refused."""
    denied = await env.ask()
    await env.drain()
    to_bob = only(env.requests_to(BOB))
    await env.deliver(env.fake.text(ALICE, f"/deny {denied} not this quarter"))
    await env.deliver(env.fake.tap_template(BOB, to_bob.button("a:"), context=to_bob.wamid))
    assert (await env.gw.approvals.get(denied)).approval.state.value == "denied"
    assert await env.votes(denied) == [("alice", "deny")]

    expiring = await env.ask(amount=800)
    await env.drain()
    latest = env.requests_to(BOB)[-1]
    env.clock.advance(hours=2)
    await env.deliver(env.fake.tap_template(BOB, latest.button("a:"), context=latest.wamid))
    assert "expired" in env.fake.to(BOB)[-1].text.lower()
    assert await env.votes(expiring) == []


async def test_deny_asks_for_a_reason_and_the_next_text_denies(env: Env) -> None:
    """The Deny button records nothing but asks why; the user's next text is the reason."""
    approval_id = await env.ask()
    await env.drain()
    to_alice = only(env.requests_to(ALICE))
    tap = env.fake.tap_template(ALICE, to_alice.button("d:"), context=to_alice.wamid)
    await env.deliver(tap)
    await env.deliver(tap)  # Meta delivers at least once: still one question
    questions = [m for m in env.fake.to(ALICE) if m.text.startswith("Why deny")]
    question = only(questions)
    assert question.text.startswith(f"Why deny request {approval_id}?")
    assert await env.votes(approval_id) == []
    await env.deliver(env.fake.text(ALICE, "vendor is not approved"))
    stored = await env.gw.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.decided_reason == "vendor is not approved"
    assert env.fake.to(ALICE)[-1].text.startswith("Denied by Alice Ng")


async def test_a_reply_to_the_question_denies_and_commands_work(env: Env) -> None:
    """Replying (quoting) the deny question is the reason; a malformed command gets help."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.requests_to(BOB))
    await env.deliver(env.fake.text(BOB, f"/approve {approval_id} yes please"))
    assert "approve or deny" in env.fake.to(BOB)[-1].text
    await env.deliver(env.fake.tap_template(BOB, to_bob.button("d:"), context=to_bob.wamid))
    question = env.fake.to(BOB)[-1]
    env.clock.advance(minutes=30)  # too late for "the next text", but a reply still counts
    await env.deliver(env.fake.text(BOB, "duplicate payment", context=question.wamid))
    stored = await env.gw.approvals.get(approval_id)
    assert stored.approval.decided_reason == "duplicate payment"
    assert stored.approval.votes[0].person == "bob"


async def test_window_closed_after_all_resends_as_template(env: Env) -> None:
    """If WhatsApp reports 131047 for a free-form request (asynchronously, or at once), the
    channel forgets the window and sends the approved template instead."""
    env.channel.last_inbound[BOB] = env.clock() - timedelta(hours=1)  # we think it is open
    await env.ask()
    await env.drain()
    interactive = only(env.requests_to(BOB))
    assert interactive.type == "interactive"
    status = only(env.fake.failed_statuses)
    assert status["id"] == interactive.wamid
    await env.deliver(statuses=[status])
    resent = env.requests_to(BOB)[-1]
    assert resent.type == "template" and resent.button("a:") == interactive.button("a:")
    assert BOB not in env.channel.last_inbound

    env.channel.last_inbound[ALICE] = env.clock()
    env.fake.fail_next(400, 131047, "Re-engagement message")
    stored = await env.gw.approvals.get(await env.ask(amount=600))
    message = build(
        stored,
        env.gw.policy.directory,
        public_url="http://c",
        recipient=env.gw.policy.directory.get("bob"),
        token="t" * 22,
    )
    sent = await env.channel.send(message, ALICE)
    assert env.fake.by_id(sent.ref["message_id"]).type == "template"


async def test_a_500_then_success_delivers_once(env: Env) -> None:
    """WhatsApp failing once with 500 is retried; each approver gets exactly one request."""
    env.fake.fail_next(500, 2, "Service temporarily unavailable")
    await env.ask()
    await env.drain()
    assert len(env.requests_to(ALICE)) == 1 and len(env.requests_to(BOB)) == 1
    assert [c.status for c in env.fake.calls].count(500) == 1
    assert env.kinds().count("delivery.sent") == 2


async def test_platform_errors_map_to_channel_errors(env: Env) -> None:
    """Throttling and 5xx are retryable, bad parameters and a bad token are not (and the token
    never shows); a notice outside the window without a notice template fails for good."""
    approval_id = await env.ask()
    stored = await env.gw.approvals.get(approval_id)
    message = build(
        stored,
        env.gw.policy.directory,
        public_url="http://c",
        recipient=env.gw.policy.directory.get("bob"),
        token="t" * 22,
    )
    for status, code, retry in [(400, 130429, True), (503, 2, True), (400, 100, False)]:
        env.fake.fail_next(status, code, "nope")
        with pytest.raises(ChannelError) as caught:
            await env.channel.send(message, BOB)
        assert caught.value.retry is retry, code
    settings = {
        "access_token": "EAAG-wrong",
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "phone_number_id": NUMBER_ID,
        "base_url": f"{env.url}/v21.0",
    }
    wrong = WhatsAppChannel(settings, "http://c")
    try:
        with pytest.raises(ChannelError) as caught:
            await wrong.send(message, BOB)
        assert caught.value.retry is False and "EAAG-wrong" not in str(caught.value)
        assert "190" in str(caught.value)
        alert = build(stored, env.gw.policy.directory, public_url="http://c")  # no buttons
        with pytest.raises(ChannelError, match="24 hours") as caught:
            await wrong.send(alert, BOB)
        assert caught.value.retry is False
    finally:
        await wrong.aclose()
    with pytest.raises(ChannelError):
        await env.channel.send(message, "not-a-number")


async def test_other_numbers_statuses_and_stale_messages_are_ignored(env: Env) -> None:
    """A webhook for another phone number of the same app, a delivery status, or a message
    older than Meta's 7-day redelivery period decides nothing."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.requests_to(BOB))
    payload = env.fake.envelope(
        env.fake.tap_template(BOB, to_bob.button("a:"), context=to_bob.wamid)
    )
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    body, headers = env.fake.signed(payload)
    assert (
        await env.client.post("/hooks/whatsapp", content=body, headers=headers)
    ).status_code == 200
    await env.deliver(statuses=[env.fake.status(to_bob.wamid, BOB, "read")])
    stale = env.fake.tap_template(BOB, to_bob.button("a:"), context=to_bob.wamid)
    stale["timestamp"] = str(int((env.clock() - timedelta(days=8)).timestamp()))
    await env.deliver(stale)
    assert await env.votes(approval_id) == []


async def test_settings_are_validated() -> None:
    """Each missing setting is named; secrets never appear in the error."""
    full = {
        "access_token": ACCESS_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "phone_number_id": NUMBER_ID,
    }
    for key in full:
        with pytest.raises(ValueError, match=key) as caught:
            WhatsAppChannel({k: v for k, v in full.items() if k != key}, "http://c")
        assert all(secret not in str(caught.value) for secret in full.values())
    with pytest.raises(ValueError, match="numeric"):
        WhatsAppChannel({**full, "phone_number_id": "abc"}, "http://c")
    channel = WhatsAppChannel(full, "http://c")
    assert channel.base_url == "https://graph.facebook.com/v21.0"
    assert (channel.template_name, channel.template_language) == ("clearance_approval", "en")
    await channel.aclose()
