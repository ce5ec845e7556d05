"""cast_vote: who may vote, what counts, and when a request is decided."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from clearance.approvals import (
    Approval,
    ApprovalState,
    EventKind,
    Vote,
    VoteDecision,
    VoteRejected,
    cast_vote,
)
from tests.approvals.factories import (
    NOW,
    SOON,
    approve,
    deny,
    new,
    plan,
    req,
    run,
    stage,
    two_stage,
)


def rejected(approval: Approval, vote: Vote, now: datetime = SOON) -> VoteRejected:
    with pytest.raises(VoteRejected) as info:
        cast_vote(approval, vote, now)
    return info.value


def test_two_stages_run_in_sequence() -> None:
    """A manager's approval opens the finance stage, and the director's approves the request."""
    a = new(two_stage())
    first = cast_vote(a, approve("bob"), SOON)
    assert first.changed
    assert first.kinds == ("vote.recorded", "stage.completed", "stage.started")
    assert first.approval.state is ApprovalState.PENDING
    assert first.approval.stage_index == 1
    assert first.approval.eligible_voters(SOON) == ("dana", "erin")

    second = cast_vote(first.approval, approve("erin"), SOON)
    assert second.kinds == ("vote.recorded", "stage.completed", "approval.approved")
    done = second.approval
    assert done.state is ApprovalState.APPROVED
    assert done.decided_at == SOON
    assert done.decided_reason == "approved by bob (manager), erin (finance-director)"
    assert [(v.person, v.stage_index) for v in done.votes] == [("bob", 0), ("erin", 1)]
    assert done.version == a.version + 2


def test_finance_director_cannot_vote_before_manager_stage_is_met() -> None:
    """A later stage's approver is not eligible while an earlier stage is still open."""
    err = rejected(new(two_stage()), approve("dana"))
    assert err.code == "not_eligible"
    assert "stage 1 of 2 (manager)" in err.message
    assert "alice, bob" in err.message


def test_n_of_m_needs_distinct_people() -> None:
    """A requirement of two approvals stays open after one and is met by a second person."""
    a = new(plan(stage("dual", req("alice", "bob", "erin", required=2))))
    one = run(a, approve("alice"))
    assert one.state is ApprovalState.PENDING
    assert one.stage_progress(0)[0].needed == 1
    assert run(one, approve("erin")).state is ApprovalState.APPROVED


def test_all_of_uses_matching_not_greedy_assignment() -> None:
    """Alice (in both lists) then Bob (only the first) meet both requirements by matching."""
    p = plan(stage("clinical-and-privacy", req("alice", "bob"), req("alice")))
    a = run(new(p), approve("alice"))
    # Greedy would put alice on the first requirement and leave nobody for the second.
    t = cast_vote(a, approve("bob"), SOON)
    assert t.approval.state is ApprovalState.APPROVED
    first, second = t.approval.stage_progress(0)
    assert first.counted == ("bob",)
    assert second.counted == ("alice",)


def test_all_of_voter_in_two_requirements_fills_only_one() -> None:
    """A person listed in both requirements of a stage satisfies only one of them."""
    p = plan(stage("both", req("alice", "bob"), req("alice", "erin")))
    a = run(new(p), approve("alice"))
    assert a.state is ApprovalState.PENDING
    assert sum(r.needed for r in a.stage_progress(0)) == 1
    assert run(a, approve("erin")).state is ApprovalState.APPROVED


def test_same_person_cannot_satisfy_two_stages() -> None:
    """Someone who approved stage 1 is refused on stage 2 even though they are listed there."""
    p = plan(stage("manager", req("alice", "bob")), stage("director", req("alice", "dana")))
    a = run(new(p), approve("alice"))
    err = rejected(a, approve("alice"))
    assert err.code == "already_counted"
    assert "one person counts once per request" in err.message
    assert "dana" in err.message
    assert a.eligible_voters(SOON) == ("dana",)


def test_requester_cannot_vote_on_own_request() -> None:
    """The requester is refused even when the plan lists them as an approver."""
    p = plan(stage("manager", req("carol", "alice")))
    a = new(p, requester="carol")
    assert rejected(a, approve("carol")).code == "self_approval"
    assert rejected(a, deny("carol", "never mind")).code == "self_approval"
    assert "carol" not in a.eligible_voters(SOON)


def test_outsider_is_not_eligible() -> None:
    """Someone listed in no requirement of the current stage cannot vote, and is told who can."""
    err = rejected(new(two_stage()), approve("mallory"))
    assert err.code == "not_eligible"
    assert err.message == (
        "mallory may not vote on stage 1 of 2 (manager); who may vote: alice, bob"
    )


def test_deny_requires_a_reason() -> None:
    """A denial without a (non-blank) comment is refused with reason_required."""
    a = new(two_stage())
    assert rejected(a, deny("alice", None)).code == "reason_required"
    assert rejected(a, deny("alice", "   ")).code == "reason_required"


def test_one_deny_denies_the_request() -> None:
    """A single eligible denial ends the request with the comment as the reason."""
    a = run(new(two_stage()), approve("alice"))
    t = cast_vote(a, deny("erin", " amount looks wrong "), SOON)
    assert t.kinds == ("vote.recorded", "approval.denied")
    assert t.approval.state is ApprovalState.DENIED
    assert t.approval.decided_reason == "amount looks wrong"
    assert t.approval.decided_at == SOON


def test_repeated_vote_in_same_stage_is_idempotent() -> None:
    """The same approval sent twice changes nothing the second time."""
    p = plan(stage("dual", req("alice", "bob", required=2)))
    a = run(new(p), approve("alice"))
    t = cast_vote(a, approve("alice"), SOON)
    assert not t.changed
    assert t.events == ()
    assert t.approval is a


def test_changing_a_vote_in_same_stage_is_refused() -> None:
    """A person who approved cannot deny the same stage afterwards."""
    p = plan(stage("dual", req("alice", "bob", required=2)))
    a = run(new(p), approve("alice"))
    assert rejected(a, deny("alice", "changed my mind")).code == "already_voted"


def test_vote_after_approval_is_refused_but_a_replay_is_not() -> None:
    """A new vote on a decided request is already_decided; replaying a recorded vote is a no-op."""
    done = run(new(two_stage()), approve("alice"), approve("dana"))
    err = rejected(done, deny("bob", "too late?"))
    assert err.code == "already_decided"
    assert err.message == "already decided: approved by alice (manager), dana (finance-director)"
    replay = cast_vote(done, approve("alice"), SOON)
    assert not replay.changed and replay.approval is done


def test_vote_after_denial_names_the_denier() -> None:
    """The already_decided message says who denied and why."""
    denied = run(new(two_stage()), deny("bob", "no budget"))
    err = rejected(denied, approve("alice"))
    assert err.code == "already_decided"
    assert err.message == "already decided: denied by bob: no budget"
    assert not cast_vote(denied, deny("bob", "other words"), SOON).changed


def test_vote_past_expiry_expires_the_request_first() -> None:
    """A vote at or after expires_at is refused as expired, carrying the expiry to save."""
    a = new(two_stage())
    err = rejected(a, approve("alice"), now=a.expires_at)
    assert err.code == "expired"
    assert err.transition is not None
    expired = err.transition.approval
    assert expired.state is ApprovalState.EXPIRED
    assert expired.version == a.version + 1
    assert err.transition.kinds == ("approval.expired",)
    assert rejected(expired, approve("alice")).code == "expired"


def test_vote_just_before_expiry_counts() -> None:
    """A vote one microsecond before expires_at is recorded."""
    a = new(two_stage())
    t = cast_vote(a, approve("alice"), a.expires_at - timedelta(microseconds=1))
    assert t.changed


def test_approval_that_would_not_count_is_refused() -> None:
    """When the only requirement a voter can fill is already met, their approval is refused."""
    p = plan(stage("clinical-and-privacy", req("alice", "bob"), req("erin")))
    a = run(new(p), approve("alice"))
    err = rejected(a, approve("bob"))
    assert err.code == "not_needed"
    assert "erin" in err.message
    # Bob may still deny: any eligible approver can stop the request.
    assert cast_vote(a, deny("bob", "wrong account"), SOON).approval.state is ApprovalState.DENIED


def test_approval_that_would_strand_a_later_stage_is_refused() -> None:
    """Dana, the only possible director, cannot use herself up on the manager stage."""
    p = plan(stage("manager", req("alice", "dana")), stage("director", req("dana")))
    a = new(p)
    err = rejected(a, approve("dana"))
    assert err.code == "needed_later"
    assert "alice" in err.message
    assert not a.pending_on("dana")
    assert a.pending_on("alice")
    assert run(a, approve("alice"), approve("dana")).state is ApprovalState.APPROVED


def test_vote_claiming_an_unrecorded_delegation_is_refused() -> None:
    """A vote that claims to stand in for someone who named no such delegate fails closed."""
    vote = replace(approve("alice"), on_behalf_of="bob")
    assert rejected(new(two_stage()), vote).code == "not_delegate"


def test_recorded_vote_takes_the_current_stage_index() -> None:
    """The stage a vote counts in is the approval's current stage, whatever the caller sent."""
    a = run(new(two_stage()), approve("alice"))
    vote = Vote("dana", VoteDecision.APPROVE, 7, SOON, "ok", "slack")
    done = cast_vote(a, vote, SOON).approval
    assert done.votes[-1] == replace(vote, stage_index=1)


def test_events_name_the_voter_and_stage() -> None:
    """vote.recorded carries who voted and in which stage."""
    t = cast_vote(new(two_stage()), approve("bob"), SOON)
    recorded = t.events[0]
    assert recorded.kind is EventKind.VOTE_RECORDED
    assert (recorded.person, recorded.stage_index) == ("bob", 0)
    assert t.events[2].stage_index == 1


def test_naive_now_is_a_programming_error() -> None:
    """A naive datetime for `now` raises ValueError instead of guessing a time zone."""
    with pytest.raises(ValueError, match="aware"):
        cast_vote(new(two_stage()), approve("alice"), NOW.replace(tzinfo=None))
