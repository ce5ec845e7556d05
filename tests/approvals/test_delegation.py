"""Delegation (out of office): the rules of naming a delegate, votes in the delegator's seat,
routing to the delegate, the audit ("bob for alice") and the web inbox page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from clearance.approvals import VoteRejected, cast_vote, summary
from clearance.audit.export import iter_entries
from clearance.audit.writer import WriteTx
from clearance.channels.hub import ChannelHub
from clearance.delegation import (
    DelegationError,
    active_map,
    get_delegation,
    resolve_delegates,
    set_delegation,
)
from clearance.gateway import Gateway
from clearance.identity import passwords
from clearance.policy import Request, load_policy_text
from clearance.server.app import create_app
from clearance.store.database import Database
from clearance.store.reads import read
from clearance.testing import FrozenClock, MemoryChannel
from clearance.testing.outbox import run_outbox

from ..fixtures import csrf_of, inbox_as, policy_gateway
from .factories import SOON, approve, away_for_a_week, deny, new, plan, req, run, stage

POLICY = """
version: 1
directory:
  people:
    - {id: alice, groups: [managers], channels: {chat: C-ALICE}}
    - {id: bob, groups: [staff], channels: {chat: C-BOB}}
    - {id: carol, groups: [staff], channels: {chat: C-CAROL}}
    - {id: dana, groups: [finance], channels: {chat: C-DANA}}
    - {id: erin, groups: [finance], channels: {chat: C-ERIN}}
policies:
  default: deny
  rules:
    - id: big
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [alice]}
          - {name: finance, approvers: [group:finance]}
        timeout: 8h
channels:
  chat: {kind: memory, secret: chat-secret}
"""
DIRECTORY = load_policy_text(POLICY).directory
WEEK = timedelta(days=7)


def delegated(*pairs: tuple[str, str], requester: str = "carol"):  # type: ignore[no-untyped-def]
    """Manager alice, then finance dana or erin; with the given delegations."""
    a = new(plan(stage("manager", req("alice")), stage("finance", req("dana", "erin"))), requester)
    return replace(a, delegations=pairs)


# -- pure: votes in a delegator's seat ------------------------------------------------------------


def test_delegate_votes_in_the_delegators_seat() -> None:
    """bob, alice's delegate, approves for alice: the vote records on_behalf_of and the stage
    is met; the request was routed to bob, not alice."""
    a = delegated(("alice", "bob"))
    assert a.open_voters() == ("bob",)
    assert a.pending_on("bob") and a.pending_on("alice")
    t = cast_vote(a, approve("bob"), SOON)
    vote = t.approval.votes[0]
    assert (vote.person, vote.on_behalf_of) == ("bob", "alice")
    assert t.approval.stage_index == 1
    assert t.approval.stage_voters(0) == ("alice",)


def test_delegator_and_delegate_count_once() -> None:
    """After bob approved for alice, alice's own vote is refused (and the other way round):
    the two of them count once, whoever is first."""
    s = stage("two", req("alice", "dana", required=2))
    a = replace(new(plan(s)), delegations=(("alice", "bob"),))
    after_bob = cast_vote(a, approve("bob"), SOON).approval
    with pytest.raises(VoteRejected) as info:
        cast_vote(after_bob, approve("alice"), SOON)
    assert info.value.code == "already_counted" and "bob for alice" in info.value.message
    after_alice = cast_vote(a, approve("alice"), SOON).approval
    with pytest.raises(VoteRejected) as info:
        cast_vote(after_alice, approve("bob"), SOON)
    assert info.value.code == "not_eligible"


def test_delegate_cannot_vote_twice_under_two_names() -> None:
    """dana, a finance approver and erin's delegate, approving once uses her up: she cannot
    approve again in erin's seat."""
    s = stage("two", req("dana", "erin", required=2))
    a = replace(new(plan(s)), delegations=(("erin", "dana"),))
    once = cast_vote(a, approve("dana"), SOON).approval
    assert once.votes[0].on_behalf_of is None
    again = cast_vote(once, approve("dana"), SOON)  # a repeat: recorded once, no second seat
    assert not again.changed and again.approval.stage_progress(0)[0].needed == 1
    assert not once.pending_on("dana")


def test_delegate_vote_that_would_strand_a_later_stage_is_refused() -> None:
    """Stage 1 [alice], stage 2 [dana], alice→dana. dana approving stage 1 for alice would
    use her up (one person counts once, in any seat) and leave stage 2 with nobody: it is
    refused `needed_later`, naming alice, who may still approve; the request is routed to
    alice, not dana. After alice's own approval dana completes stage 2."""
    a = new(plan(stage("manager", req("alice")), stage("finance", req("dana"))))
    a = replace(a, delegations=(("alice", "dana"),))
    assert a.open_voters() == ("alice",)
    assert a.pending_on("alice") and not a.pending_on("dana")
    with pytest.raises(VoteRejected) as info:
        cast_vote(a, approve("dana"), SOON)
    assert info.value.code == "needed_later"
    assert info.value.message.endswith("stage 1 of 2 (manager) may be approved by: alice")
    after_alice = run(a, approve("alice"))
    assert after_alice.open_voters() == ("dana",) and after_alice.pending_on("dana")
    done = run(after_alice, approve("dana"))
    assert done.state.value == "approved"


def test_a_delegate_who_voted_is_used_up_for_later_stages() -> None:
    """bob approved stage 1 for alice; stage 2 [bob, erin] needs 1: only erin can fill it
    (bob voted, in alice's seat), and a plan whose stage 2 needs both is refused at bob's
    vote instead of hanging (the completability check counts the delegate, not only the
    seat)."""
    one = new(plan(stage("manager", req("alice")), stage("finance", req("bob", "erin"))))
    one = replace(one, delegations=(("alice", "bob"),))
    after_bob = run(one, approve("bob"))
    assert after_bob.open_voters() == ("erin",) and not after_bob.pending_on("bob")
    with pytest.raises(VoteRejected) as info:
        cast_vote(after_bob, approve("bob"), SOON)
    assert info.value.code == "already_counted"
    both = new(
        plan(stage("manager", req("alice")), stage("finance", req("bob", "erin", required=2)))
    )
    both = replace(both, delegations=(("alice", "bob"),))
    assert not both.can_still_complete("bob", seat="alice") and both.can_still_complete("alice")
    with pytest.raises(VoteRejected) as info:
        cast_vote(both, approve("bob"), SOON)
    assert info.value.code == "needed_later"
    assert run(both, approve("alice"), approve("bob"), approve("erin")).state.value == "approved"


def test_the_decision_names_who_voted_for_whom() -> None:
    """bob approves alice's one-stage request for her: the decided reason (the API's
    `decided_reason` and `summary`, the audit's `approval.decided`) says "bob for alice",
    the same wording as the vote's audit entry (`Vote.acting`); the stage's progress keeps
    alice's seat and names the vote that filled it."""
    a = replace(new(plan(stage("manager", req("alice")))), delegations=(("alice", "bob"),))
    done = run(a, approve("bob"))
    assert done.decided_reason == "approved by bob for alice (manager)"
    assert summary(done) == "approved — by bob for alice (manager)"
    (progress,) = done.stage_progress(0)
    assert progress.counted == ("alice",)
    assert [v.acting() for v in progress.votes] == ["bob for alice"]
    assert progress.votes[0].acting(str.upper) == "BOB for ALICE"
    own = run(new(plan(stage("manager", req("alice")))), approve("alice"))
    assert own.decided_reason == "approved by alice (manager)"


def test_a_delegate_can_deny_for_the_delegator() -> None:
    """A delegate's denial denies the request and names whom it stood in for."""
    t = cast_vote(delegated(("alice", "bob")), deny("bob", "not now"), SOON)
    assert t.approval.state.value == "denied"
    assert t.approval.votes[0].on_behalf_of == "alice"


def test_forged_on_behalf_of_is_refused() -> None:
    """A caller claiming to vote for someone who did not name them is refused."""
    a = delegated(("alice", "bob"))
    with pytest.raises(VoteRejected) as info:
        cast_vote(a, replace(approve("carol"), on_behalf_of="alice"), SOON)
    assert info.value.code in {"not_delegate", "self_approval"}
    with pytest.raises(VoteRejected) as info:
        cast_vote(a, replace(approve("erin"), on_behalf_of="alice"), SOON)
    assert info.value.code == "not_delegate"


def test_delegate_who_is_the_requester_is_skipped() -> None:
    """A delegate who requested the action never stands in: the request stays with the
    delegator, and the requester's vote is refused."""
    a = delegated(("alice", "carol"))
    assert a.open_voters() == ("alice",)
    with pytest.raises(VoteRejected) as info:
        cast_vote(a, approve("carol"), SOON)
    assert info.value.code == "self_approval"
    assert resolve_delegates({"alice": "carol"}, ["alice"], "carol") == ()


def test_chains_are_followed_but_not_onto_the_requester() -> None:
    """a→b→c routes a's requests to c; a chain that reaches the requester stops before it."""
    assert resolve_delegates({"a": "b", "b": "c"}, ["a"], None) == (("a", "c"),)
    assert resolve_delegates({"a": "b", "b": "c"}, ["a"], "c") == (("a", "b"),)
    assert resolve_delegates({"a": "b", "b": "a"}, ["a"], None) == (("a", "b"),)


# -- the store: naming a delegate ---------------------------------------------------------------


async def test_naming_a_delegate_and_its_bad_paths(database: Database) -> None:
    """A delegate is someone else in the directory, until a future time, without loops; a new
    delegation replaces the old one."""
    now = FrozenClock()()

    def attempt(delegator: str, delegate: str, until: timedelta = WEEK) -> str:
        try:
            with database.begin() as conn:
                set_delegation(
                    conn, DIRECTORY, delegator=delegator, delegate=delegate, until=now + until,
                    now=now,
                )  # fmt: skip
        except DelegationError as exc:
            return exc.code
        return "ok"

    assert attempt("alice", "zed") == "unknown_person"
    assert attempt("zed", "alice") == "unknown_person"
    assert attempt("alice", "alice") == "self_delegation"
    assert attempt("alice", "bob", -timedelta(days=1)) == "until_in_past"
    assert attempt("alice", "bob", timedelta(0)) == "until_in_past"
    assert attempt("alice", "bob") == "ok"
    assert attempt("bob", "alice") == "delegation_loop"
    assert attempt("bob", "dana") == "ok"
    assert attempt("dana", "alice") == "delegation_loop"  # alice → bob → dana → alice
    assert attempt("alice", "erin") == "ok"  # replaces alice → bob
    with database.connect() as conn:
        assert active_map(conn, now) == {"alice": "erin", "bob": "dana"}
        assert active_map(conn, now + WEEK) == {}
        found = get_delegation(conn, "alice")
    assert found is not None and found.delegate == "erin"


# -- the gateway: routing, audit, channels ------------------------------------------------------


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    async with policy_gateway(tmp_path, POLICY, clock) as gateway:
        yield gateway


async def test_requests_route_to_the_delegate_and_the_audit_says_bob_for_alice(
    gw: Gateway, clock: FrozenClock
) -> None:
    """With alice away, her request goes to bob; his vote moves it on and is audited as
    "bob for alice"; the creation entry lists the delegation."""
    away_for_a_week(gw, "alice", "bob")
    hub = ChannelHub.from_settings(gw)
    chat = MemoryChannel.instances["chat"]
    result = await gw.check(Request("pay", {}, {"user": "carol"}))
    assert result.approval is not None
    approval_id = result.approval.approval.id
    assert result.approval.approval.delegations == (("alice", "bob"),)
    await run_outbox(hub, clock, rounds=1, step=timedelta(0))
    assert [a for a, _ in chat.sent] == ["C-BOB"]
    stored = await gw.approvals.decide(approval_id, person="bob", decision="approve")
    assert stored.approval.stage_index == 1
    entries = [e for e in iter_entries(gw.db) if e.approval_id == approval_id]
    created = next(e for e in entries if e.kind == "approval.created")
    assert created.data["delegations"] == ["bob for alice"]
    vote = next(e for e in entries if e.kind == "vote")
    assert vote.approver == "bob" and vote.data["acting"] == "bob for alice"
    assert vote.data["on_behalf_of"] == "alice"
    done = await gw.approvals.decide(approval_id, person="dana", decision="approve")
    reason = "approved by bob for alice (manager), dana (finance)"
    assert done.approval.decided_reason == reason
    entries = [e for e in iter_entries(gw.db) if e.approval_id == approval_id]
    decided = next(e for e in entries if e.kind == "approval.decided")
    assert decided.data["reason"] == reason
    await hub.aclose()


async def test_delegation_made_after_the_request_does_not_apply_to_it(gw: Gateway) -> None:
    """Delegations are captured when a request is created: bob cannot vote on alice's older
    request, and alice still can."""
    result = await gw.check(Request("pay", {}, {"user": "carol"}))
    assert result.approval is not None
    away_for_a_week(gw, "alice", "bob")
    approval_id = result.approval.approval.id
    with pytest.raises(Exception) as info:
        await gw.approvals.decide(approval_id, person="bob", decision="approve")
    assert getattr(info.value, "code", None) == "not_eligible"
    done = await gw.approvals.decide(approval_id, person="alice", decision="approve")
    assert done.approval.stage_index == 1


async def test_delegate_requester_keeps_the_request_with_the_delegator(gw: Gateway) -> None:
    """alice delegated to bob, but bob asks: the request is not routed to him."""
    away_for_a_week(gw, "alice", "bob")
    result = await gw.check(Request("pay", {}, {"user": "bob"}))
    assert result.approval is not None
    assert result.approval.approval.delegations == ()
    assert result.approval.approval.open_voters() == ("alice",)


# -- the web inbox ------------------------------------------------------------------------------


async def test_inbox_delegation_page(gw: Gateway, clock: FrozenClock) -> None:
    """An approver names a delegate in the inbox (CSRF-checked, bad dates and loops refused),
    sees it, and ends it; each change is audited with the web channel."""

    def give(tx: WriteTx) -> None:
        passwords.set_password(tx.conn, "alice", "correct-horse-battery", clock())

    await gw.writer.run(give)
    app = create_app(gw, scheduler=False, channels=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/ui/delegation")).status_code == 303  # sign in first
        login = await client.get("/ui/login")
        token = csrf_of(login.text)
        signed = await client.post(
            "/ui/login",
            data={"person": "alice", "password": "correct-horse-battery", "csrf_token": token},
        )
        assert signed.status_code == 303
        page = await client.get("/ui/delegation")
        assert page.status_code == 200 and "You have no delegate." in page.text
        csrf = csrf_of(page.text)
        forged = await client.post(
            "/ui/delegation", data={"delegate": "bob", "until": "2026-12-01"}
        )
        assert forged.status_code == 403
        past = await client.post(
            "/ui/delegation", data={"delegate": "bob", "until": "2020-01-01", "csrf_token": csrf}
        )
        assert past.status_code == 400 and "not in the future" in past.text
        bad = await client.post(
            "/ui/delegation", data={"delegate": "bob", "until": "soon", "csrf_token": csrf}
        )
        assert bad.status_code == 400
        me = await client.post(
            "/ui/delegation", data={"delegate": "alice", "until": "2026-12-24", "csrf_token": csrf}
        )
        assert me.status_code == 400
        ok = await client.post(
            "/ui/delegation", data={"delegate": "bob", "until": "2026-12-24", "csrf_token": csrf}
        )
        assert ok.status_code == 303
        page = await client.get("/ui/delegation")
        assert "Your delegate is <strong>bob</strong>" in page.text
        ended = await client.post("/ui/delegation/end", data={"csrf_token": csrf})
        assert ended.status_code == 303
        assert "You have no delegate." in (await client.get("/ui/delegation")).text
    kinds = [(e.kind, e.channel) for e in iter_entries(gw.db) if e.kind.startswith("delegation")]
    assert kinds == [("delegation.set", "web"), ("delegation.cleared", "web")]
    assert await read(gw.db, lambda c: get_delegation(c, "alice")) is None


async def test_request_page_shows_delegates_and_routing(gw: Gateway, clock: FrozenClock) -> None:
    """The request page lists the delegates in force and the votes cast by delegates."""
    away_for_a_week(gw, "alice", "bob")

    def give(tx: WriteTx) -> None:
        passwords.set_password(tx.conn, "bob", "correct-horse-battery", clock())

    await gw.writer.run(give)
    result = await gw.check(Request("pay", {}, {"user": "carol"}))
    assert result.approval is not None
    approval_id = result.approval.approval.id
    async with inbox_as(gw, "bob", "correct-horse-battery", set_password=False) as client:
        inbox = await client.get("/ui")
        assert approval_id in inbox.text  # routed to the delegate's inbox
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert page.status_code == 200
        assert "bob for alice" in page.text
        csrf = csrf_of(page.text)
        voted = await client.post(
            f"/ui/approvals/{approval_id}/decide",
            data={"decision": "approve", "comment": "", "csrf_token": csrf},
        )
        assert voted.status_code in (200, 303)
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert "Votes by delegates: bob for alice (approved)" in page.text


async def test_api_lets_the_delegate_see_and_decide(gw: Gateway) -> None:
    """Through the HTTP API the delegate sees the request routed to them, decides it, and the
    approval reads "bob for alice"; a request made before the delegation stays hidden from
    bob (delegations are captured at creation)."""
    from clearance.identity import keys

    before = await gw.check(Request("pay", {}, {"user": "carol"}))
    assert before.approval is not None
    away_for_a_week(gw, "alice", "bob")
    now = gw.clock()
    bob_key = gw.writer.run_sync(
        lambda tx: keys.create_key(tx.conn, kind="person", subject="bob", now=now).token
    )
    result = await gw.check(Request("pay", {}, {"user": "carol"}))
    assert result.approval is not None
    approval_id = result.approval.approval.id
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        bob = {"authorization": f"Bearer {bob_key}"}
        hidden = await client.get(f"/v1/approvals/{before.approval.approval.id}", headers=bob)
        assert hidden.status_code == 404
        seen = await client.get(f"/v1/approvals/{approval_id}", headers=bob)
        assert seen.status_code == 200 and seen.json()["delegations"] == ["bob for alice"]
        voted = await client.post(
            f"/v1/approvals/{approval_id}/decisions", json={"decision": "approve"}, headers=bob
        )
        assert voted.status_code == 200, voted.text
        assert voted.json()["votes"][0]["on_behalf_of"] == "alice"
