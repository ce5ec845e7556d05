"""Routing with delegates: a delegator is notified whenever her delegate cannot fill her seat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from clearance.approvals.service import VoteRefused
from clearance.channels.hub import ChannelHub
from clearance.channels.routing import rerouted
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.testing import FrozenClock, MemoryChannel
from clearance.testing.outbox import run_outbox

from ..approvals.factories import approve as vote_approve
from ..approvals.factories import away_for_a_week, new, plan, req, run, stage
from ..fixtures import policy_gateway

POLICY = """
version: 1
directory:
  people:
    - {id: alice, channels: {chat: C-ALICE}}
    - {id: bob, channels: {chat: C-BOB}}
    - {id: carol, channels: {chat: C-CAROL}}
    - {id: dana, channels: {chat: C-DANA}}
    - {id: yan, channels: {chat: C-YAN}}
    - {id: zoe, channels: {chat: C-ZOE}}
policies:
  default: deny
  rules:
    - id: pair
      actions: [pair]
      effect: approve
      approval:
        stages:
          - {name: managers, approvers: [alice, bob], required: 2}
        timeout: 8h
    - id: chain
      actions: [chain]
      effect: approve
      approval:
        stages:
          - {name: first, approvers: [alice]}
          - {name: second, approvers: [dana]}
        timeout: 8h
    - id: later
      actions: [later]
      effect: approve
      approval:
        stages:
          - {name: first, approvers: [alice, yan, zoe], required: 2}
          - {name: second, approvers: [dana, yan]}
        timeout: 8h
    - id: widen
      actions: [widen]
      effect: approve
      approval:
        stages:
          - {name: pair, approvers: [alice, yan], required: 2}
        timeout: 8h
        escalate_after: 1h
        escalate_to: [dana]
channels:
  chat: {kind: memory, secret: chat-secret}
"""


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    async with policy_gateway(tmp_path, POLICY, clock) as gateway:
        yield gateway


@pytest.fixture
async def hub(gw: Gateway) -> AsyncIterator[ChannelHub]:
    """The gateway's channels, closed after the test (passed or not)."""
    channels = ChannelHub.from_settings(gw)
    try:
        yield channels
    finally:
        await channels.aclose()


async def ask(gw: Gateway, action: str) -> str:
    result = await gw.check(Request(action, {}, {"user": "carol"}))
    assert result.approval is not None
    return result.approval.approval.id


async def sent_to(hub: ChannelHub, clock: FrozenClock) -> list[str]:
    """Process the outbox; the addresses sent a request (not updates) since the last call."""
    chat = MemoryChannel.instances["chat"]
    await run_outbox(hub, clock, rounds=1, step=timedelta(0))
    out = [address for address, _ in chat.sent]
    chat.sent.clear()
    return out


async def test_delegator_is_notified_when_her_delegate_holds_a_seat_himself(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """Stage [alice, bob], 2 required, alice→bob: bob can count once, so alice is sent the
    request at creation as well as bob; bob's vote fills his own seat and leaves hers, and
    nobody is sent it twice."""
    away_for_a_week(gw, "alice", "bob")
    approval_id = await ask(gw, "pair")
    assert sorted(await sent_to(hub, clock)) == ["C-ALICE", "C-BOB"]
    voted = await gw.approvals.decide(approval_id, person="bob", decision="approve")
    assert voted.approval.votes[0].on_behalf_of is None
    assert voted.approval.open_voters() == ("alice",)
    assert await sent_to(hub, clock) == []
    done = await gw.approvals.decide(approval_id, person="alice", decision="approve")
    assert done.approval.state.value == "approved"


async def test_delegate_needed_later_leaves_the_request_with_the_delegator(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """Stage 1 [alice], stage 2 [dana], alice→dana: dana's vote for alice would leave stage 2
    with nobody, so stage 1 goes to alice and dana's vote is refused (`needed_later`); after
    alice approves, dana is sent stage 2 and approves it."""
    away_for_a_week(gw, "alice", "dana")
    approval_id = await ask(gw, "chain")
    assert await sent_to(hub, clock) == ["C-ALICE"]
    with pytest.raises(VoteRefused) as info:
        await gw.approvals.decide(approval_id, person="dana", decision="approve")
    assert info.value.code == "needed_later" and "approved by: alice" in info.value.message
    await gw.approvals.decide(approval_id, person="alice", decision="approve")
    assert await sent_to(hub, clock) == ["C-DANA"]
    done = await gw.approvals.decide(approval_id, person="dana", decision="approve")
    assert done.approval.state.value == "approved"


async def test_a_vote_that_reroutes_a_seat_notifies_the_delegator(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """Stage 1 [alice, yan, zoe] needs 2, stage 2 [dana, yan], alice→dana. At first dana may
    stand in for alice (yan is left for stage 2), so alice's seat is routed to dana. Once yan
    approves stage 1, dana is the only one left for stage 2: alice's seat goes back to alice,
    and she is sent the request then."""
    away_for_a_week(gw, "alice", "dana")
    approval_id = await ask(gw, "later")
    assert sorted(await sent_to(hub, clock)) == ["C-DANA", "C-YAN", "C-ZOE"]
    voted = await gw.approvals.decide(approval_id, person="yan", decision="approve")
    assert voted.approval.open_voters() == ("alice", "zoe")
    assert await sent_to(hub, clock) == ["C-ALICE"]
    await gw.approvals.decide(approval_id, person="alice", decision="approve")
    assert await sent_to(hub, clock) == ["C-DANA"]


async def test_an_escalation_that_seats_the_delegate_notifies_the_delegator(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock
) -> None:
    """Stage [alice, yan] needs 2, alice→dana: alice's seat goes to dana. The escalation adds
    dana as an approver herself: her vote would now fill her own seat, so alice's goes back
    to alice, who is sent the request with dana."""
    away_for_a_week(gw, "alice", "dana")
    approval_id = await ask(gw, "widen")
    assert sorted(await sent_to(hub, clock)) == ["C-DANA", "C-YAN"]
    clock.advance(hours=1)
    await gw.approvals.fire_due("w1")
    escalated = (await gw.approvals.get(approval_id)).approval
    assert escalated.open_voters() == ("alice", "yan", "dana")
    assert sorted(await sent_to(hub, clock)) == ["C-ALICE", "C-DANA"]


def test_rerouted_is_who_the_latest_vote_newly_calls_on() -> None:
    """Pure: nothing before any vote or after a vote that completed its stage; the delegator
    after a vote that took her seat away from her delegate; nobody after an ordinary vote."""
    p = plan(
        stage("first", req("alice", "yan", "zoe", required=2)), stage("second", req("dana", "yan"))
    )
    a = replace(new(p), delegations=(("alice", "dana"),))
    assert a.open_voters() == ("dana", "yan", "zoe")
    assert rerouted(a) == ()
    after_yan = run(a, vote_approve("yan"))
    assert rerouted(after_yan) == ("alice",)
    assert rerouted(run(a, vote_approve("zoe"))) == ()
    assert rerouted(run(after_yan, vote_approve("alice"))) == ()  # stage 2 started
