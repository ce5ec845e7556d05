"""Reminders and escalation through the gateway and the store: durable timers that survive a
restart, fire once with two servers on one PostgreSQL, race votes to one outcome, are audited
and reach the channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from clearance.approvals import jobs
from clearance.audit.export import iter_entries
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.store.reads import read
from clearance.testing import FrozenClock, MemoryChannel
from clearance.testing.outbox import run_outbox

POLICY = """
version: 1
directory:
  people:
    - {id: alice, groups: [managers], channels: {chat: C-ALICE}}
    - {id: bob, groups: [managers], channels: {chat: C-BOB}}
    - {id: dana, groups: [finance-directors], channels: {chat: C-DANA}}
    - {id: erin, groups: [cfo], channels: {chat: C-ERIN}}
    - {id: carol, channels: {chat: C-CAROL}}
policies:
  default: deny
  rules:
    - id: big
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
        timeout: 8h
        remind_after: 1h
        escalate_after: 2h
        escalate_to: [group:finance-directors, group:cfo]
    - id: slow
      actions: [slow]
      effect: approve
      approval:
        stages: [{name: manager, approvers: [alice]}]
        timeout: 1h
        escalate_to: [group:cfo]
        on_timeout: escalate
channels:
  chat: {kind: memory, secret: chat-secret}
"""

H = timedelta(hours=1)


def write_policy(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gateway = Gateway.open(
        write_policy(tmp_path), database_url=f"sqlite:///{tmp_path}/c.db", clock=clock
    )
    yield gateway
    await gateway.aclose()


async def ask(gateway: Gateway, action: str = "pay") -> str:
    result = await gateway.check(Request(action, params={}, actor={"user": "carol"}))
    assert result.approval is not None
    return result.approval.approval.id


def kinds(gateway: Gateway, approval_id: str) -> list[str]:
    return [e.kind for e in iter_entries(gateway.db) if e.approval_id == approval_id]


async def test_timer_is_scheduled_in_the_creating_transaction(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Creating an approval with reminders writes its timer; a decision removes it."""
    approval_id = await ask(gw)
    assert await read(gw.db, lambda c: jobs.due_at(c, approval_id)) == clock() + H
    assert await gw.approvals.next_timer() == clock() + H
    await gw.approvals.decide(approval_id, person="alice", decision="approve")
    assert await read(gw.db, lambda c: jobs.due_at(c, approval_id)) is None


async def test_reminders_and_escalations_fire_once_and_are_audited(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Each due reminder and level fires once however often the scheduler runs; the audit
    records who was reached."""
    approval_id = await ask(gw)
    assert await gw.approvals.fire_due("w1") == 0
    clock.advance(hours=1)
    assert await gw.approvals.fire_due("w1") == 1
    assert await gw.approvals.fire_due("w1") == 0
    clock.advance(hours=1)
    await gw.approvals.fire_due("w1")
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.plan.stages[0].requirements[0].approvers == ("alice", "bob", "dana")
    assert kinds(gw, approval_id).count("approval.reminded") == 2
    escalated = [e for e in iter_entries(gw.db) if e.kind == "approval.escalated"]
    assert len(escalated) == 1 and escalated[0].data["people"] == ["dana"]
    assert escalated[0].data["level"] == 1
    # the escalated director may decide now
    done = await gw.approvals.decide(approval_id, person="dana", decision="approve")
    assert done.approval.state.value == "approved"
    clock.advance(hours=3)
    assert await gw.approvals.fire_due("w1") == 0


async def test_restart_between_scheduling_and_firing(tmp_path: Path, clock: FrozenClock) -> None:
    """A timer written before a restart fires after it, from the store alone."""
    path = write_policy(tmp_path)
    url = f"sqlite:///{tmp_path}/c.db"
    first = Gateway.open(path, database_url=url, clock=clock)
    approval_id = await ask(first)
    await first.aclose()
    clock.advance(hours=2, minutes=1)
    second = Gateway.open(path, database_url=url, clock=clock)
    try:
        assert await second.approvals.fire_due("after-restart") == 1
        stored = await second.approvals.get(approval_id)
        assert [e.kind for e in stored.approval.routing_log] == ["escalation", "reminder"]
        assert await read(second.db, lambda c: jobs.due_at(c, approval_id)) == (
            clock() - timedelta(minutes=1) + H
        )
    finally:
        await second.aclose()


async def test_crash_after_claim_is_retried_after_the_lease(
    gw: Gateway, clock: FrozenClock
) -> None:
    """A timer claimed by a server that died is taken by another once its lease runs out."""
    approval_id = await ask(gw)
    clock.advance(hours=1)
    claimed = await gw.writer.run(lambda tx: jobs.claim(tx.conn, "dead", clock(), 10))
    assert claimed == [approval_id]
    assert await gw.approvals.fire_due("alive") == 0  # leased by the dead one
    clock.advance(seconds=jobs.LEASE.total_seconds() + 1)
    assert await gw.approvals.fire_due("alive") == 1
    assert kinds(gw, approval_id).count("approval.reminded") == 1


async def test_escalation_racing_a_vote_has_one_outcome(gw: Gateway, clock: FrozenClock) -> None:
    """An escalation fired while the deciding vote arrives: both commit through
    compare-and-set, the request is approved once, and nothing fires afterwards."""
    ids = [await ask(gw) for _ in range(10)]
    clock.advance(hours=2)
    results = await asyncio.gather(
        gw.approvals.fire_due("w1"),
        *(gw.approvals.decide(i, person="bob", decision="approve") for i in ids),
    )
    assert all(r.approval.state.value == "approved" for r in results[1:])  # type: ignore[union-attr]
    for approval_id in ids:
        got = kinds(gw, approval_id)
        assert got.count("approval.decided") == 1
        assert got.count("approval.escalated") <= 1
        assert await read(gw.db, lambda c, i=approval_id: jobs.due_at(c, i)) is None
    clock.advance(hours=3)
    assert await gw.approvals.fire_due("w1") == 0


async def test_on_timeout_escalate_extends_the_deadline_in_the_store(
    gw: Gateway, clock: FrozenClock
) -> None:
    """At the deadline `on_timeout: escalate` adds the next level and moves the deadline (the
    expiry scheduler does it); with the chain exhausted the next deadline expires it."""
    approval_id = await ask(gw, "slow")
    clock.advance(hours=1)
    assert await gw.approvals.expire_due() == 1
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "pending"
    assert stored.approval.expires_at == clock() + H
    assert "erin" in stored.approval.plan.stages[0].requirements[0].approvers
    assert await gw.approvals.next_expiry() == clock() + H
    clock.advance(hours=1)
    await gw.approvals.expire_due()
    assert (await gw.approvals.get(approval_id)).approval.state.value == "expired"


async def test_reminder_and_escalation_reach_the_channels(gw: Gateway, clock: FrozenClock) -> None:
    """A reminder re-sends to the approvers who have not voted; an escalation sends to the
    people it added, and only to them."""
    hub = ChannelHub.from_settings(gw)
    chat = MemoryChannel.instances["chat"]
    await ask(gw)
    await run_outbox(hub, clock, rounds=1, step=timedelta(0))
    assert sorted(a for a, _ in chat.sent) == ["C-ALICE", "C-BOB"]
    chat.sent.clear()
    clock.advance(hours=1)
    await gw.approvals.fire_due("w1")
    await run_outbox(hub, clock, rounds=1, step=timedelta(0))
    assert sorted(a for a, _ in chat.sent) == ["C-ALICE", "C-BOB"]
    chat.sent.clear()
    clock.advance(hours=1)
    await gw.approvals.fire_due("w1")
    await run_outbox(hub, clock, rounds=1, step=timedelta(0))
    # level 1 (dana) and reminder 2 (alice, bob, dana) fire together
    assert sorted(a for a, _ in chat.sent) == ["C-ALICE", "C-BOB", "C-DANA"]
    await hub.aclose()


async def test_two_servers_on_one_postgresql_fire_each_escalation_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Two gateways (separate engines and connections) on one PostgreSQL run their schedulers
    at once: every reminder and escalation fires exactly once."""
    clock = FrozenClock()
    path = write_policy(tmp_path)
    one = Gateway.open(path, database_url=pg_url, clock=clock, chain_id="one")
    two = Gateway.open(path, database_url=pg_url, clock=clock, chain_id="two")
    try:
        ids = [await ask(one if n % 2 else two) for n in range(30)]
        clock.advance(hours=2)
        for _ in range(3):
            await asyncio.gather(one.approvals.fire_due("one", 7), two.approvals.fire_due("two", 7))
        for gateway in (one, two):
            await asyncio.gather(
                *(gateway.approvals.fire_due(gateway.writer.chain_id, 100) for _ in range(2))
            )
        entries = list(iter_entries(one.db))
        for approval_id in ids:
            mine = [e.kind for e in entries if e.approval_id == approval_id]
            assert mine.count("approval.escalated") == 1, (approval_id, mine)
            assert mine.count("approval.reminded") == 1, (approval_id, mine)
            stored = await one.approvals.get(approval_id)
            assert [e.level for e in stored.approval.routing_log] == [1, 2]
    finally:
        await one.aclose()
        await two.aclose()


async def test_the_server_scheduler_fires_reminders(tmp_path: Path) -> None:
    """A running server (a real process) reminds at remind_after with nobody reading the
    request: the reminder is in the audit trail."""
    import sqlite3

    import httpx

    from clearance.identity import keys

    from ..serverproc import ServerProcess

    config = tmp_path / "clearance.yaml"
    config.write_text(
        "directory: {people: [{id: alice, groups: [managers]}]}\n"
        "policies:\n  rules:\n    - {id: r, actions: [x], effect: approve,\n"
        "       approval: {approvers: [group:managers], timeout: 1h, remind_after: 1s}}\n"
    )
    db = tmp_path / "c.db"
    setup = Gateway.open(config, database_url=f"sqlite:///{db}")
    now = setup.clock()
    token = setup.writer.run_sync(
        lambda tx: keys.create_key(tx.conn, kind="agent", subject="bot", now=now).token
    )
    await setup.aclose()
    server = ServerProcess(config, f"sqlite:///{db}", tmp_path / "server.log")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            created = await http.post(
                "/v1/checks", json={"action": "x"}, headers={"authorization": f"Bearer {token}"}
            )
            approval_id = created.json()["approval_id"]
        reminded = 0
        for _ in range(100):
            with sqlite3.connect(db) as conn:
                rows = conn.execute(
                    "SELECT count(*) FROM audit_entries WHERE kind = 'approval.reminded' "
                    "AND approval_id = ?",
                    (approval_id,),
                )
                reminded = rows.fetchone()[0]
            if reminded:
                break
            await asyncio.sleep(0.1)
        assert reminded >= 1
    finally:
        server.stop()


async def test_request_page_shows_reminders_and_escalations(
    gw: Gateway, clock: FrozenClock
) -> None:
    """The web inbox's request page lists each reminder and escalation with whom it reached;
    reminders are numbered as sent (after downtime, not by the periods missed)."""
    import re

    import httpx

    from clearance.identity import passwords
    from clearance.server.app import create_app

    gw.writer.run_sync(
        lambda tx: passwords.set_password(tx.conn, "dana", "correct-horse-battery", clock())
    )
    approval_id = await ask(gw)
    clock.advance(hours=2)
    await gw.approvals.fire_due("w1")
    app = create_app(gw, scheduler=False, channels=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        login = await client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None
        await client.post(
            "/ui/login",
            data={"person": "dana", "password": "correct-horse-battery", "csrf_token": token[1]},
        )
        page = await client.get(f"/ui/approvals/{approval_id}")
    assert page.status_code == 200
    # after two hours only the latest due reminder was sent: the first one, whatever its period
    assert "Escalation 1" in page.text and "Reminder 1" in page.text
    assert "Reminder 2" not in page.text
    assert "<td>dana</td>" in page.text
