"""The approval workflow: pure functions from (approval, input, now) to a new approval.

No I/O, no clock, no randomness: the caller passes `now` (aware, UTC) and ids. Each function
returns a `Transition` (the new approval, what happened, whether anything changed) or raises
`Rejected` with a code and a plain-language message. A changed approval always carries
`version + 1`, which the store uses for compare-and-set.
"""

from __future__ import annotations

import copy
import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from clearance.approvals.model import (
    Approval,
    ApprovalState,
    ExecutionState,
    Vote,
    VoteDecision,
    unique,
)
from clearance.policy.model import ResolvedPlan, ResolvedStage

RESULT_MAX_CHARS = 4000


class EventKind(enum.StrEnum):
    VOTE_RECORDED = "vote.recorded"
    STAGE_COMPLETED = "stage.completed"
    STAGE_STARTED = "stage.started"
    APPROVED = "approval.approved"
    DENIED = "approval.denied"
    EXPIRED = "approval.expired"
    CANCELLED = "approval.cancelled"
    RELEASED = "approval.released"
    RESULT_RECORDED = "execution.recorded"
    REMINDED = "approval.reminded"
    ESCALATED = "approval.escalated"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened in a transition; `kind` compares equal to its string.
    `people` and `level`: whom a reminder or an escalation reached, and its number."""

    kind: EventKind
    person: str | None = None
    stage_index: int | None = None
    people: tuple[str, ...] = ()
    level: int | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The approval after a step, what happened, and whether anything changed."""

    approval: Approval
    events: tuple[Event, ...] = ()
    changed: bool = True

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(e.kind.value for e in self.events)


class Rejected(Exception):
    """A step the workflow refuses. `transition`, when set, must still be saved (the request
    expired while being acted on)."""

    def __init__(self, code: str, message: str, transition: Transition | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transition = transition

    def __str__(self) -> str:
        return self.message


class VoteRejected(Rejected):
    """A vote the workflow refuses (see `cast_vote` for the codes)."""


# ---------------------------------------------------------------------------------------------
# Opening


def open_approval(
    *,
    approval_id: str,
    action: str,
    params: Mapping[str, Any],
    binding_hash: str,
    actor: Mapping[str, Any],
    plan: ResolvedPlan,
    now: datetime,
) -> Approval:
    """A new pending approval at stage 0, expiring `plan.timeout_s` seconds from `now`.

    Raises ValueError for a plan with no stages, a stage with no requirements, or a
    requirement of fewer than one approval (use `feasible` for plans people cannot meet)."""
    _check_aware(now)
    if not plan.stages:
        raise ValueError("an approval plan needs at least one stage")
    for i, stage in enumerate(plan.stages):
        if not stage.requirements:
            raise ValueError(f"stage {i + 1} ({stage.name}) has no requirements")
        if any(req.required < 1 for req in stage.requirements):
            raise ValueError(f"stage {i + 1} ({stage.name}) requires fewer than one approval")
    user = actor.get("user")
    return Approval(
        id=approval_id,
        action=action,
        params=copy.deepcopy(dict(params)),
        binding_hash=binding_hash,
        actor=copy.deepcopy(dict(actor)),
        requester=str(user) if user is not None else None,
        plan=plan,
        created_at=now,
        expires_at=now + timedelta(seconds=plan.timeout_s),
    )


# ---------------------------------------------------------------------------------------------
# Voting


def cast_vote(approval: Approval, vote: Vote, now: datetime) -> Transition:
    """Record `vote` on the current stage.

    Rejection codes: expired, already_decided, not_delegate, self_approval,
    already_voted, not_eligible, already_counted, reason_required, not_needed (the approval
    would fill no open slot), needed_later (the voter is needed for a later stage that nobody
    else can fill), mfa_required, context_required, context_mismatch (a stage's `mfa:` or
    `require_context:`, see `_check_step_up`). Repeating a recorded vote returns `changed=False`.

    Delegation: a delegate named in `approval.delegations` votes in the seat of the person who
    named them, recorded as `on_behalf_of` (the caller cannot choose it: a claim that does not
    match is refused, `not_delegate`). The delegator may still vote; the two count once,
    whoever is first. A request past its deadline with `on_timeout: escalate` escalates
    first, then the vote is taken on the escalated request (one change).
    """
    _check_aware(now)
    if _is_due(approval, now):
        deadline = _on_deadline(approval, now)
        if deadline.approval.state is ApprovalState.EXPIRED:
            raise VoteRejected("expired", _expired_message(approval), transition=deadline)
        try:
            taken = cast_vote(deadline.approval, vote, now)
        except VoteRejected as exc:
            raise VoteRejected(exc.code, exc.message, transition=deadline) from None
        return Transition(
            replace(taken.approval, version=approval.version + 1),
            deadline.events + taken.events,
        )
    person = vote.person
    decision = VoteDecision(vote.decision)
    if approval.is_final:
        if any(v.person == person and v.decision is decision for v in approval.votes):
            return Transition(approval, changed=False)
        if approval.state is ApprovalState.EXPIRED:
            raise VoteRejected("expired", _expired_message(approval))
        raise VoteRejected("already_decided", f"already decided: {_outcome(approval)}")

    index = approval.stage_index
    label = approval.stage_label(index)
    identity = approval.acting_as(person)
    if vote.on_behalf_of is not None and vote.on_behalf_of != identity:
        raise VoteRejected(
            "not_delegate",
            f"{person} does not stand in for {vote.on_behalf_of} on this request; a delegate "
            "is named with `clearance users delegate` before the request is made",
        )
    if approval.requester is not None and person == approval.requester:
        raise VoteRejected("self_approval", f"{person} requested this action and cannot vote on it")
    behalf = identity if identity is not None and identity != person else None
    earlier = next((v for v in approval.votes if v.person == person), None)
    if earlier is not None and earlier.stage_index == index:
        if earlier.decision is decision:
            return Transition(approval, changed=False)
        raise VoteRejected(
            "already_voted",
            f"{person} already voted {earlier.decision.value} on {label} and cannot change it",
        )
    if identity is None:
        raise VoteRejected(
            "not_eligible",
            f"{person} may not vote on {label}; who may vote: {_names(approval.open_voters())}",
        )
    seat = next((v for v in approval.votes if (v.on_behalf_of or v.person) == identity), None)
    if earlier is None and seat is not None:
        raise VoteRejected(
            "already_counted",
            f"{seat.acting()} already voted {seat.decision.value} on "
            f"{approval.stage_label(seat.stage_index)}; a person and their delegate count "
            f"once, so {label} needs someone else: {_names(approval.open_voters())}",
        )
    if earlier is not None:
        raise VoteRejected(
            "already_counted",
            f"{person} already approved {approval.stage_label(earlier.stage_index)}; one "
            f"person counts once per request across all stages, so {label} needs someone "
            f"else: {_names(approval.open_voters())}",
        )
    _check_step_up(approval.plan.stages[index], vote, label)

    if decision is VoteDecision.DENY:
        reason = (vote.comment or "").strip()
        if not reason:
            raise VoteRejected("reason_required", "a denial needs a reason: say why in a comment")
        recorded = replace(
            vote, decision=decision, stage_index=index, comment=reason, on_behalf_of=behalf
        )
        denied = _bump(
            approval,
            votes=(*approval.votes, recorded),
            state=ApprovalState.DENIED,
            decided_at=now,
            decided_reason=reason,
        )
        return Transition(
            denied,
            (
                Event(EventKind.VOTE_RECORDED, person, index),
                Event(EventKind.DENIED, person, index),
            ),
        )

    if not approval.would_count(person):
        raise VoteRejected(
            "not_needed",
            f"{person}'s approval would not count: the requirements {person} can fill on "
            f"{label} are already met; {_waiting_on(approval)}",
        )
    if approval.can_still_complete() and not approval.can_still_complete(person, seat=identity):
        # (a delegate refused here leaves the seat to the person they stand in for)
        others = [p for p in unique((*approval.open_voters(), identity)) if p != person]
        raise VoteRejected(
            "needed_later",
            f"{person} is needed for a later stage that no one else can approve; approving "
            f"{label} would leave this request impossible to approve (one person counts once "
            f"per request); {label} may be approved by: {_names(others)}",
        )

    recorded = replace(vote, decision=decision, stage_index=index, on_behalf_of=behalf)
    voted = replace(approval, votes=(*approval.votes, recorded))
    events = [Event(EventKind.VOTE_RECORDED, person, index)]
    changes: dict[str, Any] = {"votes": voted.votes}
    if all(req.met for req in voted.stage_progress(index)):
        events.append(Event(EventKind.STAGE_COMPLETED, stage_index=index))
        following = index + 1
        changes["stage_index"] = following
        if following == len(approval.plan.stages):
            changes.update(
                state=ApprovalState.APPROVED,
                decided_at=now,
                decided_reason=_approved_by(voted),
            )
            events.append(Event(EventKind.APPROVED, person, index))
        else:
            events.append(Event(EventKind.STAGE_STARTED, stage_index=following))
    return Transition(_bump(approval, **changes), tuple(events))


def _check_step_up(stage: ResolvedStage, vote: Vote, label: str) -> None:
    """A stage's `mfa:` and `require_context:` against what the vote carries (approve and deny
    alike: a vote without the proof does not count either way).

    Codes: mfa_required (no fresh second factor of the stage's kind), context_required (the
    approver's location is unknown), context_mismatch (it is not one the stage allows)."""
    if stage.mfa is not None and not (
        vote.factor is not None and (stage.mfa == "any" or stage.mfa == vote.factor)
    ):
        kind = {"totp": "an authenticator code", "webauthn": "a security key or passkey"}.get(
            stage.mfa, "a second factor"
        )
        raise VoteRejected(
            "mfa_required",
            f"{label} requires a fresh second factor ({kind}): vote in the web inbox after "
            "verifying it, or send the code with the vote",
        )
    for fact, allowed in stage.require_context:
        if fact != "approver_geo":  # the loader admits no other fact: refuse what we cannot check
            raise VoteRejected("context_required", f"{label} requires {fact}, which is unknown")
        if vote.geo is None:
            raise VoteRejected(
                "context_required",
                f"{label} may be approved only from {', '.join(allowed)}, and your location "
                "is unknown (or changed since you signed in): vote from the web inbox",
            )
        if vote.geo not in allowed:
            raise VoteRejected(
                "context_mismatch",
                f"{label} may be approved only from {', '.join(allowed)}, not {vote.geo}",
            )


# ---------------------------------------------------------------------------------------------
# Other steps


def expire(approval: Approval, now: datetime) -> Transition:
    """A pending approval at or past `expires_at` becomes expired — or, when its stage says
    `on_timeout: escalate` and a level is left, escalates and gets a new deadline; anything
    else is unchanged."""
    _check_aware(now)
    if _is_due(approval, now):
        return _on_deadline(approval, now)
    return Transition(approval, changed=False)


def remind_and_escalate(approval: Approval, now: datetime) -> Transition:
    """Fire the reminders and escalation levels due at `now` (see `escalation.fire`); past
    the deadline, what the deadline does (`expire`)."""
    _check_aware(now)
    if _is_due(approval, now):
        return _on_deadline(approval, now)
    from . import escalation

    return escalation.fire(approval, now)


def cancel(approval: Approval, now: datetime, reason: str) -> Transition:
    """Withdraw a pending approval. Cancelling a cancelled approval changes nothing."""
    _check_aware(now)
    if _is_due(approval, now):
        deadline = _on_deadline(approval, now)
        if deadline.approval.state is ApprovalState.EXPIRED:
            raise Rejected("expired", _expired_message(approval), transition=deadline)
        withdrawn = cancel(deadline.approval, now, reason)
        return Transition(
            replace(withdrawn.approval, version=approval.version + 1),
            deadline.events + withdrawn.events,
        )
    if approval.state is ApprovalState.CANCELLED:
        return Transition(approval, changed=False)
    if approval.is_final:
        raise Rejected("already_decided", f"already decided: {_outcome(approval)}")
    cancelled = _bump(
        approval,
        state=ApprovalState.CANCELLED,
        decided_at=now,
        decided_reason=reason.strip() or "cancelled without a reason",
    )
    return Transition(cancelled, (Event(EventKind.CANCELLED),))


def release(approval: Approval, binding_hash: str, now: datetime) -> Transition:
    """The agent claims the approved call: once, and only for exactly the call approved."""
    _check_aware(now)
    if approval.state is not ApprovalState.APPROVED:
        raise Rejected("not_approved", f"cannot release: {_outcome(approval)}")
    if not hmac.compare_digest(binding_hash.encode(), approval.binding_hash.encode()):
        raise Rejected(
            "binding_mismatch",
            "the call differs from the one approved (action, parameters or actor changed); "
            "ask for a new approval",
        )
    if approval.released_at is not None:
        raise Rejected(
            "already_released",
            f"this approval already released its call at {_fmt(approval.released_at)}; "
            "an approval releases one call only",
        )
    return Transition(_bump(approval, released_at=now), (Event(EventKind.RELEASED),))


def record_result(
    approval: Approval, state: ExecutionState, result: str | None, now: datetime
) -> Transition:
    """Record what happened when the approved call ran: once; `result` cut to 4,000 chars."""
    _check_aware(now)
    if approval.state is not ApprovalState.APPROVED:
        raise Rejected("not_approved", f"cannot record a result: {_outcome(approval)}")
    if approval.execution_state is not None:
        raise Rejected(
            "result_already_recorded",
            f"a result was already recorded ({approval.execution_state.value}) at "
            f"{_fmt(approval.executed_at)}",
        )
    recorded = _bump(
        approval,
        execution_state=ExecutionState(state),
        execution_result=result[:RESULT_MAX_CHARS] if result is not None else None,
        executed_at=now,
    )
    return Transition(recorded, (Event(EventKind.RESULT_RECORDED),))


# ---------------------------------------------------------------------------------------------
# Questions about plans and approvals


def summary(approval: Approval) -> str:
    """One line for people: `pending — stage 1 of 2 (manager): 0 of 1 approvals; may vote: …`."""
    state = approval.state
    if state is ApprovalState.PENDING:
        index = approval.stage_index
        progress = approval.stage_progress(index)
        have = sum(len(r.counted) for r in progress)
        need = sum(r.required for r in progress)
        return (
            f"pending — {approval.stage_label(index)}: {have} of {need} approvals; "
            f"may vote: {_names(approval.open_voters())}"
        )
    if state is ApprovalState.APPROVED:
        line = f"approved — {_outcome(approval).removeprefix('approved ')}"
    elif state is ApprovalState.DENIED:
        line = f"denied — {_outcome(approval).removeprefix('denied ')}"
    else:
        line = f"{state.value} — {approval.decided_reason or state.value}"
    if approval.released_at is not None:
        line += "; released"
    if approval.execution_state is not None:
        line += f"; execution {approval.execution_state.value}"
    return line


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be an aware datetime (UTC)")


def _is_due(approval: Approval, now: datetime) -> bool:
    return approval.state is ApprovalState.PENDING and now >= approval.expires_at


def _on_deadline(approval: Approval, now: datetime) -> Transition:
    """What a deadline does: escalate (`on_timeout: escalate`, a level left), else expire."""
    from . import escalation

    escalated = escalation.on_deadline(approval, now)
    return escalated if escalated is not None else _expire(approval)


def _expire(approval: Approval) -> Transition:
    index = approval.stage_index
    missing = sum(r.needed for r in approval.stage_progress(index))
    reason = (
        f"no decision before {_fmt(approval.expires_at)}: {approval.stage_label(index)} "
        f"still needed {_count(missing, 'approval')}"
    )
    expired = _bump(
        approval,
        state=ApprovalState.EXPIRED,
        decided_at=approval.expires_at,
        decided_reason=reason,
    )
    return Transition(expired, (Event(EventKind.EXPIRED, stage_index=index),))


def _expired_message(approval: Approval) -> str:
    return (
        f"this request expired at {_fmt(approval.expires_at)} without a decision; "
        "it no longer accepts votes: ask for a new approval"
    )


def _bump(approval: Approval, **changes: Any) -> Approval:
    return replace(approval, version=approval.version + 1, **changes)


def _outcome(approval: Approval) -> str:
    state = approval.state
    if state is ApprovalState.APPROVED:
        return approval.decided_reason or "approved"
    if state is ApprovalState.DENIED:
        denier = next((v.person for v in approval.votes if v.decision is VoteDecision.DENY), "")
        return f"denied by {denier}: {approval.decided_reason}"
    if state is ApprovalState.EXPIRED:
        return f"expired ({approval.decided_reason})"
    if state is ApprovalState.CANCELLED:
        return f"cancelled: {approval.decided_reason}"
    return f"still pending — {_waiting_on(approval)}"


def _approved_by(approval: Approval) -> str:
    """`approved by bob for alice (manager), dana (finance)`: who cast each counted approval,
    stage by stage, in the order cast."""
    parts = [
        f"{v.acting()} ({approval.plan.stages[i].name})"
        for i in range(len(approval.plan.stages))
        for v in approval.votes
        if v.stage_index == i and v.decision is VoteDecision.APPROVE
    ]
    return f"approved by {', '.join(parts)}"


def _waiting_on(approval: Approval) -> str:
    index = approval.stage_index
    open_ = [
        f"{_count(r.needed, 'more approval')} from {_names(r.approvers)}"
        for r in approval.stage_progress(index)
        if not r.met
    ]
    return f"{approval.stage_label(index)} still needs {'; '.join(open_) or 'nothing'}"


def _names(people: tuple[str, ...] | list[str]) -> str:
    return ", ".join(people) if people else "nobody"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _fmt(when: datetime | None) -> str:
    if when is None:
        return "an unknown time"
    return when.isoformat().replace("+00:00", "Z")
