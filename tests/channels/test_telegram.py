"""The Telegram channel against a local fake of the Bot API, driven through python-telegram-bot:
send with inline buttons, callback queries and text commands at /hooks/telegram, edits,
long polling, and everything that must be refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.channels.base import ChannelError, RawRequest
from clearance.channels.hub import ChannelHub
from clearance.channels.telegram import TelegramChannel
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import serve_in_thread
from clearance.testing.fakes.telegram import FakeTelegram, StoredMessage

TOKEN = "777001:AAH-test-token_for-clearance"
SECRET = "hook-secret_123"
ALICE, BOB, CAROL, DANA = 1001, 1002, 1003, 1004

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {telegram: "1001"}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {telegram: "1002"}}
    - {id: carol, name: Carol Diaz, groups: [managers], channels: {telegram: "1003"}}
    - {id: dana, name: Dana Lee, groups: [finance], channels: {telegram: "1004"}}
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
  telegram: {bot_token: "%(token)s", secret_token: "%(secret)s", base_url: "%(url)s",
             mode: %(mode)s}
server: {public_url: "http://clearance.test"}
"""


@dataclass
class Env:
    fake: FakeTelegram
    url: str
    gw: Gateway
    hub: ChannelHub
    client: httpx.AsyncClient
    clock: FrozenClock

    @property
    def channel(self) -> TelegramChannel:
        channel = self.hub.channels["telegram"]
        assert isinstance(channel, TelegramChannel)
        return channel

    async def post(self, update: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
        headers = self.fake.webhook_headers(secret) if secret is not None else {}
        return await self.client.post(
            "/hooks/telegram", content=FakeTelegram.body(update), headers=headers
        )

    async def drain(self, rounds: int = 6) -> None:
        """Run the dispatcher until nothing is due, letting retry back-offs pass."""
        for _ in range(rounds):
            while await self.hub.dispatcher.run_once():
                pass
            self.clock.advance(seconds=31)

    async def ask(self, amount: int = 500, user: str = "carol") -> str:
        result = await self.gw.check(Request("pay", {"amount": amount}, {"user": user}))
        assert result.approval is not None
        return result.approval.approval.id

    def kinds(self) -> list[str]:
        return [e.kind for e in iter_entries(self.gw.db)]

    async def votes(self, approval_id: str) -> list[tuple[str, str]]:
        stored = await self.gw.approvals.get(approval_id)
        return [(v.person, v.decision.value) for v in stored.approval.votes]


@pytest.fixture
def fake() -> Iterator[tuple[FakeTelegram, str]]:
    telegram = FakeTelegram(TOKEN, secret_token=SECRET)
    with serve_in_thread(telegram.app) as server:
        yield telegram, server.url


async def _env(
    tmp_path: Path, clock: FrozenClock, fake: tuple[FakeTelegram, str], mode: str = "webhook"
) -> AsyncIterator[Env]:
    telegram, url = fake
    path = tmp_path / "p.yaml"
    secret = SECRET if mode == "webhook" else ""  # polling: the channel makes up its own
    path.write_text(POLICY % {"token": TOKEN, "secret": secret, "url": url, "mode": mode})
    gw = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gw)
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield Env(telegram, url, gw, hub, client, clock)
    await hub.aclose()
    await gw.aclose()


@pytest.fixture
async def env(
    tmp_path: Path, clock: FrozenClock, fake: tuple[FakeTelegram, str]
) -> AsyncIterator[Env]:
    async for value in _env(tmp_path, clock, fake):
        yield value


def only(messages: list[StoredMessage]) -> StoredMessage:
    assert len(messages) == 1, messages
    return messages[0]


async def test_whole_flow_two_stages_approved(env: Env) -> None:
    """Both managers get buttons; Bob's click passes stage 1, Dana's approves; the agent's
    wait returns approved and every message is edited to the outcome without buttons."""
    approval_id = await env.ask()
    waiter = asyncio.create_task(env.gw.approvals.wait(approval_id, timeout=20))
    await env.drain()
    to_alice, to_bob = only(env.fake.requests_to(ALICE)), only(env.fake.requests_to(BOB))
    assert env.fake.requests_to(CAROL) == []  # the requester is not asked
    assert to_bob.parse_mode == "HTML" and "<b>Approval needed: pay</b>" in to_bob.source
    assert "Carol Diaz wants to run pay" in to_bob.text and "amount: 500" in to_bob.text
    assert f"Request: {approval_id}" in to_bob.text
    assert [len(b["callback_data"].encode()) <= 64 for b in to_bob.buttons] == [True, True]
    assert to_bob.callback_data("a:")[2:] == to_bob.callback_data("d:")[2:]

    response = await env.post(env.fake.click(BOB, to_bob.callback_data("a:"), to_bob))
    assert response.status_code == 200
    answer = env.fake.answers[-1]
    assert "stage 1 of 2 done" in answer["text"] and answer["show_alert"] is False
    await env.drain()
    to_dana = only(env.fake.requests_to(DANA))
    assert to_alice.reply_markup is None and "Approved by Bob Ortiz" in to_alice.text
    assert not waiter.done()

    await env.post(env.fake.click(DANA, to_dana.callback_data("a:"), to_dana))
    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    await env.drain()
    assert to_dana.reply_markup is None and "Approved by Bob Ortiz, Dana Lee" in to_dana.text
    assert to_bob.edits and to_bob.reply_markup is None
    assert await env.votes(approval_id) == [("bob", "approve"), ("dana", "approve")]


async def test_everything_from_the_request_is_escaped(env: Env) -> None:
    """Arguments with HTML in them reach Telegram escaped (the fake parses like Telegram)."""
    result = await env.gw.check(
        Request("pay", {"amount": 900, "memo": "<b>x</b> & <script>"}, {"user": "carol"})
    )
    assert result.approval is not None
    await env.drain()
    message = only(env.fake.requests_to(BOB))
    assert "memo: <b>x</b> & <script>" in message.text  # plain text after Telegram's parsing
    assert "&lt;script&gt;" in message.source


async def test_deny_button_asks_for_reason_and_the_reply_denies(env: Env) -> None:
    """Deny records nothing by itself: it asks for a reason (ForceReply), and the reply to
    that question denies the request with that reason."""
    approval_id = await env.ask()
    await env.drain()
    to_alice = only(env.fake.requests_to(ALICE))
    deny_click = env.fake.click(ALICE, to_alice.callback_data("d:"), to_alice)
    await env.post(deny_click)
    await env.post(deny_click)  # redelivered: still one question
    assert await env.votes(approval_id) == []
    assert len([m for m in env.fake.sent if m.text.startswith("Why deny")]) == 1
    prompt = env.fake.sent[-1]
    assert prompt.chat_id == ALICE and prompt.reply_markup == {
        "force_reply": True,
        "input_field_placeholder": "Reason",
        "selective": True,
    }
    assert prompt.text.startswith(f"Why deny request {approval_id}?")
    assert "reason" in env.fake.answers[-1]["text"]

    await env.post(env.fake.text(ALICE, "not during the freeze", reply_to=prompt))
    stored = await env.gw.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.votes[0].comment == "not during the freeze"
    assert env.fake.sent[-1].text.startswith("Denied by Alice Ng: not during the freeze")
    await env.drain()
    assert to_alice.reply_markup is None and "Denied by Alice Ng" in to_alice.text


async def test_deny_prompt_names_the_request_after_a_restart(env: Env) -> None:
    """Without the in-memory record (a restart), the request id is read from the message."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.fake.requests_to(BOB))
    env.channel._sent.clear()
    await env.post(env.fake.click(BOB, to_bob.callback_data("d:"), to_bob))
    assert env.fake.sent[-1].text.startswith(f"Why deny request {approval_id}?")


async def test_text_commands_decide_and_malformed_ones_explain(env: Env) -> None:
    """`/deny <id> <reason>` denies as the verified sender; malformed commands and plain text
    get help and record nothing; /start tells the user their id."""
    approval_id = await env.ask()
    await env.drain()
    await env.post(env.fake.text(BOB, f"/approve {approval_id} maybe"))
    assert "approve or deny" in env.fake.sent[-1].text
    await env.post(env.fake.text(BOB, f"/deny {approval_id}"))
    assert "needs a reason" in env.fake.sent[-1].text
    await env.post(env.fake.text(BOB, "hello"))
    assert "/approve <request id>" in env.fake.sent[-1].text
    await env.post(env.fake.text(9999, "/start"))
    assert "user id is 9999" in env.fake.sent[-1].text
    assert await env.votes(approval_id) == []

    await env.post(env.fake.text(BOB, f"/deny@clearance_bot {approval_id} budget is frozen"))
    stored = await env.gw.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.votes[0].person == "bob"
    assert stored.approval.decided_reason == "budget is frozen"


async def test_forged_or_missing_secret_is_rejected(env: Env) -> None:
    """A wrong or missing secret-token header is refused before parsing; nothing is voted."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.fake.requests_to(BOB))
    click = env.fake.click(BOB, to_bob.callback_data("a:"), to_bob)
    assert (await env.post(click, secret="guess")).status_code == 401
    assert (await env.post(click, secret=None)).status_code == 401
    bad = await env.client.post(
        "/hooks/telegram", content=b"not json", headers=env.fake.webhook_headers()
    )
    assert bad.status_code == 400
    assert await env.votes(approval_id) == []
    assert env.fake.answers == []
    assert env.kinds().count("channel.rejected") == 3


async def test_replayed_update_is_dropped(env: Env) -> None:
    """The same update_id twice counts once; the replay is audited and answered."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.fake.requests_to(BOB))
    click = env.fake.click(BOB, to_bob.callback_data("a:"), to_bob)
    await env.post(click)
    query = {**click["callback_query"], "id": "replayed-query"}
    env.fake._open_queries.add("replayed-query")
    await env.post({**click, "callback_query": query})
    assert await env.votes(approval_id) == [("bob", "approve")]
    assert "already handled" in env.fake.answers[-1]["text"]
    assert env.kinds().count("channel.rejected") == 1


async def test_clicks_by_the_wrong_people_are_refused(env: Env) -> None:
    """Finance cannot vote on the manager stage, a stranger is not in the directory, and the
    requester cannot vote on her own request (by text command); all are told why."""
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.fake.requests_to(BOB))
    await env.post(env.fake.click(DANA, to_bob.callback_data("a:"), to_bob))
    assert "may not vote" in env.fake.answers[-1]["text"]
    assert env.fake.answers[-1]["show_alert"] is True
    await env.post(env.fake.click(4242, to_bob.callback_data("a:"), to_bob))
    assert "directory" in env.fake.answers[-1]["text"]
    await env.post(env.fake.text(CAROL, f"/approve {approval_id}"))
    assert "requested this action" in env.fake.sent[-1].text
    await env.post(env.fake.click(BOB, "a:not-a-real-token", to_bob))
    assert "not valid" in env.fake.answers[-1]["text"]
    assert await env.votes(approval_id) == []
    assert env.kinds().count("vote.rejected") == 2  # dana and carol reached the service


async def test_clicks_after_the_decision_or_expiry_are_refused(env: Env) -> None:
    """Once denied, a click changes nothing; after the deadline, a click is refused too."""
    denied = await env.ask()
    await env.drain()
    to_bob = only(env.fake.requests_to(BOB))
    await env.post(env.fake.text(ALICE, f"/deny {denied} no"))
    await env.post(env.fake.click(BOB, to_bob.callback_data("a:"), to_bob))
    assert env.fake.answers[-1]["show_alert"] is True
    assert (await env.gw.approvals.get(denied)).approval.state.value == "denied"
    assert await env.votes(denied) == [("alice", "deny")]

    expiring = await env.ask(amount=700)
    await env.drain()
    latest = env.fake.requests_to(BOB)[-1]
    env.clock.advance(hours=2)
    await env.post(env.fake.click(BOB, latest.callback_data("a:"), latest))
    assert "expired" in env.fake.answers[-1]["text"].lower()
    assert await env.votes(expiring) == []


async def test_a_500_then_success_delivers_once(env: Env) -> None:
    """Telegram failing once with 500 is retried; each approver gets exactly one message."""
    env.fake.fail_next("sendMessage", status=500, times=1)
    await env.ask()
    await env.drain()
    assert len(env.fake.requests_to(ALICE)) == 1 and len(env.fake.requests_to(BOB)) == 1
    assert [c.status for c in env.fake.calls_of("sendMessage")].count(500) == 1
    assert env.kinds().count("delivery.sent") == 2


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_platform_errors_map_to_channel_errors(env: Env) -> None:
    """401 and 400 are permanent, 429 and 5xx retryable; the token never shows in errors;
    editing a message the user deleted is not an error."""
    approval_id = await env.ask()
    await env.drain()
    stored = await env.gw.approvals.get(approval_id)
    from clearance.channels.message import build

    message = build(
        stored,
        env.gw.policy.directory,
        public_url="http://c",
        recipient=env.gw.policy.directory.get("bob"),
        token="t" * 22,
    )
    channel = env.channel
    for status, description, retry in [
        (429, "Too Many Requests: retry after 5", True),
        (502, "Bad Gateway", True),
        (403, "Forbidden: bot was blocked by the user", False),
        (400, "Bad Request: chat not found", False),
    ]:
        env.fake.fail_next(
            "sendMessage",
            status=status,
            description=description,
            retry_after=5 if status == 429 else None,
        )
        with pytest.raises(ChannelError) as caught:
            await channel.send(message, str(BOB))
        assert caught.value.retry is retry, status
    wrong = TelegramChannel(
        {"bot_token": "777001:wrong", "secret_token": SECRET, "base_url": env.url}, "http://c"
    )
    try:
        with pytest.raises(ChannelError) as caught:
            await wrong.send(message, str(BOB))
        assert caught.value.retry is False and "777001:wrong" not in str(caught.value)
    finally:
        await wrong.aclose()
    await channel.update({"chat_id": BOB, "message_id": 999_999}, message)  # gone: no error
    with pytest.raises(ChannelError):
        await channel.send(message, "not-a-chat")


def test_settings_are_validated() -> None:
    """Missing or invalid settings fail with a message naming the key, never the secret."""
    with pytest.raises(ValueError, match="bot_token"):
        TelegramChannel({"secret_token": SECRET}, "http://c")
    with pytest.raises(ValueError, match="secret_token is required"):
        TelegramChannel({"bot_token": TOKEN}, "http://c")
    with pytest.raises(ValueError, match="mode") as caught:
        TelegramChannel({"bot_token": TOKEN, "secret_token": SECRET, "mode": "push"}, "http://c")
    with pytest.raises(ValueError, match="secret_token must be") as caught:
        TelegramChannel({"bot_token": TOKEN, "secret_token": "has space!"}, "http://c")
    assert "has space" not in str(caught.value)
    polling = TelegramChannel({"bot_token": TOKEN, "mode": "polling"}, "http://c")
    assert polling.mode == "polling"


async def test_setup_webhook_registers_our_url_and_secret(env: Env) -> None:
    """setWebhook gets <public_url>/hooks/telegram, the secret and the update kinds we use."""
    await env.channel.setup_webhook()
    call = env.fake.calls_of("setWebhook")[-1]
    assert call.params["url"] == "http://clearance.test/hooks/telegram"
    assert call.params["secret_token"] == SECRET
    assert json.loads(call.params["allowed_updates"]) == ["message", "callback_query"]


@pytest.fixture
async def polling_env(
    tmp_path: Path, clock: FrozenClock, fake: tuple[FakeTelegram, str]
) -> AsyncIterator[Env]:
    async for value in _env(tmp_path, clock, fake, mode="polling"):
        yield value


async def test_long_polling_feeds_updates_through_the_hub(polling_env: Env) -> None:
    """In polling mode getUpdates' updates are verified and decided like webhooks, each once;
    the offset confirms them; a webhook still set makes getUpdates fail with 409."""
    env, clock = polling_env, polling_env.clock
    approval_id = await env.ask()
    await env.drain()
    to_bob = only(env.fake.requests_to(BOB))

    async def handle(raw: RawRequest) -> Any:
        return await env.hub.handle("telegram", raw)

    click = env.fake.click(BOB, to_bob.callback_data("a:"), to_bob)
    env.fake.enqueue(click)
    assert await env.channel.poll_once(handle, clock=clock) == 1
    assert await env.votes(approval_id) == [("bob", "approve")]
    assert "stage 1 of 2 done" in env.fake.answers[-1]["text"]
    assert await env.channel.poll_once(handle, clock=clock) == 0  # confirmed by offset
    gets = env.fake.calls_of("getUpdates")
    assert int(gets[-1].params["offset"]) == click["update_id"] + 1
    # the webhook path does not accept updates without the poller's own secret
    assert (await env.post(click, secret=SECRET)).status_code == 401

    env.fake.webhook_url = "https://elsewhere.example/hook"
    with pytest.raises(ChannelError) as caught:
        await env.channel.poll_once(handle)
    assert caught.value.retry is False

    env.fake.enqueue(env.fake.text(DANA, "/help"))
    task = asyncio.create_task(env.channel.run_polling(handle, timeout=1, clock=clock))
    for _ in range(100):
        if any("user id is 1004" in m.text for m in env.fake.sent if m.chat_id == DANA):
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.fake.webhook_url is None  # run_polling removed the webhook first
    assert any(m.chat_id == DANA and "user id is 1004" in m.text for m in env.fake.sent)


def test_render_fits_telegram_limits_and_alerts_parse() -> None:
    """A huge request is cut to Telegram's 4096 characters and still parses; a blocked-action
    alert renders as valid HTML."""
    from datetime import UTC, datetime

    from clearance.channels.base import Message, StageView
    from clearance.channels.telegram import render
    from clearance.testing.fakes.telegram import parse_html

    big = Message(
        approval_id="apr_1",
        action="pay",
        params={f"k{i}": "<&>" * 200 for i in range(60)},
        reasons=("because <reasons>",),
        requester="Carol",
        agent=None,
        stage=StageView(0, "manager", 1),
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
        state="pending",
        status_line="Waiting for manager (stage 1 of 1)",
        inbox_url="http://c/ui/approvals/apr_1?a=1&b=2",
    )
    plain = parse_html(render(big))
    assert len(plain) <= 4096 and "Decide by" in plain and "Request: apr_1" in plain
    alert = Message(**{**{f: getattr(big, f) for f in Message.__slots__}, "state": "blocked"})
    assert parse_html(render(alert)).startswith("⛔ Blocked: pay")
