"""Building the neutral `Message` for a request, and the one-line status after a change."""

from __future__ import annotations

from ..approvals import escalation
from ..approvals.model import ApprovalState, VoteDecision
from ..approvals.records import StoredApproval
from ..directory import Directory, Person
from .base import Message, StageView


def status_line(stored: StoredApproval, directory: Directory) -> str:
    """ "Approved by Alice Ng at 14:02 — stage 1 of 2 done; waiting for finance", "Denied by
    Bob Ortiz: not today", …

    A pending request whose latest news is a reminder or an escalation of its current stage
    (recorded in `routing_log`, after the latest vote) says so first — "Reminder: still
    waiting since 09:00." — the time being when the current stage started; otherwise it
    names the latest approval: "stage N of M done" counts the stages met, and an approval
    that has not met its stage yet says how many of the stage's approvals are in."""
    a = stored.approval
    count = len(a.plan.stages)
    name = directory.display_name
    if a.state is ApprovalState.PENDING:
        index = a.stage_index
        current = a.plan.stages[index].name
        stage = f"stage {index + 1} of {count}"
        progress = a.stage_progress(index)
        have = sum(len(r.counted) for r in progress)
        need = sum(r.required for r in progress)
        done = [v for v in a.votes if v.decision is VoteDecision.APPROVE]
        last = done[-1] if done else None
        nudge = next((e for e in reversed(a.routing_log) if e.stage_index == index), None)
        if nudge is not None and (last is None or nudge.at > last.at):
            waiting = f"Waiting for {current} ({stage})"
            if have:
                waiting += f": {have} of {need} approvals so far"
            since = escalation.stage_started_at(a, index).strftime("%H:%M")
            if nudge.kind == escalation.REMINDER:
                return f"Reminder: still waiting since {since}. {waiting}"
            return f"Escalated: nobody answered since {since}, so more people are asked. {waiting}"
        if last is None:
            return f"Waiting for {current} ({stage})"
        approved = f"Approved by {last.acting(name)} at {last.at.strftime('%H:%M')}"
        if last.stage_index < index:  # that approval met the stage before this one
            return f"{approved} — stage {index} of {count} done; waiting for {current}"
        return f"{approved} — {have} of {need} approvals for {current} ({stage})"
    if a.state is ApprovalState.APPROVED and not any(
        v.decision.value == "approve" for v in a.votes
    ):
        return f"Approved: {a.decided_reason or 'approved'}"  # e.g. an emergency override
    if a.state is ApprovalState.APPROVED:
        names = ", ".join(v.acting(name) for v in a.votes if v.decision is VoteDecision.APPROVE)
        at = a.decided_at.strftime("%H:%M") if a.decided_at else ""
        return f"Approved by {names} at {at} — stage {count} of {count}"
    if a.state is ApprovalState.DENIED:
        deny = next((v for v in a.votes if v.decision.value == "deny"), None)
        who = directory.display_name(deny.person) if deny else "an approver"
        return f"Denied by {who}: {a.decided_reason or 'no reason given'}"
    if a.state is ApprovalState.EXPIRED:
        return "Expired: nobody decided in time; the action did not run"
    return f"Cancelled: {a.decided_reason or 'withdrawn'}"


def step_up_note(stored: StoredApproval, inbox_url: str) -> str | None:
    """For a stage with `mfa:` or `require_context:`: where to vote instead of here."""
    stage = stored.approval.current_stage
    if stage is None or (stage.mfa is None and not stage.require_context):
        return None
    needs = "requires second factor" if stage.mfa else "requires approving from an allowed place"
    return f"Open in the inbox ({needs}): {inbox_url}"


def build(
    stored: StoredApproval,
    directory: Directory,
    *,
    public_url: str,
    recipient: Person | None = None,
    token: str | None = None,
) -> Message:
    a = stored.approval
    index = min(a.stage_index, len(a.plan.stages) - 1)
    may_vote = (
        recipient is not None and a.state is ApprovalState.PENDING and a.pending_on(recipient.id)
    )
    inbox_url = f"{public_url.rstrip('/')}/ui/approvals/{a.id}"
    step_up = step_up_note(stored, inbox_url)
    if step_up:  # a channel cannot carry a second factor: no buttons, a link to the inbox
        may_vote = False
    return Message(
        approval_id=a.id,
        action=a.action,
        params=a.params,
        reasons=(*stored.reasons, step_up) if step_up else stored.reasons,
        requester=directory.display_name(a.requester) if a.requester else None,
        agent=stored.agent,
        stage=StageView(index, a.plan.stages[index].name, len(a.plan.stages)),
        expires_at=a.expires_at,
        state=a.state.value,
        status_line=status_line(stored, directory),
        approve_token=token if may_vote else None,
        deny_token=token if may_vote else None,
        always_token=token if may_vote and stored.decision.get("grant_offer") else None,
        inbox_url=inbox_url,
        recipient=recipient,
    )
