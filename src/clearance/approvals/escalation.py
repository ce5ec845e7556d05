"""Reminders and escalation: what is due for an approval at `now`, and applying it. Pure.

A stage's `Routing` (see `clearance.policy.model.Routing`) drives three clocks, all counted
from the moment the stage started (stage 1: when the request was created; a later stage:
when the vote that met the stage before it was cast):

- reminder n is due at `start + n × remind_after`; when one fires, the people the stage is
  routed to and who have not voted are notified again. After downtime only the latest due
  reminder fires (no burst of catch-up messages);
- escalation level k is due at `start + k × escalate_after`, before the deadline. The
  levels are: the rest of the group when `pick` paged only a few (the requirement's
  `reserve`), then each entry of `escalate_to`. A level adds its people to every requirement
  of the stage (never the requester; `required` is unchanged) and notifies them;
- at the deadline, `on_timeout: escalate` fires the next level that has not fired and moves
  the deadline by `escalate_after` (else by the plan's timeout); with no level left, or with
  `on_timeout: deny`, the request expires.

Every function takes `now` and returns a `workflow.Transition`; events carry the people
reached, so the service audits them and the channels notify them. Firing is idempotent: what
already fired is recorded on the approval (`routing_log`), and the store's compare-and-set on
the approval's version makes concurrent firings (two servers, a vote arriving) one outcome.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from ..policy.model import OnTimeout, ResolvedRequirement, ResolvedStage, Routing
from . import workflow
from .model import Approval, ApprovalState, RoutingEntry, VoteDecision

REMINDER = "reminder"
ESCALATION = "escalation"


def routing_of(approval: Approval) -> Routing | None:
    """The current stage's routing, or None (no stage open, or none configured)."""
    stage = approval.current_stage
    return stage.routing if stage is not None else None


def stage_started_at(approval: Approval, index: int) -> datetime:
    """When stage `index` opened: at creation, or when the vote that met the previous stage
    was cast."""
    if index <= 0:
        return approval.created_at
    times = [
        v.at
        for v in approval.votes
        if v.stage_index == index - 1 and v.decision is VoteDecision.APPROVE
    ]
    return max(times) if times else approval.created_at


def levels(stage: ResolvedStage) -> tuple[tuple[str, ...], ...]:
    """The stage's escalation levels, in order: its reserve (when `pick` held people back),
    then each `escalate_to` entry."""
    routing = stage.routing
    out: list[tuple[str, ...]] = []
    reserve = tuple(dict.fromkeys(p for r in stage.requirements for p in r.reserve))
    if reserve:
        out.append(reserve)
    if routing is not None:
        out.extend(routing.escalate_to)
    return tuple(out)


def fired(approval: Approval, kind: str, index: int | None = None) -> int:
    """The highest `kind` level that fired for stage `index` (default: the current one)."""
    stage = approval.stage_index if index is None else index
    return max(
        (e.level for e in approval.routing_log if e.kind == kind and e.stage_index == stage),
        default=0,
    )


def next_due(approval: Approval) -> datetime | None:
    """When the next reminder or escalation of the current stage is due (before the deadline),
    or None when nothing more will fire before it."""
    stage = approval.current_stage
    if stage is None or stage.routing is None:
        return None
    routing = stage.routing
    start = stage_started_at(approval, approval.stage_index)
    candidates: list[datetime] = []
    if routing.remind_after_s:
        n = fired(approval, REMINDER) + 1
        candidates.append(start + timedelta(seconds=n * routing.remind_after_s))
    if routing.escalate_after_s:
        k = fired(approval, ESCALATION) + 1
        if k <= len(levels(stage)):
            candidates.append(start + timedelta(seconds=k * routing.escalate_after_s))
    due = [c for c in candidates if c < approval.expires_at]
    return min(due) if due else None


def fire(approval: Approval, now: datetime) -> workflow.Transition:
    """Everything due at `now` on the current stage, before the deadline: the escalation
    levels due, then at most one reminder. Unchanged when nothing is due (or it already
    fired, or the request is decided or past its deadline: see `on_deadline`)."""
    stage = approval.current_stage
    if stage is None or stage.routing is None or now >= approval.expires_at:
        return workflow.Transition(approval, changed=False)
    routing = stage.routing
    elapsed = (now - stage_started_at(approval, approval.stage_index)).total_seconds()
    current = approval
    events: list[workflow.Event] = []  # one change: the version moves by one at the end
    if routing.escalate_after_s:
        due_level = min(int(elapsed // routing.escalate_after_s), len(levels(stage)))
        while fired(current, ESCALATION) < due_level:
            current, event = _escalate_one(current, now)
            events.append(event)
    if routing.remind_after_s:
        due_reminder = int(elapsed // routing.remind_after_s)
        if due_reminder > fired(current, REMINDER):
            current, event = _remind(current, now, due_reminder)
            events.append(event)
    if not events:
        return workflow.Transition(approval, changed=False)
    return workflow.Transition(replace(current, version=approval.version + 1), tuple(events))


def on_deadline(approval: Approval, now: datetime) -> workflow.Transition | None:
    """At or past the deadline with `on_timeout: escalate` and a level left: fire it and move
    the deadline. None when the request should simply expire."""
    routing = routing_of(approval)
    stage = approval.current_stage
    if routing is None or stage is None or routing.on_timeout is not OnTimeout.ESCALATE:
        return None
    if fired(approval, ESCALATION) >= len(levels(stage)):
        return None
    escalated, event = _escalate_one(approval, now)
    period = routing.escalate_after_s or approval.plan.timeout_s
    extended = replace(
        escalated, expires_at=now + timedelta(seconds=period), version=approval.version + 1
    )
    return workflow.Transition(extended, (event,))


def to_notify(approval: Approval, now: datetime) -> tuple[str, ...]:
    """Whom a change at `now` that reminded or escalated should notify: the people of the
    entries it recorded (a delegate in place of the person who named them), for the stage
    still open."""
    if approval.state is not ApprovalState.PENDING:
        return ()
    people = [
        p
        for e in approval.routing_log
        if e.at == now and e.stage_index == approval.stage_index
        for p in e.people
    ]
    return tuple(dict.fromkeys(people))


# ---------------------------------------------------------------------------------------------


def _escalate_one(approval: Approval, now: datetime) -> tuple[Approval, workflow.Event]:
    """Fire the next escalation level of the current stage (the caller checked one is left)."""
    index = approval.stage_index
    stage = approval.plan.stages[index]
    level = fired(approval, ESCALATION) + 1
    added = tuple(p for p in levels(stage)[level - 1] if p != approval.requester)
    requirements = tuple(
        ResolvedRequirement(
            approvers=tuple(dict.fromkeys((*r.approvers, *added))),
            required=r.required,
            reserve=r.reserve,  # kept: the levels stay numbered as they were
        )
        for r in stage.requirements
    )
    stages = list(approval.plan.stages)
    stages[index] = replace(stage, requirements=requirements)
    widened = replace(approval, plan=replace(approval.plan, stages=tuple(stages)))
    counted = widened.counted
    before = set(approval.stage_approvers(index))
    reached = tuple(
        dict.fromkeys(
            widened.delegate_of(p) or p for p in added if p not in counted and p not in before
        )
    )
    entry = RoutingEntry(ESCALATION, index, level, now, reached)
    widened = replace(widened, routing_log=(*approval.routing_log, entry))
    return widened, workflow.Event(
        workflow.EventKind.ESCALATED, stage_index=index, people=reached, level=level
    )


def _remind(approval: Approval, now: datetime, level: int) -> tuple[Approval, workflow.Event]:
    index = approval.stage_index
    waiting = tuple(p for p in approval.open_voters() if approval.pending_on(p))
    entry = RoutingEntry(REMINDER, index, level, now, waiting)
    reminded = replace(approval, routing_log=(*approval.routing_log, entry))
    return reminded, workflow.Event(
        workflow.EventKind.REMINDED, stage_index=index, people=waiting, level=level
    )
