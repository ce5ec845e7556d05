"""Routing and delivery through the durable outbox, with the in-memory channel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock, MemoryChannel, sign_memory_callback
from clearance.testing.outbox import run_outbox

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, email: alice@example.com, groups: [managers],
       channels: {pager: P-ALICE, chat: C-ALICE}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {chat: C-BOB}}
    - {id: carol, groups: [staff], channels: {chat: C-CAROL}}
    - {id: dana, groups: [finance], channels: {chat: C-DANA}}
    - {id: frank, groups: [security], channels: {chat: C-FRANK}}
policies:
  default: deny
  rules:
    - id: big
      description: Big transfers need a manager and finance
      actions: [pay]
      when: params.amount > 100
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
          - {name: finance, approvers: [group:finance]}
    - id: evil
      description: Evil is blocked
      actions: [evil]
      effect: block
      alert: [group:security]
channels:
  chat: {kind: memory, secret: chat-secret}
  pager: {kind: memory, secret: pager-secret, fail: 100, permanent: true}
server: {public_url: "http://clearance.test"}
"""


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    yield gateway
    await gateway.aclose()


@pytest.fixture
def hub(gw: Gateway) -> ChannelHub:
    return ChannelHub.from_settings(gw)


async def drain(hub: ChannelHub, clock: FrozenClock, rounds: int = 10) -> None:
    """Run the dispatcher until nothing is due, letting retry back-offs pass."""
    await run_outbox(hub, clock, rounds=rounds, step=timedelta(minutes=5))


def kinds(gw: Gateway) -> list[str]:
    return [e.kind for e in iter_entries(gw.db)]


async def test_stage_request_reaches_each_approver_and_falls_back(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """Bob gets it on chat; Alice's pager fails for good, so she gets it on chat instead."""
    result = await gw.check(Request("pay", {"amount": 500}, {"user": "carol"}))
    await drain(hub, clock)
    chat = MemoryChannel.instances["chat"]
    addresses = sorted(address for address, _ in chat.sent)
    assert addresses == ["C-ALICE", "C-BOB"]
    message = chat.sent[0][1]
    assert message.approve_token and message.stage.name == "manager"
    assert message.inbox_url.endswith(f"/ui/approvals/{result.approval.approval.id}")  # type: ignore[union-attr]
    assert kinds(gw).count("delivery.failed") == 1  # the pager, once, for alice
    assert kinds(gw).count("delivery.sent") == 2


async def test_click_decides_updates_messages_and_notifies_next_stage(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """A signed click approves stage 1; the messages are refreshed; finance is asked next."""
    result = await gw.check(Request("pay", {"amount": 500}, {"user": "carol"}))
    approval_id = result.approval.approval.id  # type: ignore[union-attr]
    await drain(hub, clock)
    chat = MemoryChannel.instances["chat"]
    bob_message = next(m for a, m in chat.sent if a == "C-BOB")
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    body = json.dumps(
        {
            "event_id": "e1",
            "user": "C-BOB",
            "token": bob_message.approve_token,
            "decision": "approve",
        }
    ).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        headers = {"x-memory-signature": sign_memory_callback("chat-secret", body)}
        response = await c.post("/hooks/chat", content=body, headers=headers)
        assert response.status_code == 200
        replay = await c.post("/hooks/chat", content=body, headers=headers)
        assert replay.status_code == 200
        forged = await c.post("/hooks/chat", content=body, headers={"x-memory-signature": "00"})
        assert forged.status_code == 401
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.stage_index == 1 and [v.person for v in stored.approval.votes] == ["bob"]
    assert chat.acknowledged[0].ok and "stage 1 of 2 done" in chat.acknowledged[0].text
    assert not chat.acknowledged[1].ok  # the replay
    await drain(hub, clock)
    assert any(a == "C-DANA" for a, _ in chat.sent)
    assert chat.updated and "Approved by Bob Ortiz" in chat.updated[-1][1].status_line
    assert kinds(gw).count("channel.rejected") == 2  # the replay and the forgery


async def test_clicks_by_the_wrong_people_are_refused(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """The requester, someone outside the stage and a stranger are all refused."""
    result = await gw.check(Request("pay", {"amount": 500}, {"user": "carol"}))
    approval_id = result.approval.approval.id  # type: ignore[union-attr]
    await drain(hub, clock)
    token = MemoryChannel.instances["chat"].sent[0][1].approve_token
    for n, user in enumerate(["C-CAROL", "C-DANA", "C-NOBODY"]):
        body = json.dumps(
            {"event_id": f"x{n}", "user": user, "token": token, "decision": "approve"}
        ).encode()
        from clearance.channels.base import RawRequest

        raw = RawRequest(
            "POST",
            "/hooks/chat",
            {"x-memory-signature": sign_memory_callback("chat-secret", body)},
            {},
            body,
            clock(),
        )
        await hub.handle("chat", raw)
    outcomes = MemoryChannel.instances["chat"].acknowledged
    assert [o.ok for o in outcomes] == [False, False, False]
    assert "cannot vote" in outcomes[0].text and "directory" in outcomes[2].text
    assert (await gw.approvals.get(approval_id)).approval.votes == ()


async def test_no_route_at_all_is_reported(tmp_path: Path, clock: FrozenClock) -> None:
    """When no approver of a stage can be reached, the trail says so at once."""
    path = tmp_path / "p.yaml"
    path.write_text(
        POLICY.replace(
            "chat: {kind: memory, secret: chat-secret}",
            "chat: {kind: memory, fail: 100, permanent: true}",
        )
    )
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    try:
        await gateway.check(Request("pay", {"amount": 500}, {"user": "carol"}))
        await drain(hub, clock)
        assert "delivery.no_route" in kinds(gateway)
    finally:
        await gateway.aclose()


async def test_blocked_action_alerts_security(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """A block rule's alert reaches the security group through their channel."""
    await gw.check(Request("evil", {}, {"user": "carol"}))
    await drain(hub, clock)
    sent = MemoryChannel.instances["chat"].sent
    assert [(a, m.state) for a, m in sent] == [("C-FRANK", "blocked")]
    assert "BLOCKED: evil" in sent[0][1].status_line


async def test_retry_then_success_sends_once(tmp_path: Path, clock: FrozenClock) -> None:
    """A channel that fails twice then works delivers exactly one message."""
    path = tmp_path / "p.yaml"
    path.write_text(
        POLICY.replace(
            "chat: {kind: memory, secret: chat-secret}", "chat: {kind: memory, secret: s, fail: 2}"
        )
    )
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    try:
        await gateway.check(Request("pay", {"amount": 500}, {"user": "alice"}))
        await drain(hub, clock)
        assert [a for a, _ in MemoryChannel.instances["chat"].sent] == ["C-BOB"]
    finally:
        await gateway.aclose()


async def test_unreachable_stage_warns_the_agent(tmp_path: Path, clock: FrozenClock) -> None:
    """The approval the agent reads carries a warning when nobody could be reached."""
    from clearance.identity import keys as api_keys

    path = tmp_path / "p.yaml"
    path.write_text(
        POLICY.replace(
            "chat: {kind: memory, secret: chat-secret}",
            "chat: {kind: memory, fail: 100, permanent: true}",
        )
    )
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    token = gateway.writer.run_sync(
        lambda tx: api_keys.create_key(tx.conn, kind="agent", subject="bot", now=clock()).token
    )
    try:
        result = await gateway.check(
            Request("pay", {"amount": 500}, {"user": "carol", "agent": "bot"})
        )
        await drain(hub, clock)
        app = create_app(gateway, scheduler=False, inbox=False, channels=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            data = (
                await c.get(
                    f"/v1/approvals/{result.approval.approval.id}",  # type: ignore[union-attr]
                    headers={"authorization": f"Bearer {token}"},
                )
            ).json()
        assert data["warnings"] and "could be reached" in data["warnings"][0]
        assert {d["status"] for d in data["deliveries"]} == {"failed"}
    finally:
        await gateway.aclose()


def test_channels_test_command_sends_a_message(tmp_path: Path) -> None:
    """`clearance channels test chat --to bob` sends through the channel and prints the ref."""
    from typer.testing import CliRunner

    from clearance.cli import app as cli

    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    args = ["--config", str(path), "--database-url", f"sqlite:///{tmp_path}/c.db"]
    result = CliRunner().invoke(cli, ["channels", "test", "chat", "--to", "bob", *args])
    assert result.exit_code == 0, result.output
    assert "sent" in result.output and "C-BOB" in result.output
    result = CliRunner().invoke(cli, ["channels", "test", "chat", "--to", "nobody", *args])
    assert result.exit_code == 1 and "no person" in result.output
    result = CliRunner().invoke(cli, ["channels", "test", "fax", "--to", "bob", *args])
    assert result.exit_code == 1 and "no channel 'fax'" in result.output
