"""Small builders for approval tests: plans, approvals and votes at a fixed instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from clearance.approvals import Approval, Vote, VoteDecision, cast_vote, open_approval
from clearance.canonical import binding_hash
from clearance.policy.model import ResolvedPlan, ResolvedRequirement, ResolvedStage

if TYPE_CHECKING:
    from clearance.gateway import Gateway

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
SOON = NOW + timedelta(minutes=5)
PARAMS = {"amount": 7200, "destination_country": "DE"}
ACTOR = {"user": "carol", "agent": "billing-bot"}
BINDING = binding_hash("payments.transfer", PARAMS, ACTOR)


def req(*approvers: str, required: int = 1) -> ResolvedRequirement:
    return ResolvedRequirement(approvers=approvers, required=required)


def stage(name: str, *requirements: ResolvedRequirement) -> ResolvedStage:
    return ResolvedStage(name=name, requirements=requirements)


def plan(*stages: ResolvedStage, timeout_s: int = 3600) -> ResolvedPlan:
    return ResolvedPlan(stages=stages, timeout_s=timeout_s)


def two_stage() -> ResolvedPlan:
    """Manager (alice or bob), then finance director (dana or erin)."""
    return plan(
        stage("manager", req("alice", "bob")), stage("finance-director", req("dana", "erin"))
    )


def new(p: ResolvedPlan, requester: str | None = "carol") -> Approval:
    actor = {**ACTOR, "user": requester} if requester is not None else {"agent": "billing-bot"}
    return open_approval(
        approval_id="apr_1",
        action="payments.transfer",
        params=PARAMS,
        binding_hash=binding_hash("payments.transfer", PARAMS, actor),
        actor=actor,
        plan=p,
        now=NOW,
    )


def approve(person: str, comment: str | None = None) -> Vote:
    return Vote(person, VoteDecision.APPROVE, 0, SOON, comment, "web")


def deny(person: str, comment: str | None) -> Vote:
    return Vote(person, VoteDecision.DENY, 0, SOON, comment, "slack")


def run(approval: Approval, *votes: Vote) -> Approval:
    """Apply votes in order, each at SOON; any rejection propagates."""
    for vote in votes:
        approval = cast_vote(approval, vote, SOON).approval
    return approval


def away_for_a_week(gw: Gateway, delegator: str, delegate: str) -> None:
    """`delegator` names `delegate` from the gateway's now, for seven days."""
    from clearance.delegation import set_delegation

    now = gw.clock()
    gw.writer.run_sync(
        lambda tx: set_delegation(
            tx.conn,
            gw.policy.directory,
            delegator=delegator,
            delegate=delegate,
            until=now + timedelta(days=7),
            now=now,
        )
    )
