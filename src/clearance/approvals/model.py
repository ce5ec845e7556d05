"""Approvals as data: the request, its votes, and who it is waiting on.

Everything here is immutable and free of I/O, clocks and randomness; `workflow.py` moves an
`Approval` from one state to the next.

Counting rules (see DESIGN.md, "One person counts once per request"):
- every recorded *approve* vote counts, in the stage it was cast in, and uses its voter up for
  the whole request; the workflow refuses approvals that would not count;
- inside a stage, voters are assigned to requirement slots by a maximum bipartite matching, so
  a voter listed in two requirements of an `all_of` stage fills only one of them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clearance.matching import max_assignment, requirement_slots, saturates
from clearance.policy.model import ResolvedPlan, ResolvedRequirement, ResolvedStage


class ApprovalState(enum.StrEnum):
    """Where an approval stands. Every state but `pending` is final."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self is not ApprovalState.PENDING


class ExecutionState(enum.StrEnum):
    """What the agent reports after running an approved call."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class VoteDecision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Vote:
    """One person's decision. `stage_index` is set by the workflow to the stage it counted in."""

    person: str
    decision: VoteDecision
    stage_index: int
    at: datetime
    comment: str | None = None
    channel: str = "api"
    on_behalf_of: str | None = None
    # The verified second factor (totp | webauthn) and the approver's location the vote
    # came with (see clearance.identity.mfa); checked by the workflow, recorded in the audit.
    factor: str | None = None
    geo: str | None = None

    def acting(self, name: Callable[[str], str] = str) -> str:
        """Who cast the vote, as people read it: `bob for alice` for a delegate's vote, else
        `bob`; `name` turns an id into what to show (e.g. `Directory.display_name`). The one
        wording for it: the vote's audit entry, the decision's reason, the status line."""
        if self.on_behalf_of:
            return f"{name(self.person)} for {name(self.on_behalf_of)}"
        return name(self.person)

    def to_json(self) -> dict[str, Any]:
        out = {
            "person": self.person,
            "decision": self.decision.value,
            "stage_index": self.stage_index,
            "at": self.at.isoformat(),
            "comment": self.comment,
            "channel": self.channel,
            "on_behalf_of": self.on_behalf_of,
        }
        if self.factor is not None:
            out["factor"] = self.factor
        if self.geo is not None:
            out["geo"] = self.geo
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Vote:
        return cls(
            person=str(data["person"]),
            decision=VoteDecision(data["decision"]),
            stage_index=int(data["stage_index"]),
            at=datetime.fromisoformat(data["at"]),
            comment=data.get("comment"),
            channel=str(data.get("channel", "api")),
            on_behalf_of=data.get("on_behalf_of"),
            factor=data.get("factor"),
            geo=data.get("geo"),
        )


@dataclass(frozen=True, slots=True)
class RoutingEntry:
    """A reminder or an escalation that fired (see `clearance.approvals.escalation`).

    `people` are who it reached out to; `level` numbers reminders and escalation levels of
    the stage from 1; `at` is the time of the change that recorded it."""

    kind: str  # reminder | escalation
    stage_index: int
    level: int
    at: datetime
    people: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stage_index": self.stage_index,
            "level": self.level,
            "at": self.at.isoformat(),
            "people": list(self.people),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoutingEntry:
        return cls(
            kind=str(data["kind"]),
            stage_index=int(data["stage_index"]),
            level=int(data["level"]),
            at=datetime.fromisoformat(data["at"]),
            people=tuple(data["people"]),
        )


@dataclass(frozen=True, slots=True)
class RequirementProgress:
    """One requirement of a stage: who counts toward it and how many more it needs.

    `counted` are seats (a delegate's vote counts as the person they stood in for); `votes`
    are the approvals that filled them, in the same order (`Vote.acting` names who cast one)."""

    approvers: tuple[str, ...]
    required: int
    counted: tuple[str, ...]
    needed: int
    votes: tuple[Vote, ...] = ()

    @property
    def met(self) -> bool:
        return self.needed <= 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """A request held until the right people approve it. Never mutated: see `workflow`."""

    id: str
    action: str
    params: dict[str, Any]
    binding_hash: str
    actor: dict[str, Any]
    requester: str | None
    plan: ResolvedPlan
    created_at: datetime
    expires_at: datetime
    state: ApprovalState = ApprovalState.PENDING
    stage_index: int = 0
    votes: tuple[Vote, ...] = ()
    decided_at: datetime | None = None
    decided_reason: str | None = None
    released_at: datetime | None = None
    execution_state: ExecutionState | None = None
    execution_result: str | None = None
    executed_at: datetime | None = None
    version: int = 1
    # Delegations in force for this request, (delegator, delegate), captured when it was
    # created or escalated; and the reminders and escalations that fired.
    delegations: tuple[tuple[str, str], ...] = ()
    routing_log: tuple[RoutingEntry, ...] = ()

    # -- where it stands ----------------------------------------------------------------------

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    @property
    def current_stage(self) -> ResolvedStage | None:
        """The stage being voted on, or None once no stage is open."""
        if self.state is not ApprovalState.PENDING:
            return None
        if 0 <= self.stage_index < len(self.plan.stages):
            return self.plan.stages[self.stage_index]
        return None

    def stage_label(self, index: int) -> str:
        """`stage 1 of 2 (manager)`: how people read a stage."""
        stage = self.plan.stages[index]
        return f"stage {index + 1} of {len(self.plan.stages)} ({stage.name})"

    def stage_approvers(self, index: int) -> tuple[str, ...]:
        """Everyone listed in any requirement of stage `index`, in order, without repeats."""
        return unique(p for req in self.plan.stages[index].requirements for p in req.approvers)

    def stage_voters(self, index: int) -> tuple[str, ...]:
        """The people whose approval counted in stage `index`, in the order they voted (a
        delegate's vote counts as the person they stood in for)."""
        return tuple(
            v.on_behalf_of or v.person
            for v in self.votes
            if v.stage_index == index and v.decision is VoteDecision.APPROVE
        )

    @property
    def counted(self) -> frozenset[str]:
        """Everyone whose approval counted, in any stage, and every delegate who cast one:
        none of them can count again."""
        return frozenset(
            p
            for v in self.votes
            if v.decision is VoteDecision.APPROVE
            for p in (v.person, v.on_behalf_of)
            if p is not None
        )

    def delegate_of(self, person: str) -> str | None:
        """Who stands in for `person` on this request (never the requester), or None."""
        for delegator, delegate in self.delegations:
            if delegator == person and delegate != self.requester:
                return delegate
        return None

    def acting_as(self, person: str) -> str | None:
        """Whose seat `person`'s vote on the current stage would fill: their own when they are
        an approver not yet counted, else that of someone they stand in for; None if neither.
        A delegator keeps the right to vote; the two of them count once."""
        if self.current_stage is None or person == self.requester:
            return None
        approvers = self.stage_approvers(self.stage_index)
        counted = self.counted
        if person in approvers and person not in counted and self.would_count_as(person):
            return person
        for delegator, delegate in self.delegations:
            if (
                delegate == person
                and delegator in approvers
                and delegator not in counted
                and delegator != self.requester
                and self.would_count_as(delegator)
            ):
                return delegator
        return person if person in approvers else None

    def stage_progress(self, index: int) -> tuple[RequirementProgress, ...]:
        """For each requirement of stage `index`: the voters that count toward it, and how
        many more it needs (voters assigned by maximum matching, not greedily)."""
        requirements = self.plan.stages[index].requirements
        voters = self.stage_voters(index)
        cast = {
            v.on_behalf_of or v.person: v
            for v in self.votes
            if v.stage_index == index and v.decision is VoteDecision.APPROVE
        }
        slots, owners = _stage_slots(requirements, voters)
        assigned = max_assignment(slots)
        order = {p: n for n, p in enumerate(voters)}
        out: list[RequirementProgress] = []
        for r, req in enumerate(requirements):
            counted = sorted(
                (p for s, p in assigned.items() if owners[s] == r), key=order.__getitem__
            )
            out.append(
                RequirementProgress(
                    approvers=req.approvers,
                    required=req.required,
                    counted=tuple(counted),
                    needed=max(req.required - len(counted), 0),
                    votes=tuple(cast[p] for p in counted),
                )
            )
        return tuple(out)

    # -- who may act ---------------------------------------------------------------------------

    def eligible_voters(self, now: datetime) -> tuple[str, ...]:
        """People who may vote now on the current stage: its approvers, minus the requester,
        minus everyone already counted in this request. Empty once final or past expiry."""
        if self.is_final or now >= self.expires_at:
            return ()
        return self.open_voters()

    def open_voters(self) -> tuple[str, ...]:
        """`eligible_voters` without the clock: who the current stage is routed to if the
        request has not expired — its approvers not yet counted, each replaced by their
        delegate when they named one and the delegate's approval now would be taken in their
        seat (the delegator may still vote: see `acting_as`).

        A delegator stays routed to herself when her delegate cannot fill her seat: he already
        voted, his own vote would fill his own seat of this stage (he holds one himself, and
        one person counts once), or the workflow would refuse it (`needed_later`: he is
        needed for a later stage). This is known from the approval alone, so the delegator
        is notified when the stage starts; a later vote or escalation that reroutes her seat
        back to her notifies her then (see `clearance.channels.routing`)."""
        if self.current_stage is None:
            return ()
        counted = self.counted
        completable: bool | None = None  # worked out once, and only if someone has a delegate
        routed = []
        for p in self.stage_approvers(self.stage_index):
            if p == self.requester or p in counted:
                continue
            delegate = self.delegate_of(p)
            if delegate is not None and delegate not in counted and self.acting_as(delegate) == p:
                if completable is None:
                    completable = self.can_still_complete()
                if not completable or self.can_still_complete(delegate, seat=p):
                    routed.append(delegate)
                    continue
            routed.append(p)
        return unique(routed)

    def would_count(self, person: str) -> bool:
        """Whether `person` approving now would fill a still-open slot of the current stage
        (in their own seat or in the seat of someone they stand in for)."""
        if self.current_stage is None or person == self.requester or person in self.counted:
            return False
        identity = self.acting_as(person)
        return identity is not None and self.would_count_as(identity)

    def would_count_as(self, identity: str) -> bool:
        """Whether an approval in `identity`'s seat would fill an open slot of the stage."""
        if self.current_stage is None or identity in self.counted:
            return False
        requirements = self.plan.stages[self.stage_index].requirements
        voters = self.stage_voters(self.stage_index)
        before = len(max_assignment(_stage_slots(requirements, voters)[0]))
        after = len(max_assignment(_stage_slots(requirements, (*voters, identity))[0]))
        return after > before

    def can_still_complete(
        self, extra_voter: str | None = None, *, seat: str | None = None
    ) -> bool:
        """Whether every remaining slot of this and later stages can still be filled by
        distinct people who have not counted yet, after `extra_voter` approves this stage in
        `seat`'s seat (default: their own).

        Seats fill the slots; but everyone who cast an approval, in any seat, is used up for
        the whole request like the seat they filled: a delegate who voted for someone cannot
        fill a slot of this stage or a later one (the rule `counted` states)."""
        if self.state is ApprovalState.APPROVED:
            return True
        if self.current_stage is None:
            return False
        index = self.stage_index
        approvals = [v for v in self.votes if v.decision is VoteDecision.APPROVE]
        current: set[str] = {
            v.on_behalf_of or v.person for v in approvals if v.stage_index == index
        }
        used: set[str | None] = {p for v in approvals for p in (v.person, v.on_behalf_of)}
        if extra_voter is not None:
            current.add(seat or extra_voter)
            used |= {extra_voter, seat}
        # This stage's slots: its seats filled so far and everyone not used up yet.
        excluded_now: set[str | None] = (used - current) | {self.requester}
        excluded_later = used | current | {self.requester}
        slots = requirement_slots(self.plan.stages[index].requirements, excluded_now)
        for stage in self.plan.stages[index + 1 :]:
            slots += requirement_slots(stage.requirements, excluded_later)
        return saturates(slots)

    def pending_on(self, person: str) -> bool:
        """Whether this request is waiting on `person`: their approval now would be accepted
        and move it forward (in their own seat, or as a delegate). (No clock here: check
        `expires_at` separately.)"""
        if self.state is not ApprovalState.PENDING or not self.would_count(person):
            return False
        identity = self.acting_as(person) or person
        return not self.can_still_complete() or self.can_still_complete(person, seat=identity)

    # -- storage -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "params": self.params,
            "binding_hash": self.binding_hash,
            "actor": self.actor,
            "requester": self.requester,
            "plan": self.plan.to_json(),
            "state": self.state.value,
            "stage_index": self.stage_index,
            "votes": [v.to_json() for v in self.votes],
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "decided_at": _iso(self.decided_at),
            "decided_reason": self.decided_reason,
            "released_at": _iso(self.released_at),
            "execution_state": self.execution_state.value if self.execution_state else None,
            "execution_result": self.execution_result,
            "executed_at": _iso(self.executed_at),
            "version": self.version,
            "delegations": [list(d) for d in self.delegations],
            "routing_log": [e.to_json() for e in self.routing_log],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Approval:
        execution = data.get("execution_state")
        return cls(
            id=str(data["id"]),
            action=str(data["action"]),
            params=dict(data["params"]),
            binding_hash=str(data["binding_hash"]),
            actor=dict(data["actor"]),
            requester=data.get("requester"),
            plan=ResolvedPlan.from_json(data["plan"]),
            state=ApprovalState(data["state"]),
            stage_index=int(data["stage_index"]),
            votes=tuple(Vote.from_json(v) for v in data["votes"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            decided_at=_from_iso(data.get("decided_at")),
            decided_reason=data.get("decided_reason"),
            released_at=_from_iso(data.get("released_at")),
            execution_state=ExecutionState(execution) if execution else None,
            execution_result=data.get("execution_result"),
            executed_at=_from_iso(data.get("executed_at")),
            version=int(data["version"]),
            delegations=tuple((str(a), str(b)) for a, b in data.get("delegations", ())),
            routing_log=tuple(RoutingEntry.from_json(e) for e in data.get("routing_log", ())),
        )


# ---------------------------------------------------------------------------------------------
# Matching: people to requirement slots


def _stage_slots(
    requirements: Sequence[ResolvedRequirement], voters: Sequence[str]
) -> tuple[list[tuple[str, ...]], list[int]]:
    """Slots for a stage restricted to `voters` (in vote order), and each slot's requirement."""
    slots: list[tuple[str, ...]] = []
    owners: list[int] = []
    for r, req in enumerate(requirements):
        allowed = set(req.approvers)
        pool = tuple(p for p in voters if p in allowed)
        for _ in range(max(req.required, 0)):
            slots.append(pool)
            owners.append(r)
    return slots, owners


def unique(people: Iterable[str]) -> tuple[str, ...]:
    """`people` in order, each once."""
    return tuple(dict.fromkeys(people))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
