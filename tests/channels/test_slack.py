"""The Slack channel against a local fake of the Slack Web API, driven through slack_sdk."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.channels.base import ChannelError, Message, StageView
from clearance.channels.hub import ChannelHub
from clearance.channels.slack import SlackChannel
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import FakeServer, serve_in_thread
from clearance.testing.fakes.slack import FakeSlack
from clearance.testing.outbox import run_outbox

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {slack: U0ALICE}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {slack: U0BOB}}
    - {id: carol, name: Carol Diaz, groups: [staff], channels: {slack: U0CAROL}}
    - {id: dana, name: Dana Li, groups: [finance], channels: {slack: U0DANA}}
policies:
  default: deny
  rules:
    - id: pay
      description: Payments need a manager
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
        timeout: 1h
channels:
  slack: {SETTINGS}
server: {public_url: "http://clearance.test"}
"""

Hooks = Callable[[bytes, dict[str, str]], Awaitable[httpx.Response]]
GwFactory = Callable[..., Awaitable[tuple[Gateway, ChannelHub]]]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeSlack, FakeServer]]:
    fake = FakeSlack()
    with serve_in_thread(fake.app) as running:
        yield fake, running


@pytest.fixture
def slack(server: tuple[FakeSlack, FakeServer]) -> FakeSlack:
    server[0].reset()
    return server[0]


@pytest.fixture
def base_url(server: tuple[FakeSlack, FakeServer]) -> str:
    return f"{server[1].url}/api/"


@pytest.fixture
async def make_gw(
    tmp_path: Path, clock: FrozenClock, slack: FakeSlack, base_url: str
) -> AsyncIterator[GwFactory]:
    opened: list[tuple[Gateway, ChannelHub]] = []

    async def make(**overrides: Any) -> tuple[Gateway, ChannelHub]:
        settings = {
            "bot_token": slack.bot_token,
            "signing_secret": slack.signing_secret,
            "base_url": base_url,
            **overrides,
        }
        path = tmp_path / f"p{len(opened)}.yaml"
        path.write_text(POLICY.replace("{SETTINGS}", json.dumps(settings)))
        db = f"sqlite:///{tmp_path}/c{len(opened)}.db"
        gateway = Gateway.open(path, database_url=db, clock=clock)
        hub = ChannelHub.from_settings(gateway)
        opened.append((gateway, hub))
        return gateway, hub

    yield make
    for gateway, hub in opened:
        await hub.aclose()
        await gateway.aclose()


@pytest.fixture
async def gw_hub(make_gw: GwFactory) -> tuple[Gateway, ChannelHub]:
    return await make_gw()


@pytest.fixture
def hooks(gw_hub: tuple[Gateway, ChannelHub]) -> Hooks:
    gateway, hub = gw_hub
    app = create_app(gateway, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub

    async def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/hooks/slack", content=body, headers=headers)

    return post


async def drain(hub: ChannelHub, clock: FrozenClock, rounds: int = 3) -> None:
    """Run the dispatcher until nothing is due, letting short retry back-offs pass."""
    await run_outbox(hub, clock, rounds=rounds, step=timedelta(seconds=10))


async def ask(gateway: Gateway, requester: str = "carol") -> str:
    result = await gateway.check(
        Request("pay", {"amount": 500, "to": "ACME <!channel>"}, {"user": requester})
    )
    assert result.approval is not None
    return result.approval.approval.id


def ref_of(slack: FakeSlack, user: str) -> dict[str, str]:
    """The Slack message (channel, ts) posted for `user` (a DM, or one mentioning them)."""
    for (channel, ts), message in slack.messages.items():
        if channel == "D" + user[1:] or f"<@{user}>" in json.dumps(message["blocks"]):
            return {"channel": channel, "ts": ts}
    raise LookupError(user)


def now(clock: FrozenClock) -> int:
    return int(clock().timestamp())


def kinds(gateway: Gateway) -> list[str]:
    return [e.kind for e in iter_entries(gateway.db)]


def rejections(gateway: Gateway) -> list[str]:
    return [
        str(e.data.get("reason")) for e in iter_entries(gateway.db) if e.kind == "channel.rejected"
    ]


async def votes(gateway: Gateway, approval_id: str) -> tuple[Any, ...]:
    return (await gateway.approvals.get(approval_id)).approval.votes


def has_buttons(message: dict[str, Any]) -> bool:
    return any(block["type"] == "actions" for block in message["blocks"])


async def test_click_approves_the_waiting_agent_and_refreshes_the_messages(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """A signed Approve click decides the request the agent waits on; every message is redrawn."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    waiter = asyncio.create_task(gateway.approvals.wait(approval_id, timeout=10))
    await drain(hub, clock)

    posts = slack.calls_to("chat.postMessage")
    assert sorted(c.args["channel"] for c in posts) == ["U0ALICE", "U0BOB"]
    assert all(c.token == slack.bot_token for c in posts)
    bob = ref_of(slack, "U0BOB")
    message = slack.messages[(bob["channel"], bob["ts"])]
    assert "Approval needed: pay" in message["text"]
    text = json.dumps(message["blocks"])
    assert "Carol Diaz" in text and "Payments need a manager" in text and "Stage 1 of 1" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text  # agent input is escaped
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    approve, deny, link = actions["elements"]
    assert (approve["action_id"], approve["style"]) == ("clearance_approve", "primary")
    assert (deny["action_id"], deny["style"]) == ("clearance_deny", "danger")
    assert approve["value"] == deny["value"] and approval_id not in approve["value"]
    assert link["url"] == f"http://clearance.test/ui/approvals/{approval_id}"

    link_click = slack.click("U0BOB", bob, "open")  # Slack reports link clicks too: no vote
    assert (await hooks(*slack.signed(link_click, timestamp=now(clock)))).status_code == 200
    assert await votes(gateway, approval_id) == ()

    body, headers = slack.signed(slack.click("U0BOB", bob), timestamp=now(clock))
    response = await hooks(body, headers)
    assert response.status_code == 200

    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    assert [(v.person, v.channel) for v in stored.approval.votes] == [("bob", "slack")]
    await drain(hub, clock)
    assert len(slack.messages) == 2
    for message in slack.messages.values():
        assert not has_buttons(message)
        assert "Approved by Bob Ortiz" in message["text"]
    assert slack.ephemeral == []


async def test_deny_opens_a_modal_and_its_submission_denies_with_the_reason(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """Deny asks for a reason in a modal; only the submitted modal records the denial."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    waiter = asyncio.create_task(gateway.approvals.wait(approval_id, timeout=10))
    await drain(hub, clock)
    bob = ref_of(slack, "U0BOB")

    click = slack.click("U0BOB", bob, "deny")
    response = await hooks(*slack.signed(click, timestamp=now(clock)))
    assert response.status_code == 200
    [opened] = slack.calls_to("views.open")
    assert opened.args["trigger_id"] == click["trigger_id"]
    view = opened.args["view"]
    assert view["callback_id"] == "clearance_deny_reason"
    assert json.loads(view["private_metadata"])["token"] == click["actions"][0]["value"]
    assert await votes(gateway, approval_id) == ()

    submission = slack.submit("U0BOB", "Not this vendor")
    response = await hooks(*slack.signed(submission, timestamp=now(clock)))
    assert response.status_code == 200 and response.content == b""  # closes the modal

    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "denied"
    assert stored.approval.decided_reason == "Not this vendor"
    await drain(hub, clock)
    message = slack.messages[(bob["channel"], bob["ts"])]
    assert "Denied by Bob Ortiz: Not this vendor" in message["text"] and not has_buttons(message)


async def test_forged_signature_is_rejected_before_anything_counts(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """A click signed with another secret gets 401, an audit entry, and no vote."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    await drain(hub, clock)
    payload = slack.click("U0BOB", ref_of(slack, "U0BOB"))
    body, headers = slack.signed(payload, timestamp=now(clock), secret="not-the-secret")
    response = await hooks(body, headers)
    assert response.status_code == 401
    unsigned = await hooks(body, {"content-type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    assert rejections(gateway) == ["bad Slack signature", "missing Slack signature headers"]
    assert await votes(gateway, approval_id) == ()
    assert slack.ephemeral == [] and slack.calls_to("chat.update") == []


async def test_stale_timestamp_is_rejected(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """A correctly signed click older than five minutes is refused (replay window)."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    await drain(hub, clock)
    payload = slack.click("U0BOB", ref_of(slack, "U0BOB"))
    response = await hooks(*slack.signed(payload, timestamp=now(clock) - 301))
    assert response.status_code == 401
    assert rejections(gateway) == ["stale Slack request timestamp (older than 5 minutes)"]
    assert await votes(gateway, approval_id) == ()


async def test_replayed_click_counts_once(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """The same signed click delivered twice records one vote; the replay is refused."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    await drain(hub, clock)
    body, headers = slack.signed(slack.click("U0BOB", ref_of(slack, "U0BOB")), timestamp=now(clock))
    assert (await hooks(body, headers)).status_code == 200
    assert (await hooks(body, headers)).status_code == 200
    assert [v.person for v in await votes(gateway, approval_id)] == ["bob"]
    assert [e["text"] for e in slack.ephemeral] == ["This click was already handled."]
    assert len(rejections(gateway)) == 1 and "replayed event" in rejections(gateway)[0]


async def test_clicks_by_people_who_may_not_decide_are_refused(
    make_gw: GwFactory, slack: FakeSlack, clock: FrozenClock
) -> None:
    """In a shared channel, the requester, a non-approver and a stranger are each refused."""
    gateway, hub = await make_gw(channel="C0APPROVALS")
    app = create_app(gateway, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    approval_id = await ask(gateway, requester="alice")
    await drain(hub, clock)
    assert {c.args["channel"] for c in slack.calls_to("chat.postMessage")} == {"C0APPROVALS"}
    bob = ref_of(slack, "U0BOB")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for user in ["U0ALICE", "U0DANA", "U0STRANGER"]:
            body, headers = slack.signed(slack.click(user, bob), timestamp=now(clock))
            response = await client.post("/hooks/slack", content=body, headers=headers)
            assert response.status_code == 200
    assert await votes(gateway, approval_id) == ()
    refused = {e["user"]: e["text"] for e in slack.ephemeral}
    assert set(refused) == {"U0ALICE", "U0DANA", "U0STRANGER"}
    assert all(e["channel"] == "C0APPROVALS" for e in slack.ephemeral)
    assert "requested this action" in refused["U0ALICE"]
    assert "may not vote" in refused["U0DANA"]
    assert "directory" in refused["U0STRANGER"]
    assert "vote.rejected" in kinds(gateway)
    assert all(has_buttons(m) for m in slack.messages.values())  # nothing changed


async def test_clicks_after_the_decision_or_the_deadline_are_refused(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """A late click on a decided request, or on an expired one, records nothing."""
    gateway, hub = gw_hub
    decided = await ask(gateway)
    await drain(hub, clock)
    alice_first = slack.click("U0ALICE", ref_of(slack, "U0ALICE"))  # rendered before the vote
    await hooks(*slack.signed(slack.click("U0BOB", ref_of(slack, "U0BOB")), timestamp=now(clock)))
    await hooks(*slack.signed(alice_first, timestamp=now(clock)))
    assert [v.person for v in await votes(gateway, decided)] == ["bob"]
    assert len(slack.ephemeral) == 1 and slack.ephemeral[0]["user"] == "U0ALICE"

    slack.reset()
    expired = await ask(gateway)
    await drain(hub, clock)
    late = slack.click("U0BOB", ref_of(slack, "U0BOB"))
    clock.advance(hours=2)
    response = await hooks(*slack.signed(late, timestamp=now(clock)))
    assert response.status_code == 200
    stored = await gateway.approvals.get(expired)
    assert stored.approval.state.value == "expired" and stored.approval.votes == ()
    assert [e["user"] for e in slack.ephemeral] == ["U0BOB"]
    assert "expired" in slack.ephemeral[0]["text"]


async def test_malformed_but_signed_body_is_a_bad_request(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock, hooks: Hooks
) -> None:
    """A correctly signed body that is neither an interaction payload nor a slash command is
    refused with 400."""
    from clearance.channels.slack import sign

    gateway, _ = gw_hub
    body = b"event=hello&text=hello"
    stamp = str(now(clock))
    headers = {
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": sign(slack.signing_secret, stamp, body),
    }
    assert (await hooks(body, headers)).status_code == 400
    assert rejections(gateway) == ["malformed Slack interaction payload"]


async def test_server_errors_are_retried_and_the_request_is_delivered_once(
    gw_hub: tuple[Gateway, ChannelHub], slack: FakeSlack, clock: FrozenClock
) -> None:
    """Slack answering 500 then 429 delays the sends; each approver still gets one message."""
    gateway, hub = gw_hub
    slack.fail_next(500, 429)
    await ask(gateway)
    await drain(hub, clock, rounds=4)
    assert [c.status for c in slack.calls if c.method == "chat.postMessage"] == [500, 429, 200, 200]
    assert sorted(c.args["channel"] for c in slack.calls_to("chat.postMessage")) == [
        "U0ALICE",
        "U0BOB",
    ]
    assert kinds(gateway).count("delivery.sent") == 2
    assert "delivery.failed" not in kinds(gateway)


def message(**overrides: Any) -> Message:
    from datetime import UTC, datetime

    fields: dict[str, Any] = {
        "approval_id": "apr_1",
        "action": "pay",
        "params": {"amount": 5},
        "reasons": ("because",),
        "requester": "Carol",
        "agent": None,
        "stage": StageView(0, "manager", 1),
        "expires_at": datetime(2026, 11, 24, 15, 0, tzinfo=UTC),
        "state": "pending",
        "status_line": "Waiting for manager (stage 1 of 1)",
        "approve_token": "tok",
        "deny_token": "tok",
        "inbox_url": "http://clearance.test/ui/approvals/apr_1",
    }
    return Message(**{**fields, **overrides})


async def test_platform_errors_map_to_channel_errors(slack: FakeSlack, base_url: str) -> None:
    """invalid_auth is permanent, rate limits and 5xx are retryable, a dead host is retryable."""
    wrong = SlackChannel(
        {"bot_token": "xoxb-wrong", "signing_secret": "s", "base_url": base_url}, ""
    )
    with pytest.raises(ChannelError) as bad_auth:
        await wrong.send(message(), "U0BOB")
    assert not bad_auth.value.retry and "invalid_auth" in str(bad_auth.value)
    assert "xoxb-wrong" not in str(bad_auth.value)

    good = SlackChannel(
        {"bot_token": slack.bot_token, "signing_secret": "s", "base_url": base_url}, ""
    )
    for status in (429, 503):
        slack.fail_next(status)
        with pytest.raises(ChannelError) as transient:
            await good.send(message(), "U0BOB")
        assert transient.value.retry
    with pytest.raises(ChannelError) as gone:
        await good.update({"channel": "D0BOB", "ts": "1.000001"}, message())
    assert not gone.value.retry and "message_not_found" in str(gone.value)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = SlackChannel(
        {"bot_token": "x", "signing_secret": "s", "base_url": f"http://127.0.0.1:{port}/api/"}, ""
    )
    with pytest.raises(ChannelError) as refused:
        await dead.send(message(), "U0BOB")
    assert refused.value.retry


def test_settings_are_validated_without_echoing_secrets() -> None:
    """A missing key is named in the error; the secrets given are never repeated."""
    with pytest.raises(ValueError, match="'bot_token'") as missing_token:
        SlackChannel({"name": "slack", "signing_secret": "sekrit-signing"}, "")
    assert "sekrit" not in str(missing_token.value)
    with pytest.raises(ValueError, match="'signing_secret'") as missing_secret:
        SlackChannel({"name": "slack", "bot_token": "xoxb-sekrit"}, "")
    assert "sekrit" not in str(missing_secret.value)
    with pytest.raises(ValueError, match="base_url"):
        SlackChannel({"bot_token": "x", "signing_secret": "y", "base_url": "ftp://nope"}, "")
    channel = SlackChannel({"bot_token": "x", "signing_secret": "y"}, "")
    assert channel.base_url == "https://slack.com/api/" and channel.channel is None
