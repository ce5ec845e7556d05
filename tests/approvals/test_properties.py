"""Property tests: random plans and vote sequences keep the workflow's invariants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import permutations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from clearance.approvals import (
    Approval,
    ApprovalState,
    ExecutionState,
    Rejected,
    Transition,
    Vote,
    VoteDecision,
    cancel,
    cast_vote,
    expire,
    feasible,
    record_result,
    release,
)
from clearance.approvals.model import max_assignment, requirement_slots
from clearance.policy.model import ResolvedPlan, ResolvedRequirement, ResolvedStage
from tests.approvals.factories import NOW, new

PEOPLE = ("ann", "ben", "cat", "dan", "eve", "fay")


# -- oracles: brute force, independent of the matching code ------------------------------------


def brute_max(slots: Sequence[Sequence[str]]) -> int:
    """The largest number of slots distinct people can fill, by exhaustive search."""

    def best(i: int, used: frozenset[str]) -> int:
        if i == len(slots):
            return 0
        top = best(i + 1, used)  # leave slot i empty
        for p in set(slots[i]) - used:
            top = max(top, 1 + best(i + 1, used | {p}))
        return top

    return best(0, frozenset())


def stage_met_by(stage: ResolvedStage, voters: Sequence[str]) -> bool:
    """Whether some assignment of distinct `voters` fills every slot of `stage`."""
    slots = [req.approvers for req in stage.requirements for _ in range(req.required)]
    if len(set(voters)) != len(voters):
        return False
    return any(
        all(p in slot for p, slot in zip(chosen, slots, strict=True))
        for chosen in permutations(voters, len(slots))
    )


# -- strategies --------------------------------------------------------------------------------


@st.composite
def requirements(draw: st.DrawFn) -> ResolvedRequirement:
    approvers = draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=4, unique=True))
    required = draw(st.integers(1, min(2, len(approvers))))
    return ResolvedRequirement(tuple(approvers), required)


@st.composite
def plans(draw: st.DrawFn) -> ResolvedPlan:
    stages = draw(
        st.lists(
            st.builds(
                lambda name, reqs: ResolvedStage(name, tuple(reqs)),
                st.sampled_from(["manager", "finance", "privacy", "security"]),
                st.lists(requirements(), min_size=1, max_size=2),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return ResolvedPlan(tuple(stages), timeout_s=3600)


requesters = st.one_of(st.none(), st.sampled_from(PEOPLE))


@dataclass(frozen=True)
class Op:
    kind: str
    person: str
    decision: VoteDecision
    comment: str | None
    seconds: int


ops = st.builds(
    Op,
    kind=st.sampled_from(
        ["vote"] * 8 + ["helpful"] * 8 + ["expire", "cancel", "release", "result"]
    ),
    person=st.sampled_from(PEOPLE),
    decision=st.sampled_from([VoteDecision.APPROVE] * 8 + [VoteDecision.DENY]),
    comment=st.sampled_from([None, "", "looks fine", "too much"]),
    seconds=st.integers(0, 300),
)


# -- invariants --------------------------------------------------------------------------------


def check_invariants(a: Approval) -> None:
    approvals = [v.person for v in a.votes if v.decision is VoteDecision.APPROVE]
    assert len(approvals) == len(set(approvals)), "a person counted twice"
    for v in a.votes:
        assert v.person != a.requester, "the requester voted"
        assert v.person in a.stage_approvers(v.stage_index), "an ineligible vote was recorded"
        assert v.stage_index <= a.stage_index
    for i in range(min(a.stage_index, len(a.plan.stages))):
        assert stage_met_by(a.plan.stages[i], a.stage_voters(i)), f"stage {i} passed unmet"
    if a.state is ApprovalState.APPROVED:
        assert a.stage_index == len(a.plan.stages)
        assert a.decided_at is not None
    elif a.state is ApprovalState.PENDING:
        assert a.stage_index < len(a.plan.stages)
        assert a.decided_at is None
    denials = [v for v in a.votes if v.decision is VoteDecision.DENY]
    if a.state is ApprovalState.DENIED:
        assert len(denials) == 1 and a.votes[-1] is denials[0] and denials[0].comment
    else:
        assert not denials
    if a.released_at is not None or a.execution_state is not None:
        assert a.state is ApprovalState.APPROVED


def step(a: Approval, op: Op, now: datetime) -> Transition | None:
    """Apply one op; a rejection yields its attached transition (if any), as a store would."""
    try:
        if op.kind == "vote":
            vote = Vote(op.person, op.decision, 0, now, op.comment, "api")
            return cast_vote(a, vote, now)
        if op.kind == "helpful":  # an approval from someone the request is waiting on
            waiting = [p for p in PEOPLE if a.pending_on(p)] or [op.person]
            person = waiting[PEOPLE.index(op.person) % len(waiting)]
            return cast_vote(a, Vote(person, VoteDecision.APPROVE, 0, now), now)
        if op.kind == "expire":
            return expire(a, now)
        if op.kind == "cancel":
            return cancel(a, now, "stopped")
        if op.kind == "release":
            return release(a, a.binding_hash, now)
        return record_result(a, ExecutionState.SUCCEEDED, "ok", now)
    except Rejected as err:
        return err.transition


@settings(max_examples=400, deadline=None)
@given(plans(), requesters, st.lists(ops, max_size=25))
def test_random_vote_sequences_keep_invariants(
    plan: ResolvedPlan, requester: str | None, script: list[Op]
) -> None:
    """Under any sequence of votes, expiries and cancellations the invariants always hold."""
    a = new(plan, requester)
    now = NOW
    for op in script:
        now += timedelta(seconds=op.seconds)
        # pending_on agrees with what cast_vote would accept (before the deadline).
        if a.state is ApprovalState.PENDING and now < a.expires_at:
            for person in PEOPLE:
                try:
                    accepted = cast_vote(a, Vote(person, VoteDecision.APPROVE, 0, now), now).changed
                except Rejected:
                    accepted = False
                assert a.pending_on(person) == accepted, person
        t = step(a, op, now)
        if t is None or not t.changed:
            assert t is None or t.approval is a
            continue
        b = t.approval
        assert b.version == a.version + 1, "a change must bump the version by one"
        if a.is_final:
            assert b.state is a.state, "a final state changed"
        check_invariants(b)
        a = b
    event(f"ended {a.state.value}")


@settings(max_examples=300, deadline=None)
@given(plans(), requesters, st.data())
def test_feasible_plans_can_always_be_completed(
    plan: ResolvedPlan, requester: str | None, data: st.DataObject
) -> None:
    """A feasible plan is approved by approving, in any order, whoever it is pending on."""
    a = new(plan, requester)
    if feasible(plan, requester) is not None:
        event("infeasible plan")
        return
    event("feasible plan")
    now = NOW
    for _ in range(sum(r.required for s in plan.stages for r in s.requirements) + 1):
        if a.state is ApprovalState.APPROVED:
            break
        waiting = [p for p in PEOPLE if a.pending_on(p)]
        assert waiting, f"stuck: {a.stage_index} {a.votes}"
        person = data.draw(st.sampled_from(waiting))
        a = cast_vote(a, Vote(person, VoteDecision.APPROVE, 0, now), now).approval
    assert a.state is ApprovalState.APPROVED
    check_invariants(a)


@settings(max_examples=300, deadline=None)
@given(plans(), requesters)
def test_feasible_agrees_with_brute_force(plan: ResolvedPlan, requester: str | None) -> None:
    """feasible() is None exactly when exhaustive search finds distinct people for every slot."""
    slots = [s for stage in plan.stages for s in requirement_slots(stage.requirements, {requester})]
    assert (feasible(plan, requester) is None) == (brute_max(slots) == len(slots))


@given(
    st.lists(st.lists(st.sampled_from(PEOPLE), max_size=4, unique=True), max_size=6),
)
def test_max_assignment_is_maximum_and_valid(slots: list[list[str]]) -> None:
    """max_assignment fills as many slots as exhaustive search, with distinct allowed people."""
    got = max_assignment(slots)
    assert len(got) == brute_max(slots)
    assert len(set(got.values())) == len(got)
    assert all(person in slots[i] for i, person in got.items())
