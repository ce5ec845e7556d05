"""Stage routing: `pick: round_robin | least_loaded` pages a few people of a group per
request, fairly, while `required` distinct people are still needed; the rest of the group
joins at `escalate_after`."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clearance.delegation import load
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.schemas import DecisionOut
from clearance.store.reads import read
from clearance.store.schema import routing_cursors
from clearance.testing import FrozenClock

from ..fixtures import policy_gateway
from .factories import away_for_a_week

POLICY = """
version: 1
directory:
  people:
    - {id: ann, groups: [ops, trio]}
    - {id: ben, groups: [ops, trio]}
    - {id: cat, groups: [ops, trio]}
    - {id: dev, groups: [ops]}
    - {id: eve, groups: [ops, leads]}
    - {id: req}
policies:
  default: deny
  rules:
    - id: rr
      actions: [deploy]
      effect: approve
      approval:
        stages:
          - {name: ops, approvers: [group:ops], required: 2, pick: round_robin,
             escalate_after: 1h}
        timeout: 8h
    - id: ll
      actions: [restart]
      effect: approve
      approval:
        stages: [{name: ops, approvers: [group:ops], pick: least_loaded}]
    - id: tight
      actions: [rotate]
      effect: approve
      approval:
        stages:
          - {name: ops, approvers: [group:ops], pick: round_robin}
          - {name: leads, approvers: [group:leads]}
    - id: one
      actions: [page]
      effect: approve
      approval:
        stages: [{name: trio, approvers: [group:trio], pick: round_robin}]
    - id: ll2
      actions: [drain]
      effect: approve
      approval:
        stages: [{name: ops, approvers: [group:ops], required: 2, pick: least_loaded}]
"""


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    async with policy_gateway(tmp_path, POLICY, clock) as gateway:
        yield gateway


async def ask(gw: Gateway, action: str, user: str = "req") -> tuple[str, tuple[str, ...]]:
    result = await gw.check(Request(action, {}, {"user": user}))
    assert result.approval is not None
    a = result.approval.approval
    return a.id, a.plan.stages[0].requirements[0].approvers


async def test_round_robin_is_fair_over_100_requests(gw: Gateway) -> None:
    """Over 100 requests needing 2 of 5, each person is paged exactly 40 times, and every
    request pages 2 different people (never the whole group)."""
    counts: Counter[str] = Counter()
    for _ in range(100):
        _, picked = await ask(gw, "deploy")
        assert len(picked) == 2 and len(set(picked)) == 2
        counts.update(picked)
    assert counts == dict.fromkeys(["ann", "ben", "cat", "dev", "eve"], 40)


async def test_round_robin_passes_over_the_requester(gw: Gateway) -> None:
    """A group member's own request is never routed to them; the rotation goes on."""
    seen: Counter[str] = Counter()
    for _ in range(10):
        _, picked = await ask(gw, "deploy", user="ann")
        assert "ann" not in picked
        seen.update(picked)
    assert set(seen) == {"ben", "cat", "dev", "eve"}


async def test_picked_people_are_required_and_the_group_joins_at_escalate_after(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Only the picked may vote at first; at escalate_after the rest of the group joins and
    two distinct people are still needed."""
    approval_id, picked = await ask(gw, "deploy")
    stored = await gw.approvals.get(approval_id)
    reserve = stored.approval.plan.stages[0].requirements[0].reserve
    assert set(picked) | set(reserve) == {"ann", "ben", "cat", "dev", "eve"}
    outsider = reserve[0]
    with pytest.raises(Exception) as info:
        await gw.approvals.decide(approval_id, person=outsider, decision="approve")
    assert getattr(info.value, "code", None) == "not_eligible"
    await gw.approvals.decide(approval_id, person=picked[0], decision="approve")
    clock.advance(hours=1)
    assert await gw.approvals.fire_due("w") == 1
    done = await gw.approvals.decide(approval_id, person=outsider, decision="approve")
    assert done.approval.state.value == "approved"
    assert [e.people for e in done.approval.routing_log] == [reserve]


async def test_the_check_answer_names_whom_the_pick_paged(gw: Gateway) -> None:
    """The agent's answer (`POST /v1/checks`) names the people paged, and the rest of the
    group as the reserve that joins on escalation, not the whole group as approvers."""
    result = await gw.check(Request("deploy", {}, {"user": "req"}))
    assert result.approval is not None
    plan = result.approval.approval.plan.stages[0].requirements[0]
    answer = result.to_json()["approval"]["stages"][0]
    assert answer["approvers"] == list(plan.approvers) and len(plan.approvers) == 2
    assert answer["reserve"] == list(plan.reserve) and len(plan.reserve) == 3
    decided = result.decision.to_json()["approval"]["stages"][0]
    assert decided["approvers"] == ["ann", "ben", "cat", "dev", "eve"]  # the policy's, audited
    assert "delegations" not in result.to_json()
    sent = DecisionOut.model_validate(result.to_json()).model_dump()  # what the API sends
    assert sent["approval"]["stages"][0]["reserve"] == list(plan.reserve)


async def test_least_loaded_pages_whoever_has_least_waiting(gw: Gateway) -> None:
    """least_loaded spreads requests over the group and prefers the person whose earlier
    requests were decided."""
    first = [await ask(gw, "restart") for _ in range(5)]
    assert sorted(p[0] for _, p in first) == ["ann", "ben", "cat", "dev", "eve"]
    # ann decides hers: she now has the least waiting on her
    ann_request = next(i for i, p in first if p == ("ann",))
    await gw.approvals.decide(ann_request, person="ann", decision="approve")
    _, picked = await ask(gw, "restart")
    assert picked == ("ann",)


async def test_a_pick_that_would_make_the_plan_impossible_is_not_applied(gw: Gateway) -> None:
    """eve is the only lead: picking her for ops would leave the leads stage impossible (one
    person counts once), so that request pages the whole ops group instead."""
    plans = [await ask(gw, "rotate") for _ in range(5)]
    for _, picked in plans:
        assert picked != ("eve",)
    whole = [p for _, p in plans if len(p) > 1]
    assert whole and all("eve" in p for p in whole)


async def test_round_robin_is_one_rotation_whoever_asks(gw: Gateway) -> None:
    """Members of the group asking do not start a rotation of their own (the engine has
    already taken the requester out of the group): req pages ann, ben, cat, ann; then ben
    asks and gets cat, not ann again; a requester whose turn it is is passed over and keeps
    their place. One rotation is stored for the stage."""
    order = [
        (await ask(gw, "page", user))[1]
        for user in ["req", "req", "req", "req", "ben", "req", "cat", "ann", "req"]
    ]
    assert order == [
        ("ann",), ("ben",), ("cat",), ("ann",), ("cat",), ("ben",), ("ann",), ("cat",), ("ben",),
    ]  # fmt: skip
    keys = await read(gw.db, lambda c: list(c.execute(select(routing_cursors.c.key)).scalars()))
    assert len({k.split(":")[1] for k in keys}) == 1


async def test_round_robin_stays_fair_when_members_ask(gw: Gateway) -> None:
    """2 of 5 over 100 requests, asked in turn by members and by someone outside the group:
    never the requester, never someone paged by the request just before, and the pages are
    spread evenly (the requesters do not lose their place)."""
    users = ["ann", "req", "ben", "cat", "req", "dev", "eve"]
    counts: Counter[str] = Counter()
    before: tuple[str, ...] = ()
    for n in range(100):
        user = users[n % len(users)]
        _, picked = await ask(gw, "deploy", user)
        assert len(set(picked)) == 2 and user not in picked
        assert not set(picked) & set(before), (n, before, picked)
        counts.update(picked)
        before = picked
    assert max(counts.values()) - min(counts.values()) <= 2, counts


async def test_least_loaded_counts_load_against_the_delegate(gw: Gateway) -> None:
    """ann is away (ann → ben): a pick of ann pages ben, so it loads ben. Eight requests page
    ben, cat, dev and eve twice each (not ben four times), and the load is ben's. The answer
    to the agent says that ben stands in for ann."""
    away_for_a_week(gw, "ann", "ben")
    paged: Counter[str] = Counter()
    for _ in range(8):
        result = await gw.check(Request("restart", {}, {"user": "req"}))
        assert result.approval is not None
        paged.update(result.approval.approval.open_voters())
    assert paged == {"ben": 2, "cat": 2, "dev": 2, "eve": 2}
    answers = [await gw.check(Request("restart", {}, {"user": "req"})) for _ in range(4)]
    stands_in = [a.to_json().get("delegations") for a in answers]
    assert stands_in == [[["ann", "ben"]]] * 4  # picked or in the reserve, ben answers for ann
    loads = await read(gw.db, lambda c: load(c, ["ann", "ben", "cat", "dev", "eve"]))
    assert loads == {"ann": 0, "ben": 3, "cat": 3, "dev": 3, "eve": 3}


async def test_least_loaded_does_not_give_a_delegate_two_seats(gw: Gateway) -> None:
    """2 of 5 with ann → ben: ann and ben would both reach ben (who counts once), so the
    request pages ann (for ben) and cat: two different people can meet it."""
    away_for_a_week(gw, "ann", "ben")
    result = await gw.check(Request("drain", {}, {"user": "req"}))
    assert result.approval is not None
    a = result.approval.approval
    assert a.plan.stages[0].requirements[0].approvers == ("ann", "cat")
    assert set(a.open_voters()) == {"ben", "cat"}


async def test_an_approver_voting_in_their_own_seat_takes_the_load_off_their_delegate(
    gw: Gateway,
) -> None:
    """2 of 5 with ann → ben: the request picks ann (reaching ben) and cat. ann, back early,
    approves herself: her seat is filled, so the request no longer waits on ben and no longer
    counts in his load (it did when only ben's own vote counted); cat's seat still waits."""
    away_for_a_week(gw, "ann", "ben")
    result = await gw.check(Request("drain", {}, {"user": "req"}))
    assert result.approval is not None
    approval_id = result.approval.approval.id
    loads = await read(gw.db, lambda c: load(c, ["ben", "cat"]))
    assert loads == {"ben": 1, "cat": 1}
    await gw.approvals.decide(approval_id, person="ann", decision="approve")
    stored = await gw.approvals.get(approval_id)
    assert stored is not None and stored.approval.state.value == "pending"
    loads = await read(gw.db, lambda c: load(c, ["ben", "cat"]))
    assert loads == {"ben": 0, "cat": 1}


async def test_round_robin_is_one_rotation_whichever_rules_matched(
    tmp_path: Path, clock: FrozenClock
) -> None:
    """Two approve rules with the same round-robin stage, the second matching only large
    amounts: alternating small and large requests still page ann, ben, cat in turn (a rotation
    keyed by the rules that matched paged each person twice in a row)."""
    path = tmp_path / "two.yaml"
    path.write_text(
        POLICY.split("policies:")[0]
        + "policies:\n  default: deny\n  rules:\n"
        + "".join(
            f"    - id: {rule}\n      actions: [pay]\n{when}      effect: approve\n"
            "      approval:\n"
            "        stages: [{name: trio, approvers: [group:trio], pick: round_robin}]\n"
            for rule, when in (("small", ""), ("large", "      when: params.amount > 100\n"))
        )
    )
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    try:
        paged = []
        for amount in (10, 500, 10, 500, 10, 500):
            result = await gateway.check(Request("pay", {"amount": amount}, {"user": "req"}))
            assert result.approval is not None
            paged.append(result.approval.approval.plan.stages[0].requirements[0].approvers)
        assert paged == [("ann",), ("ben",), ("cat",), ("ann",), ("ben",), ("cat",)], paged
    finally:
        await gateway.aclose()


def _route_new(conn: Any, approval_id: str, pick: Any, stage_name: str) -> Any:
    """Route a new one-stage request (`pick` over ann, ben and cat, one needed) in `conn`'s
    transaction and store it; whom it pages."""
    from clearance.approvals import open_approval
    from clearance.approvals.records import StoredApproval, insert_approval
    from clearance.canonical import binding_hash
    from clearance.delegation import route
    from clearance.policy.model import ResolvedPlan, ResolvedRequirement, ResolvedStage, Routing

    from .factories import NOW

    stage = ResolvedStage(
        stage_name, (ResolvedRequirement(("ann", "ben", "cat"), 1),), routing=Routing(pick=pick)
    )
    actor = {"user": "req"}
    stored = StoredApproval(
        open_approval(
            approval_id=approval_id,
            action="restart",
            params={},
            binding_hash=binding_hash("restart", {}, actor),
            actor=actor,
            plan=ResolvedPlan(stages=(stage,), timeout_s=3600),
            now=NOW,
        )
    )
    routed = route(conn, stored, NOW)
    insert_approval(conn, routed)
    return routed.approval.plan.stages[0].requirements[0].approvers


def test_two_servers_share_least_loaded(pg_migrated_url: str) -> None:
    """Two instances on one PostgreSQL creating requests at the same moment: without a lock
    each would count the same loads and page the same person. The second waits for the first
    to commit (the routing lock), sees the first's pick and pages someone else."""
    import threading
    import time

    from clearance.policy.model import Pick
    from clearance.store.database import open_database

    first_db, second_db = open_database(pg_migrated_url), open_database(pg_migrated_url)
    second: list[tuple[str, ...]] = []

    def other() -> None:
        with second_db.begin() as conn:
            second.append(_route_new(conn, "apr_ll2", Pick.LEAST_LOADED, "ops"))

    try:
        with first_db.begin() as conn:
            first = _route_new(conn, "apr_ll1", Pick.LEAST_LOADED, "ops")
            worker = threading.Thread(target=other)
            worker.start()
            time.sleep(0.5)  # the other instance counts the loads while this one is open
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert first == ("ann",)
        assert second == [("ben",)]
    finally:
        first_db.dispose()
        second_db.dispose()


def test_two_servers_moving_two_rotations_in_opposite_orders_do_not_deadlock(
    pg_migrated_url: str,
) -> None:
    """One instance's transaction moves rotation X then Y, another's Y then X, at once. Each
    rotation's cursor row is locked while it moves: without one lock taken first by every
    pick, each would hold one cursor and wait for the other's (PostgreSQL then aborts one
    with "deadlock detected"). Both commit, and each rotation pages ann then ben."""
    import threading
    import time

    from clearance.policy.model import Pick
    from clearance.store.database import open_database

    first_db, second_db = open_database(pg_migrated_url), open_database(pg_migrated_url)
    pages: dict[str, list[tuple[str, ...]]] = {"x": [], "y": []}
    failed: list[BaseException] = []

    def other() -> None:
        try:
            with second_db.begin() as conn:
                pages["y"].append(_route_new(conn, "apr_y1", Pick.ROUND_ROBIN, "y"))
                time.sleep(0.5)  # the first instance now wants y's cursor
                pages["x"].append(_route_new(conn, "apr_x2", Pick.ROUND_ROBIN, "x"))
        except BaseException as exc:
            failed.append(exc)

    try:
        with first_db.begin() as conn:
            pages["x"].append(_route_new(conn, "apr_x1", Pick.ROUND_ROBIN, "x"))
            worker = threading.Thread(target=other)
            worker.start()
            time.sleep(0.25)  # the other instance has started on y
            pages["y"].append(_route_new(conn, "apr_y2", Pick.ROUND_ROBIN, "y"))
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert failed == []
        assert sorted(pages["x"]) == [("ann",), ("ben",)]
        assert sorted(pages["y"]) == [("ann",), ("ben",)]
    finally:
        first_db.dispose()
        second_db.dispose()
