"""The Approval model: progress, eligibility, storage form, summaries and feasibility."""

from __future__ import annotations

from datetime import timedelta

from clearance.approvals import Approval, ApprovalState, cancel, expire, feasible, summary
from clearance.matching import max_assignment
from tests.approvals.factories import SOON, approve, deny, new, plan, req, run, stage, two_stage


def test_stage_progress_reports_who_counts_and_what_is_missing() -> None:
    """stage_progress lists counted voters per requirement and the approvals still needed."""
    p = plan(stage("mixed", req("alice", "bob", required=2), req("erin")))
    a = run(new(p), approve("bob"))
    first, second = a.stage_progress(0)
    assert (first.counted, first.needed, first.met) == (("bob",), 1, False)
    assert (second.counted, second.needed) == ((), 1)


def test_eligible_voters_exclude_requester_and_counted_people() -> None:
    """Eligible voters are the stage's approvers minus the requester and anyone counted."""
    p = plan(stage("s1", req("carol", "alice", "bob", required=2)), stage("s2", req("bob", "dana")))
    a = new(p, requester="carol")
    assert a.eligible_voters(SOON) == ("alice", "bob")
    a = run(a, approve("alice"), approve("bob"))
    assert a.stage_index == 1
    assert a.eligible_voters(SOON) == ("dana",)
    assert a.eligible_voters(a.expires_at) == ()


def test_pending_on() -> None:
    """pending_on is true for people whose approval would move the current stage forward."""
    a = new(two_stage())
    assert a.pending_on("alice") and a.pending_on("bob")
    assert not a.pending_on("dana")
    assert not a.pending_on("carol")
    b = run(a, approve("alice"))
    assert not b.pending_on("alice") and b.pending_on("dana")
    assert not cancel(b, SOON, "x").approval.pending_on("dana")


def test_json_round_trip() -> None:
    """to_json/from_json preserve an approval exactly, votes and all."""
    a = run(new(two_stage()), approve("alice", "fine"))
    assert Approval.from_json(a.to_json()) == a
    d = run(a, deny("dana", "nope"))
    assert Approval.from_json(d.to_json()) == d


def test_summary_pending() -> None:
    """The pending summary names the stage, the count and who may vote."""
    assert summary(new(two_stage())) == (
        "pending — stage 1 of 2 (manager): 0 of 1 approvals; may vote: alice, bob"
    )


def test_summary_final_states() -> None:
    """Final summaries say who decided and why."""
    done = run(new(two_stage()), approve("alice"), approve("dana"))
    assert summary(done) == "approved — by alice (manager), dana (finance-director)"
    denied = run(new(two_stage()), deny("bob", "no budget"))
    assert summary(denied) == "denied — by bob: no budget"
    assert summary(cancel(new(two_stage()), SOON, "agent stopped").approval) == (
        "cancelled — agent stopped"
    )


def test_summary_expired() -> None:
    """The expired summary says what was still missing."""
    a = new(two_stage())
    e = expire(a, a.expires_at + timedelta(seconds=1)).approval
    assert e.state is ApprovalState.EXPIRED
    assert summary(e).startswith("expired — no decision before 2025-01-06T10:00:00Z")


def test_feasible_plan() -> None:
    """A plan with enough distinct people is feasible."""
    assert feasible(two_stage(), "carol") is None


def test_feasible_requester_removed() -> None:
    """A requirement that only the requester could meet is reported."""
    reason = feasible(plan(stage("manager", req("carol"))), "carol")
    assert reason is not None
    assert "carol requested it and cannot approve" in reason


def test_feasible_same_person_for_two_stages() -> None:
    """Two stages that only one person can approve are infeasible (one person counts once)."""
    reason = feasible(plan(stage("a", req("dana")), stage("b", req("dana", "carol"))), "carol")
    assert reason is not None and "one person counts once per request" in reason


def test_feasible_overlapping_all_of() -> None:
    """An all_of stage whose lists overlap into too few people is reported."""
    reason = feasible(plan(stage("both", req("alice"), req("alice"))), None)
    assert reason is not None and "overlap" in reason


def test_feasible_structural_problems() -> None:
    """Empty plans, empty stages and zero requirements are reported, never approved."""
    assert feasible(plan(), None) == "the approval plan has no stages"
    assert feasible(plan(stage("s")), None) == "stage 1 (s) has no requirements"


def test_max_assignment_prefers_augmenting_over_greedy() -> None:
    """max_assignment re-routes an earlier choice to fill a later slot."""
    assert max_assignment([("alice", "bob"), ("alice",)]) == {0: "bob", 1: "alice"}
