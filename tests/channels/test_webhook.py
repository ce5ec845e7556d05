"""The signed webhook channel (Standard Webhooks) against a local receiver and sender."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.channels.base import ChannelError, Message, StageView
from clearance.channels.hub import ChannelHub
from clearance.channels.webhook import WebhookChannel
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import FakeServer, serve_in_thread
from clearance.testing.fakes.webhook import WebhookReceiver, WebhookSender, generate_secret
from clearance.testing.outbox import run_outbox

SECRET = generate_secret()
OLD_SECRET = generate_secret()

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {webhook: ext-alice}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {webhook: ext-bob}}
    - {id: carol, name: Carol Diaz, groups: [staff], channels: {webhook: ext-carol}}
    - {id: dana, name: Dana Wu, groups: [finance], channels: {webhook: ext-dana}}
policies:
  default: deny
  rules:
    - id: big
      description: Big transfers need a manager
      actions: [pay]
      when: params.amount > 100
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
        timeout: 4h
channels:
  webhook: {url: "URL", secret: "SECRETS", timeout: 5}
server: {public_url: "http://clearance.test"}
"""


@pytest.fixture
def receiver() -> WebhookReceiver:
    return WebhookReceiver(SECRET)


@pytest.fixture
def server(receiver: WebhookReceiver) -> Iterator[FakeServer]:
    with serve_in_thread(receiver.app) as fake:
        yield fake


def open_gateway(
    tmp_path: Path, clock: FrozenClock, url: str, secrets: str = SECRET
) -> tuple[Gateway, ChannelHub]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("URL", url).replace("SECRETS", secrets))
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    return gateway, ChannelHub.from_settings(gateway)


@pytest.fixture
async def env(
    tmp_path: Path, clock: FrozenClock, server: FakeServer
) -> AsyncIterator[tuple[Gateway, ChannelHub]]:
    gateway, hub = open_gateway(tmp_path, clock, f"{server.url}/events")
    yield gateway, hub
    await hub.aclose()
    await gateway.aclose()


async def drain(hub: ChannelHub, clock: FrozenClock, rounds: int = 3) -> None:
    """Run the dispatcher until nothing is due, letting retry back-offs pass."""
    await run_outbox(hub, clock, rounds=rounds, step=timedelta(seconds=30))


async def post(hub: ChannelHub, body: bytes, headers: dict[str, str]) -> httpx.Response:
    app = create_app(hub.gateway, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/hooks/webhook", content=body, headers=headers)
    channel = hub.channels["webhook"]
    assert isinstance(channel, WebhookChannel)
    await channel.settle()  # the decision.result event goes out in the background
    return response


def kinds(gw: Gateway) -> list[str]:
    return [e.kind for e in iter_entries(gw.db)]


def rejections(gw: Gateway) -> list[str]:
    return [str(e.data.get("reason")) for e in iter_entries(gw.db) if e.kind == "channel.rejected"]


async def request_pay(gw: Gateway, hub: ChannelHub, clock: FrozenClock) -> str:
    result = await gw.check(Request("pay", {"amount": 500, "to": "ACME"}, {"user": "carol"}))
    assert result.approval is not None
    await drain(hub, clock)
    return result.approval.approval.id


def token_for(receiver: WebhookReceiver, address: str) -> str:
    event = next(e for e in receiver.events("approval.requested") if e["recipient"] == address)
    return str(event["approve_token"])


async def test_happy_path_request_decision_and_update(
    env: tuple[Gateway, ChannelHub], receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """A signed event reaches each approver; a signed decision approves; the update follows."""
    gw, hub = env
    result = await gw.check(Request("pay", {"amount": 500, "to": "ACME"}, {"user": "carol"}))
    assert result.approval is not None
    approval_id = result.approval.approval.id
    waiter = asyncio.create_task(gw.approvals.wait(approval_id, timeout=10))
    await drain(hub, clock)

    requested = receiver.events("approval.requested")
    assert sorted(e["recipient"] for e in requested) == ["ext-alice", "ext-bob"]
    assert all(d.verified for d in receiver.attempts)
    event = next(e for e in requested if e["recipient"] == "ext-bob")
    assert event["approval_id"] == approval_id and event["action"] == "pay"
    assert event["params"] == {"amount": 500, "to": "ACME"}
    assert event["stage"] == {"index": 0, "name": "manager", "count": 1}
    assert event["decide_url"] == "http://clearance.test/hooks/webhook"
    assert event["reasons"] and event["expires_at"].startswith("2026-11-24T18:00")
    assert event["state"] == "pending" and event["approve_token"]
    first = receiver.delivered[0]
    assert first.webhook_id.startswith("msg_") and first.headers["webhook-signature"][:3] == "v1,"

    body, headers = WebhookSender(SECRET).decision(
        user="ext-bob", token=event["approve_token"], decision="approve", timestamp=clock()
    )
    response = await post(hub, body, headers)
    assert response.status_code == 200
    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    assert [(v.person, v.channel) for v in stored.approval.votes] == [("bob", "webhook")]

    await drain(hub, clock)
    updates = receiver.events("approval.updated")
    assert sorted(e["recipient"] for e in updates) == ["ext-alice", "ext-bob"]
    assert all("Approved by Bob Ortiz" in e["status"] for e in updates)
    assert all(e["approve_token"] is None and e["decide_url"] is None for e in updates)
    result_event = receiver.events("decision.result")
    assert result_event and result_event[0]["ok"] is True


async def test_forged_signature_is_rejected(
    env: tuple[Gateway, ChannelHub], receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """A decision signed with another secret is refused with 401 and records no vote."""
    gw, hub = env
    approval_id = await request_pay(gw, hub, clock)
    body, headers = WebhookSender(generate_secret()).decision(
        user="ext-bob", token=token_for(receiver, "ext-bob"), decision="approve", timestamp=clock()
    )
    assert (await post(hub, body, headers)).status_code == 401
    good_body, good_headers = WebhookSender(SECRET).decision(
        user="ext-bob", token=token_for(receiver, "ext-bob"), decision="approve", timestamp=clock()
    )
    tampered = good_body.replace(b"approve", b"deny")
    assert (await post(hub, tampered, good_headers)).status_code == 401
    missing = {k: v for k, v in good_headers.items() if k != "webhook-signature"}
    assert (await post(hub, good_body, missing)).status_code == 401
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert rejections(gw) == [
        "bad webhook signature",
        "bad webhook signature",
        "missing webhook signature headers",
    ]


async def test_stale_or_future_timestamp_is_rejected(
    env: tuple[Gateway, ChannelHub], receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """A correctly signed decision more than five minutes old (or ahead) is refused."""
    gw, hub = env
    approval_id = await request_pay(gw, hub, clock)
    sender = WebhookSender(SECRET)
    token = token_for(receiver, "ext-bob")
    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        body, headers = sender.decision(
            user="ext-bob", token=token, decision="approve", timestamp=clock() + skew
        )
        assert (await post(hub, body, headers)).status_code == 401
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert rejections(gw) == ["webhook timestamp outside the 5-minute window"] * 2


async def test_replayed_event_is_dropped(
    env: tuple[Gateway, ChannelHub], receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """The same webhook-id twice counts once; the replay is audited and answered as refused."""
    gw, hub = env
    approval_id = await request_pay(gw, hub, clock)
    body, headers = WebhookSender(SECRET).decision(
        user="ext-bob", token=token_for(receiver, "ext-bob"), decision="deny", comment="no"
    )
    headers = WebhookSender(SECRET).sign(body, msg_id="evt-1", timestamp=clock())
    assert (await post(hub, body, headers)).status_code == 200
    assert (await post(hub, body, headers)).status_code == 200
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "denied" and len(stored.approval.votes) == 1
    assert rejections(gw) == ["replayed event evt-1"]
    results = receiver.events("decision.result")
    assert [r["ok"] for r in results] == [True, False]


async def test_rotation_accepts_the_old_secret_listed_second(
    tmp_path: Path, clock: FrozenClock, receiver: WebhookReceiver, server: FakeServer
) -> None:
    """With "new old" configured we sign with the new secret and accept either inbound."""
    gw, hub = open_gateway(tmp_path, clock, f"{server.url}/events", f"{SECRET} {OLD_SECRET}")
    try:
        approval_id = await request_pay(gw, hub, clock)
        assert receiver.events("approval.requested")  # verified with the new secret only
        token = token_for(receiver, "ext-bob")
        stranger = WebhookSender(generate_secret()).decision(
            user="ext-bob", token=token, decision="approve", timestamp=clock()
        )
        assert (await post(hub, *stranger)).status_code == 401
        old = WebhookSender(OLD_SECRET).decision(
            user="ext-bob", token=token, decision="approve", timestamp=clock()
        )
        assert (await post(hub, *old)).status_code == 200
        assert (await gw.approvals.get(approval_id)).approval.state.value == "approved"
    finally:
        await hub.aclose()
        await gw.aclose()


async def test_receiver_500_is_retried_and_delivered_once(
    env: tuple[Gateway, ChannelHub], receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """A receiver answering 500 gets the same webhook-id again and counts it once."""
    gw, hub = env
    receiver.fail = 1
    await request_pay(gw, hub, clock)
    statuses = [a.status for a in receiver.attempts]
    assert statuses.count(500) == 1 and statuses.count(200) == 2
    failed = next(a for a in receiver.attempts if a.status == 500)
    retried = [a for a in receiver.attempts if a.webhook_id == failed.webhook_id]
    assert [a.status for a in retried] == [500, 200]
    # Same event; only the opaque token is new (the dispatcher issues one per attempt).
    strip = [{**a.payload, "approve_token": None} for a in retried]
    assert strip[0] == strip[1]
    assert len(receiver.events("approval.requested")) == 2
    assert kinds(gw).count("delivery.sent") == 2 and "delivery.failed" not in kinds(gw)


async def test_clicks_by_the_wrong_people_or_too_late_are_refused(
    env: tuple[Gateway, ChannelHub], receiver: WebhookReceiver, clock: FrozenClock
) -> None:
    """The requester, someone outside the stage and a stranger are refused; so are decisions
    after the request was decided or expired."""
    gw, hub = env
    approval_id = await request_pay(gw, hub, clock)
    sender = WebhookSender(SECRET)
    for user in ("ext-carol", "ext-dana", "ext-nobody"):
        body, headers = sender.decision(
            user=user, approval_id=approval_id, decision="approve", timestamp=clock()
        )
        assert (await post(hub, body, headers)).status_code == 200
    results = receiver.events("decision.result")
    assert [r["ok"] for r in results] == [False, False, False]
    assert "directory" in results[2]["text"]
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert rejections(gw) == ["unknown webhook user 'ext-nobody'"]

    # Decided: Alice approves; Bob's later click changes nothing.
    alice = sender.decision(
        user="ext-alice", token=token_for(receiver, "ext-alice"), decision="approve",
        timestamp=clock(),
    )  # fmt: skip
    await post(hub, *alice)
    bob = sender.decision(
        user="ext-bob", token=token_for(receiver, "ext-bob"), decision="deny", timestamp=clock()
    )
    await post(hub, *bob)
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "approved"
    assert [v.person for v in stored.approval.votes] == ["alice"]
    assert receiver.events("decision.result")[-1]["ok"] is False

    # Expired: a second request, answered after its deadline.
    second = await request_pay(gw, hub, clock)
    token = next(
        e["approve_token"]
        for e in receiver.events("approval.requested")
        if e["approval_id"] == second and e["recipient"] == "ext-bob"
    )
    clock.advance(hours=5)
    late = sender.decision(user="ext-bob", token=token, decision="approve", timestamp=clock())
    await post(hub, *late)
    stored = await gw.approvals.get(second)
    assert stored.approval.state.value == "expired" and stored.approval.votes == ()
    assert receiver.events("decision.result")[-1]["ok"] is False


async def test_malformed_and_non_post_callbacks_are_rejected(
    env: tuple[Gateway, ChannelHub], clock: FrozenClock
) -> None:
    """A signed body that is not a decision is a 400; a GET is a 405; neither records a vote."""
    gw, hub = env
    sender = WebhookSender(SECRET)
    for body in (b"not json", b"[1]", b'{"user": "ext-bob", "decision": "maybe", "token": "x"}'):
        response = await post(hub, body, sender.sign(body, timestamp=clock()))
        assert response.status_code == 400
        assert b"ext-bob" not in response.content
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/hooks/webhook")).status_code == 405
    assert kinds(gw).count("channel.rejected") == 4
    assert "vote.recorded" not in kinds(gw)


def test_settings_errors_name_the_key_and_never_the_secret() -> None:
    """Missing or malformed settings fail at load with the key's name, never its value."""
    public = "http://clearance.test"
    with pytest.raises(ValueError, match="'url'"):
        WebhookChannel({"secret": SECRET}, public)
    with pytest.raises(ValueError, match="'secret'"):
        WebhookChannel({"url": "http://127.0.0.1:9/x"}, public)
    bad = "whsec_not*base64!secret-value"
    with pytest.raises(ValueError, match="secret #2") as caught:
        WebhookChannel({"url": "http://127.0.0.1:9/x", "secret": f"{SECRET} {bad}"}, public)
    assert bad not in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(ValueError, match="'timeout'"):
        WebhookChannel({"url": "http://127.0.0.1:9/x", "secret": SECRET, "timeout": "x"}, public)


def _message() -> Message:
    return Message(
        approval_id="apr_1",
        action="pay",
        params={"amount": 1},
        reasons=("because",),
        requester="Carol",
        agent=None,
        stage=StageView(0, "manager", 1),
        expires_at=datetime(2026, 11, 24, 18, 0, tzinfo=UTC),
        state="pending",
        status_line="Waiting for manager (stage 1 of 1)",
        approve_token="tok",
        deny_token="tok",
    )


@pytest.mark.parametrize(("status", "retry"), [(500, True), (429, True), (400, False)])
async def test_receiver_errors_map_to_channel_errors(
    receiver: WebhookReceiver, server: FakeServer, status: int, retry: bool
) -> None:
    """5xx and 429 are worth retrying; other 4xx are not; the error never carries the body."""
    receiver.fail, receiver.fail_status = 1, status
    channel = WebhookChannel({"url": f"{server.url}/e", "secret": SECRET}, "http://c.test")
    try:
        with pytest.raises(ChannelError) as caught:
            await channel.send(_message(), "ext-bob")
        assert caught.value.retry is retry and f"HTTP {status}" in str(caught.value)
        sent = await channel.send(_message(), "ext-bob")
        assert sent.ref["address"] == "ext-bob" and receiver.delivered
    finally:
        await channel.aclose()


async def test_unreachable_receiver_is_a_retryable_error() -> None:
    """A receiver that refuses connections is a retryable ChannelError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings: dict[str, Any] = {"url": f"http://127.0.0.1:{port}/e", "secret": SECRET}
    channel = WebhookChannel(settings, "http://c.test")
    try:
        with pytest.raises(ChannelError) as caught:
            await channel.send(_message(), "ext-bob")
        assert caught.value.retry is True
    finally:
        await channel.aclose()


def _with_agents(
    tmp_path: Path, clock: FrozenClock, url: str, agents: str
) -> tuple[Gateway, ChannelHub]:
    path = tmp_path / "p.yaml"
    text = POLICY.replace("URL", url).replace("SECRETS", SECRET)
    path.write_text(text.replace("timeout: 5}", f"timeout: 5, agents: {agents}}}"))
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    return gateway, ChannelHub.from_settings(gateway)


async def test_the_agents_system_hears_each_decision_once(
    tmp_path: Path, clock: FrozenClock, server: FakeServer, receiver: WebhookReceiver
) -> None:
    """With `agents:`, a listed agent's request, once decided, is reported to the webhook as
    a signed `approval.decided` (a caller that cannot long-poll needs nothing else); another
    agent's is not; a receiver failure is retried with the same webhook-id."""
    gw, hub = _with_agents(tmp_path, clock, f"{server.url}/events", "[billing-bot]")
    try:
        mine = await gw.check(
            Request("pay", {"amount": 500, "to": "ACME"}, {"user": "carol", "agent": "billing-bot"})
        )
        other = await gw.check(
            Request("pay", {"amount": 600, "to": "ACME"}, {"user": "carol", "agent": "hr-bot"})
        )
        assert mine.approval is not None and other.approval is not None
        await drain(hub, clock)
        receiver.fail = 6  # every event of the next round is answered 500 once, then accepted
        await gw.approvals.decide(mine.approval.approval.id, person="alice", decision="approve")
        await gw.approvals.decide(
            other.approval.approval.id, person="bob", decision="deny", comment="no"
        )
        await run_outbox(hub, clock, rounds=8, step=timedelta(seconds=60))
        decided = receiver.events("approval.decided")
        assert [(e["approval_id"], e["state"]) for e in decided] == [
            (mine.approval.approval.id, "approved")
        ]
        event = decided[0]
        assert event["agent"] == "billing-bot"
        assert [v["person"] for v in event["approval"]["votes"]] == ["alice"]
        attempts = [a for a in receiver.attempts if a.type == "approval.decided"]
        assert len(attempts) >= 2 and len({a.webhook_id for a in attempts}) == 1
        assert all(a.verified for a in attempts)
    finally:
        await hub.aclose()
        await gw.aclose()


def test_agents_setting_is_checked(tmp_path: Path, clock: FrozenClock) -> None:
    """`agents:` must name agents (or '*'); anything else is refused when channels load."""
    with pytest.raises(ValueError, match="agents"):
        _with_agents(tmp_path, clock, "http://127.0.0.1:9/events", "[1, 2]")
