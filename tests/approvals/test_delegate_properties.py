"""Property tests with delegations: a delegate's vote never strands a request, and what the
model says (`pending_on`, `open_voters`) agrees with what the workflow accepts."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st

from clearance.approvals import (
    Approval,
    ApprovalState,
    Rejected,
    Vote,
    VoteDecision,
    cast_vote,
    feasible,
)
from clearance.policy.model import ResolvedPlan
from tests.approvals.factories import NOW, new
from tests.approvals.test_properties import PEOPLE, plans, requesters


def accepts(a: Approval, person: str) -> bool:
    try:
        return cast_vote(a, Vote(person, VoteDecision.APPROVE, 0, NOW), NOW).changed
    except Rejected:
        return False


@settings(max_examples=300, deadline=None)
@given(plans(), requesters, st.data())
def test_delegated_requests_stay_completable(
    plan: ResolvedPlan, requester: str | None, data: st.DataObject
) -> None:
    """With any delegations in force, a feasible plan is approved by approving, in any order,
    whoever it is pending on; every accepted approval leaves it completable; `pending_on`
    agrees with `cast_vote`; nobody casts two approvals, in any seats; and everyone the
    request waits on is someone it is routed to, or a delegator who may vote herself."""
    if feasible(plan, requester) is not None:
        event("infeasible plan")
        return
    approvers = sorted({p for s in plan.stages for r in s.requirements for p in r.approvers})
    delegators = data.draw(st.lists(st.sampled_from(approvers), max_size=3, unique=True))
    others = {d: [p for p in PEOPLE if p != d] for d in delegators}
    delegations = tuple((d, data.draw(st.sampled_from(others[d]))) for d in delegators)
    a = replace(new(plan, requester), delegations=delegations)
    for _ in range(sum(r.required for s in plan.stages for r in s.requirements) + 1):
        if a.state is ApprovalState.APPROVED:
            break
        assert a.can_still_complete(), f"stranded: {a.stage_index} {a.votes}"
        waiting = [p for p in PEOPLE if a.pending_on(p)]
        assert waiting == [p for p in PEOPLE if accepts(a, p)]
        routed = a.open_voters()
        assert any(p in routed for p in waiting), f"routed to {routed}, waiting on {waiting}"
        standing_in = [p for p in waiting if a.acting_as(p) != p]
        pool = standing_in if standing_in and data.draw(st.booleans()) else waiting
        person = data.draw(st.sampled_from(pool))
        a = cast_vote(a, Vote(person, VoteDecision.APPROVE, 0, NOW), NOW).approval
        used = [p for v in a.votes for p in (v.person, v.on_behalf_of) if p is not None]
        assert len(used) == len(set(used)), "a person counted twice"
    assert a.state is ApprovalState.APPROVED
    event(f"delegate votes: {sum(v.on_behalf_of is not None for v in a.votes)}")
