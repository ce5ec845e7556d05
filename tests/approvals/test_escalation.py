"""Reminders, escalation and deadlines, pure: what is due at `now` and what firing it does;
and the policy keys that configure them (lint errors with file:line and a hint)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from clearance.approvals import VoteRejected, cast_vote, expire, workflow
from clearance.approvals import escalation as esc
from clearance.approvals.model import Approval, ApprovalState
from clearance.policy import PolicyError, load_policy_text
from clearance.policy.engine import Engine
from clearance.policy.model import (
    OnTimeout,
    Pick,
    Request,
    ResolvedStage,
    Routing,
)
from clearance.policy.testing import load_suite, run_suite

from .factories import NOW, approve, deny, new, plan, req, stage

H = timedelta(hours=1)


def routed(
    *,
    remind: int | None = None,
    after: int | None = None,
    to: tuple[tuple[str, ...], ...] = (),
    on_timeout: OnTimeout = OnTimeout.DENY,
    reserve: tuple[str, ...] = (),
    timeout_s: int = 8 * 3600,
) -> Approval:
    """A one-stage approval: alice (plus a reserve), 1 needed, with the given routing."""
    first = replace(
        stage("manager", replace(req("alice"), reserve=reserve)),
        routing=Routing(remind, after, to, on_timeout, Pick.ROUND_ROBIN if reserve else Pick.ALL),
    )
    second = stage("finance", req("dana", "erin"))
    return new(plan(first, second, timeout_s=timeout_s))


def test_nothing_is_due_without_routing() -> None:
    """A plan without routing never schedules a timer and firing changes nothing."""
    a = new(plan(stage("manager", req("alice", "bob"))))
    assert esc.next_due(a) is None
    assert not esc.fire(a, NOW + 5 * H).changed


def test_reminder_due_times_and_one_reminder_after_downtime() -> None:
    """Reminders fall every `remind_after`; after a long gap only one fires, then the next
    is scheduled from the latest period (no burst)."""
    a = routed(remind=3600)
    assert esc.next_due(a) == NOW + H
    assert not esc.fire(a, NOW + 59 * timedelta(minutes=1)).changed
    t = esc.fire(a, NOW + 3 * H + timedelta(minutes=1))
    assert t.kinds == ("approval.reminded",)
    assert t.events[0].people == ("alice",) and t.events[0].level == 3
    assert t.approval.version == a.version + 1
    assert esc.next_due(t.approval) == NOW + 4 * H
    assert not esc.fire(t.approval, NOW + 3 * H + timedelta(minutes=2)).changed


def test_reminder_skips_people_who_already_voted() -> None:
    """A reminder re-notifies only the approvers the stage still waits on."""
    s = replace(stage("both", req("alice", "bob", required=2)), routing=Routing(remind_after_s=60))
    a = cast_vote(new(plan(s)), approve("alice"), NOW + timedelta(seconds=10)).approval
    t = esc.fire(a, NOW + timedelta(seconds=61))
    assert t.events[0].people == ("bob",)
    assert esc.to_notify(t.approval, NOW + timedelta(seconds=61)) == ("bob",)


def test_escalation_levels_widen_then_follow_the_chain() -> None:
    """Level 1 adds the reserve `pick` held back, level 2 the first escalate_to entry; each
    joins the stage's requirement (never the requester) and is recorded once."""
    a = routed(after=3600, to=(("frank", "carol"),), reserve=("bob",))
    assert esc.levels(a.plan.stages[0]) == (("bob",), ("frank", "carol"))
    one = esc.fire(a, NOW + H)
    assert one.kinds == ("approval.escalated",)
    assert one.approval.plan.stages[0].requirements[0].approvers == ("alice", "bob")
    assert one.approval.plan.stages[0].requirements[0].reserve == ("bob",)
    two = esc.fire(one.approval, NOW + 2 * H)
    assert two.events[0].people == ("frank",)  # carol requested it: never added
    assert two.approval.plan.stages[0].requirements[0].approvers == ("alice", "bob", "frank")
    assert two.approval.plan.stages[0].requirements[0].required == 1
    assert not esc.fire(two.approval, NOW + 3 * H).changed  # the chain is exhausted
    assert esc.next_due(two.approval) is None
    # the escalated approver may now vote, and it counts
    voted = cast_vote(two.approval, replace(approve("frank"), at=NOW + 2 * H), NOW + 2 * H)
    assert voted.approval.stage_index == 1


def test_levels_due_together_fire_together_in_one_change() -> None:
    """After downtime every level that fell due fires at once, in one version step."""
    a = routed(after=600, to=(("frank",), ("dana",)), reserve=("bob",))
    t = esc.fire(a, NOW + 2 * H)
    assert [e.level for e in t.events] == [1, 2, 3]
    assert t.approval.version == a.version + 1
    assert set(esc.to_notify(t.approval, NOW + 2 * H)) == {"bob", "frank", "dana"}


def test_later_stage_clock_starts_when_it_opens() -> None:
    """A later stage's timers count from the vote that opened it."""
    s2 = replace(stage("finance", req("dana", "erin")), routing=Routing(remind_after_s=3600))
    a = new(plan(stage("manager", req("alice")), s2, timeout_s=8 * 3600))
    voted = cast_vote(a, replace(approve("alice"), at=NOW + 2 * H), NOW + 2 * H).approval
    assert esc.stage_started_at(voted, 1) == NOW + 2 * H
    assert esc.next_due(voted) == NOW + 3 * H


def test_nothing_fires_past_the_deadline_or_after_a_decision() -> None:
    """Timers never fire on a decided request, nor at/after the deadline (expiry decides)."""
    a = routed(remind=600, after=600, to=(("frank",),), timeout_s=3600)
    assert esc.next_due(a) == NOW + timedelta(seconds=600)
    late = esc.fire(a, NOW + H)
    assert not late.changed
    denied = cast_vote(a, deny("alice", "no"), NOW + timedelta(seconds=1)).approval
    assert esc.next_due(denied) is None and not esc.fire(denied, NOW + H / 2).changed


def test_on_timeout_escalate_moves_the_deadline_then_expires() -> None:
    """`on_timeout: escalate` fires the next level at the deadline and extends it by
    escalate_after; with no level left the request expires."""
    a = routed(after=1800, to=(("frank",),), on_timeout=OnTimeout.ESCALATE, timeout_s=3600)
    # level 1 fired at 30 minutes (before the deadline)
    a = esc.fire(a, NOW + timedelta(minutes=30)).approval
    assert esc.fired(a, esc.ESCALATION) == 1
    b = routed(after=1800, to=(("frank",), ("dana",)), on_timeout=OnTimeout.ESCALATE)
    b = replace(b, expires_at=NOW + H)
    b = esc.fire(b, NOW + timedelta(minutes=30)).approval
    at_deadline = expire(b, NOW + H)
    assert at_deadline.approval.state is ApprovalState.PENDING
    assert at_deadline.kinds == ("approval.escalated",)
    assert at_deadline.approval.expires_at == NOW + H + timedelta(minutes=30)
    final = expire(at_deadline.approval, NOW + 2 * H)
    assert final.approval.state is ApprovalState.EXPIRED
    assert expire(a, NOW + H + timedelta(seconds=1)).approval.state is ApprovalState.EXPIRED


def test_on_timeout_deny_expires_as_before() -> None:
    """Without `on_timeout: escalate` the deadline expires the request, levels left or not."""
    a = routed(after=1800, to=(("frank",),), timeout_s=3600)
    assert expire(a, NOW + H).approval.state is ApprovalState.EXPIRED


def test_vote_arriving_at_the_deadline_escalation_is_one_outcome() -> None:
    """A vote by an escalated approver arriving past the deadline escalates and counts in one
    change; a vote by someone not in any level is refused and the escalation still saved."""
    a = routed(to=(("frank",),), on_timeout=OnTimeout.ESCALATE, timeout_s=3600)
    at = NOW + H + timedelta(seconds=5)
    t = cast_vote(a, replace(approve("frank"), at=at), at)
    assert t.kinds == (
        "approval.escalated",
        "vote.recorded",
        "stage.completed",
        "stage.started",
    )
    assert t.approval.version == a.version + 1
    with pytest.raises(VoteRejected) as info:
        cast_vote(a, replace(approve("zed"), at=at), at)
    assert info.value.code == "not_eligible"
    assert info.value.transition is not None
    assert info.value.transition.kinds == ("approval.escalated",)


def test_cancel_past_an_escalating_deadline_cancels() -> None:
    """Withdrawing past a deadline that escalates records the escalation and the cancel."""
    a = routed(to=(("frank",),), on_timeout=OnTimeout.ESCALATE, timeout_s=3600)
    t = workflow.cancel(a, NOW + 2 * H, "not needed")
    assert t.kinds == ("approval.escalated", "approval.cancelled")
    assert t.approval.state is ApprovalState.CANCELLED


def test_routing_survives_json_round_trip() -> None:
    """Plan routing, reserves and the routing log are stored and read back unchanged."""
    a = routed(remind=600, after=1200, to=(("frank",),), reserve=("bob",))
    a = esc.fire(a, NOW + H).approval
    back = Approval.from_json(a.to_json())
    assert back == a
    assert ResolvedStage.from_json(a.plan.stages[0].to_json()) == a.plan.stages[0]


# -- policy: the YAML keys ----------------------------------------------------------------------

DIRECTORY = """
version: 1
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [managers]}
    - {id: dana, groups: [finance-directors]}
    - {id: erin, groups: [cfo]}
    - {id: carol}
policies:
  default: deny
  rules:
"""


def rule(approval: str) -> str:
    return DIRECTORY + (
        "    - id: big\n"
        "      actions: [pay]\n"
        "      effect: approve\n"
        "      approval:\n" + "".join(f"        {line}\n" for line in approval.strip().splitlines())
    )


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_routing_keys_load_per_approval_and_stage() -> None:
    """Approval-level keys apply to every stage; a stage's own keys override them; the
    decision carries the resolved routing."""
    policy = load_policy_text(
        rule(
            """
stages:
  - {name: manager, approvers: [group:managers], pick: round_robin}
  - {name: finance, approvers: [group:finance-directors], remind_after: 10m}
timeout: 8h
remind_after: 1h
escalate_after: 2h
escalate_to: [group:finance-directors, group:cfo]
on_timeout: escalate
"""
        )
    )
    stages = policy.rules[0].approval.stages  # type: ignore[union-attr]
    assert stages[0].routing == Routing(
        3600, 7200, (("dana",), ("erin",)), OnTimeout.ESCALATE, Pick.ROUND_ROBIN
    )
    assert stages[1].routing is not None and stages[1].routing.remind_after_s == 600
    decision = Engine(policy).evaluate(Request("pay", actor={"user": "carol"}))
    assert decision.approval is not None
    assert decision.approval.stages[0].routing == stages[0].routing
    assert decision.to_json()["approval"]["stages"][0]["routing"]["pick"] == "round_robin"


def test_escalate_after_not_before_timeout_is_an_error_with_a_hint() -> None:
    """escalate_after ≥ timeout (and remind_after ≥ timeout) never fire: a lint error at
    the key's line, with a hint."""
    found = problems(
        rule(
            """
stages: [{name: m, approvers: [group:managers]}]
timeout: 2h
escalate_after: 2h
escalate_to: [group:cfo]
remind_after: 3h
"""
        )
    )
    assert any(
        "p.yaml:19:" in p
        and "escalate_after (7200s) is not before the timeout" in p
        and "hint:" in p
        for p in found
    ), found
    assert any("p.yaml:21:" in p and "remind_after" in p for p in found), found


def test_escalate_after_past_the_timeout_is_each_levels_time_with_on_timeout_escalate() -> None:
    """With on_timeout: escalate, escalate_after at or past the timeout is the time each level
    gets: the deadline fires a level and moves by it, and the timer never fires that level a
    second time. A reminder is judged against the last deadline."""
    escalating = """
stages: [{name: m, approvers: [group:managers]}]
timeout: 1h
escalate_after: 4h
escalate_to: [group:cfo, group:finance-directors]
on_timeout: escalate
remind_after: {remind}
"""
    policy = load_policy_text(rule(escalating.replace("{remind}", "6h")))
    routing = policy.rules[0].approval.stages[0].routing  # type: ignore[union-attr]
    assert routing is not None and routing.escalate_after_s == 4 * 3600
    a = routed(after=4 * 3600, to=(("frank",), ("dana",)), on_timeout=OnTimeout.ESCALATE)
    a = replace(a, expires_at=NOW + H)
    assert not esc.fire(a, NOW + 59 * timedelta(minutes=1)).changed
    first = expire(a, NOW + H)
    assert first.kinds == ("approval.escalated",) and esc.fired(first.approval, "escalation") == 1
    assert first.approval.expires_at == NOW + 5 * H
    assert not esc.fire(first.approval, NOW + 4 * H).changed  # level 1's timer: fired already
    second = expire(first.approval, NOW + 5 * H)
    assert second.kinds == ("approval.escalated",) and second.approval.expires_at == NOW + 9 * H
    assert not esc.fire(second.approval, NOW + 8 * H).changed
    assert expire(second.approval, NOW + 9 * H).approval.state is ApprovalState.EXPIRED

    found = problems(rule(escalating.replace("{remind}", "9h")))
    assert len(found) == 1 and "p.yaml:22:" in found[0], found
    assert "remind_after (32400s) is not before the last deadline (32400s" in found[0]
    assert "give each level more time" in found[0]


def test_unknown_group_in_escalate_to_is_named() -> None:
    """An unknown group in escalate_to is an error at its position, with the known groups."""
    found = problems(
        rule(
            """
stages: [{name: m, approvers: [group:managers]}]
escalate_after: 1h
escalate_to: [group:cfos]
"""
        )
    )
    assert any("p.yaml:19:" in p and "unknown group 'cfos'" in p and "cfo" in p for p in found)


def test_pick_with_all_of_is_an_error() -> None:
    """pick chooses people for one requirement: with all_of it is a lint error."""
    found = problems(
        rule(
            """
stages:
  - name: both
    pick: least_loaded
    all_of:
      - {approvers: [group:managers]}
      - {approvers: [group:finance-directors]}
"""
        )
    )
    assert any("pick: least_loaded" in p and "all_of" in p and "hint:" in p for p in found)


def test_escalation_without_targets_or_without_a_trigger_is_an_error() -> None:
    """escalate_after with nobody to escalate to, and escalate_to that nothing triggers, are
    both errors; bad values (durations, pick, on_timeout) are shape errors."""
    assert any(
        "names nobody" in p
        for p in problems(
            rule("stages: [{name: m, approvers: [group:managers]}]\nescalate_after: 1h")
        )
    )
    assert any(
        "neither escalate_after nor on_timeout" in p
        for p in problems(
            rule("stages: [{name: m, approvers: [group:managers]}]\nescalate_to: [group:cfo]")
        )
    )
    for bad in ("remind_after: soon", "pick: random", "on_timeout: allow", "escalate_after: 0"):
        found = problems(rule(f"stages: [{{name: m, approvers: [group:managers]}}]\n{bad}"))
        assert found and all("p.yaml:" in p for p in found), (bad, found)


def test_round_robin_alone_is_valid_and_on_timeout_escalate_may_widen() -> None:
    """pick without escalation is load balancing only; on_timeout: escalate with a pick
    widens to the group at the deadline."""
    policy = load_policy_text(
        rule(
            """
stages: [{name: m, approvers: [group:managers], pick: round_robin, on_timeout: escalate}]
"""
        )
    )
    routing = policy.rules[0].approval.stages[0].routing  # type: ignore[union-attr]
    assert routing is not None and routing.on_timeout is OnTimeout.ESCALATE


def test_stages_differing_only_in_routing_merge() -> None:
    """Two matched rules with the same manager stage, one with routing: one stage, the routing
    kept (a person is not asked twice because one rule adds a reminder)."""
    text = rule(
        """
stages: [{name: m, approvers: [group:managers], remind_after: 30m}]
"""
    ) + (
        "    - id: plain\n      actions: [pay]\n      effect: approve\n"
        "      approval: {stages: [{name: m, approvers: [group:managers]}]}\n"
    )
    decision = Engine(load_policy_text(text)).evaluate(Request("pay", actor={"user": "carol"}))
    assert decision.approval is not None and len(decision.approval.stages) == 1
    assert decision.approval.stages[0].routing is not None


def test_policy_tests_compare_routing_when_named(tmp_path: Path) -> None:
    """A policy test may pin a stage's routing; a different routing fails the case, and a
    case that does not name it ignores it."""
    (tmp_path / "p.yaml").write_text(
        rule("stages: [{name: m, approvers: [group:managers], pick: least_loaded}]")
    )
    case = (
        "  - name: {name}\n    action: pay\n    actor: {{user: carol}}\n    expect:\n"
        "      effect: approve\n      stages: [{{name: m, approvers: [alice, bob], {extra}}}]\n"
    )
    (tmp_path / "t.yaml").write_text(
        "policy: p.yaml\ntests:\n"
        + case.format(name="right", extra="routing: {pick: least_loaded}")
        + case.format(name="wrong", extra="routing: {pick: round_robin}")
        + case.format(name="unnamed", extra="required: 1")
    )
    suite = load_suite(tmp_path / "t.yaml")
    policy = load_policy_text((tmp_path / "p.yaml").read_text())
    results = {r.case.spec.name: r.passed for r in run_suite(policy, suite)}
    assert results == {"right": True, "wrong": False, "unnamed": True}


def test_escalation_to_an_empty_group_is_an_error() -> None:
    """A declared group with nobody in it would escalate to no one: a lint error at its entry."""
    text = rule(
        """
stages: [{name: m, approvers: [group:managers]}]
escalate_after: 1h
escalate_to: [group:cfo, group:board]
"""
    ).replace("directory:\n", "directory:\n  groups: {board: {description: nobody yet}}\n", 1)
    found = problems(text)
    assert any("escalate_to level 2 (group:board) has nobody in it" in p for p in found), found


def test_an_approval_level_problem_is_reported_once_for_all_its_stages() -> None:
    """Keys of the approval apply to every stage, but a problem in one is said once; and the
    hint does not suggest on_timeout: escalate when it is already set (where escalate_after
    past the timeout is valid: the time each level gets)."""
    found = problems(
        rule(
            """
stages:
  - {name: one, approvers: [group:managers]}
  - {name: two, approvers: [group:finance-directors]}
timeout: 1h
escalate_after: 2h
escalate_to: [group:nosuch]
on_timeout: escalate
remind_after: 3h
"""
        )
    )
    assert sum("unknown group 'nosuch'" in p for p in found) == 1, found
    late = [p for p in found if "remind_after (10800s)" in p]
    assert len(late) == 1 and "on_timeout: escalate" not in late[0], found
    assert not any("escalate_after" in p for p in found), found  # each level's time: valid
