"""Opening, expiring, cancelling, releasing and recording results."""

from __future__ import annotations

from datetime import timedelta

import pytest

from clearance.approvals import (
    RESULT_MAX_CHARS,
    Approval,
    ApprovalState,
    ExecutionState,
    Rejected,
    cancel,
    expire,
    open_approval,
    record_result,
    release,
)
from clearance.canonical import binding_hash
from clearance.policy.model import ResolvedPlan
from tests.approvals.factories import (
    ACTOR,
    BINDING,
    NOW,
    PARAMS,
    SOON,
    approve,
    new,
    plan,
    req,
    run,
    stage,
    two_stage,
)

LATER = SOON + timedelta(minutes=1)


def approved() -> Approval:
    return run(new(two_stage()), approve("alice"), approve("dana"))


def test_open_approval_starts_pending_with_a_deadline() -> None:
    """A new approval is pending at stage 0, version 1, expiring timeout_s after now."""
    a = new(two_stage())
    assert a.state is ApprovalState.PENDING
    assert (a.stage_index, a.version, a.votes) == (0, 1, ())
    assert a.requester == "carol"
    assert a.created_at == NOW
    assert a.expires_at == NOW + timedelta(hours=1)
    assert a.binding_hash == BINDING


def test_open_approval_copies_params() -> None:
    """Mutating the caller's params afterwards does not change the approval's display copy."""
    tags = ["a"]
    params = {"amount": 1, "tags": tags}
    a = open_approval(
        approval_id="apr_2",
        action="x",
        params=params,
        binding_hash="h",
        actor={},
        plan=two_stage(),
        now=NOW,
    )
    tags.append("b")
    assert a.params == {"amount": 1, "tags": ["a"]}
    assert a.requester is None


@pytest.mark.parametrize(
    "bad",
    [plan(), plan(stage("empty")), plan(stage("zero", req("alice", required=0)))],
)
def test_open_approval_refuses_malformed_plans(bad: ResolvedPlan) -> None:
    """A plan with no stages, an empty stage or a zero requirement is a ValueError."""
    with pytest.raises(ValueError):
        new(bad)


def test_expire_before_deadline_changes_nothing() -> None:
    """expire() before expires_at returns the same approval, unchanged."""
    a = new(two_stage())
    t = expire(a, a.expires_at - timedelta(seconds=1))
    assert not t.changed and t.approval is a


def test_expire_at_deadline() -> None:
    """expire() at expires_at makes a pending approval expired, decided at the deadline."""
    a = new(two_stage())
    t = expire(a, a.expires_at + timedelta(minutes=3))
    assert t.kinds == ("approval.expired",)
    e = t.approval
    assert e.state is ApprovalState.EXPIRED
    assert e.decided_at == a.expires_at
    assert e.decided_reason is not None and "stage 1 of 2 (manager)" in e.decided_reason
    assert e.eligible_voters(NOW) == ()
    assert not expire(e, e.expires_at + timedelta(days=1)).changed


def test_expire_leaves_decided_requests_alone() -> None:
    """An approved request past its deadline stays approved."""
    a = approved()
    assert not expire(a, a.expires_at + timedelta(days=1)).changed


def test_cancel_pending() -> None:
    """cancel() ends a pending request with the reason given; repeating it changes nothing."""
    t = cancel(new(two_stage()), SOON, "agent gave up")
    assert t.kinds == ("approval.cancelled",)
    assert t.approval.state is ApprovalState.CANCELLED
    assert t.approval.decided_reason == "agent gave up"
    assert not cancel(t.approval, LATER, "again").changed


def test_cancel_decided_is_refused() -> None:
    """An approved request cannot be cancelled."""
    with pytest.raises(Rejected) as info:
        cancel(approved(), SOON, "oops")
    assert info.value.code == "already_decided"


def test_release_once_with_matching_binding() -> None:
    """The approved call is released once, with its exact binding hash."""
    a = approved()
    t = release(a, BINDING, LATER)
    assert t.kinds == ("approval.released",)
    assert t.approval.released_at == LATER
    with pytest.raises(Rejected) as info:
        release(t.approval, BINDING, LATER)
    assert info.value.code == "already_released"


def test_release_with_different_call_is_refused() -> None:
    """A binding hash for different parameters is refused as binding_mismatch."""
    other = binding_hash("payments.transfer", {**PARAMS, "amount": 72000}, ACTOR)
    with pytest.raises(Rejected) as info:
        release(approved(), other, LATER)
    assert info.value.code == "binding_mismatch"
    assert "differs from the one approved" in info.value.message


def test_release_before_approval_is_refused() -> None:
    """A pending request cannot be released, and the message says what it waits for."""
    with pytest.raises(Rejected) as info:
        release(new(two_stage()), BINDING, SOON)
    assert info.value.code == "not_approved"
    assert "alice, bob" in info.value.message


def test_result_recorded_once() -> None:
    """A result is recorded once; a second report is refused."""
    a = release(approved(), BINDING, LATER).approval
    t = record_result(a, ExecutionState.SUCCEEDED, "transfer tx_9", LATER)
    assert t.kinds == ("execution.recorded",)
    r = t.approval
    assert (r.execution_state, r.execution_result, r.executed_at) == (
        ExecutionState.SUCCEEDED,
        "transfer tx_9",
        LATER,
    )
    with pytest.raises(Rejected) as info:
        record_result(r, ExecutionState.FAILED, None, LATER)
    assert info.value.code == "result_already_recorded"


def test_result_is_truncated() -> None:
    """A long result is cut to 4,000 characters."""
    a = approved()
    r = record_result(a, ExecutionState.FAILED, "x" * 10_000, LATER).approval
    assert r.execution_result == "x" * RESULT_MAX_CHARS


def test_result_before_approval_is_refused() -> None:
    """A denied or pending request has no result to record."""
    with pytest.raises(Rejected) as info:
        record_result(new(two_stage()), ExecutionState.SUCCEEDED, None, SOON)
    assert info.value.code == "not_approved"


def test_every_change_bumps_version_by_one() -> None:
    """Each changed transition increases version by exactly one."""
    a = new(two_stage())
    b = run(a, approve("alice"))
    c = run(b, approve("dana"))
    d = release(c, BINDING, LATER).approval
    e = record_result(d, ExecutionState.SUCCEEDED, None, LATER).approval
    assert [x.version for x in (a, b, c, d, e)] == [1, 2, 3, 4, 5]
