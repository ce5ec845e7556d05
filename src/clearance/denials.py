"""Remembered denials ("rejected, don't ask again").

With `controls: {remember_denials: 1h}`, when a person denies a request, the denial is
remembered — keyed by the request's binding hash (action, parameters and actor, the same hash
that binds an approval to one exact call) — in the same transaction as the denial. For the
window that follows, an identical request from the same actor is denied at once with the
earlier reason (audited, with the earlier request's id) instead of paging people again. A
different parameter, a different agent or user, or the end of the window asks people again.
Only people's denials are remembered: expiries and cancellations are not denials.

The denial goes back to the agent in a form a model can read (`agent_feedback`): who denied,
their reason, and what to do instead of retrying.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from .approvals.model import ApprovalState, VoteDecision
from .approvals.records import StoredApproval
from .audit.writer import WriteTx
from .policy import Decision, Effect
from .store.schema import remembered_denials

_RECALL = select(remembered_denials).where(remembered_denials.c.binding_hash == bindparam("h"))


@dataclass(frozen=True, slots=True)
class RememberedDenial:
    binding_hash: str
    approval_id: str
    reason: str
    denied_by: str | None
    denied_at: datetime


def remember(conn: Connection, stored: StoredApproval, now: datetime) -> None:
    """Remember a people's denial of `stored` (replacing an older one for the same call)."""
    a = stored.approval
    if a.state is not ApprovalState.DENIED:
        return
    denier = next((v.person for v in a.votes if v.decision is VoteDecision.DENY), None)
    conn.execute(
        delete(remembered_denials).where(remembered_denials.c.binding_hash == a.binding_hash)
    )
    conn.execute(
        insert(remembered_denials).values(
            binding_hash=a.binding_hash,
            approval_id=a.id,
            reason=a.decided_reason or "denied",
            denied_by=denier,
            denied_at=a.decided_at or now,
        )
    )


def recall(
    conn: Connection, binding_hash: str, now: datetime, window_s: int
) -> RememberedDenial | None:
    """The denial of this exact call within the last `window_s` seconds, if any (one
    primary-key read)."""
    row = conn.execute(_RECALL, {"h": binding_hash}).mappings().first()
    if row is None or row["denied_at"] <= now - timedelta(seconds=window_s):
        return None
    return RememberedDenial(
        row["binding_hash"], row["approval_id"], row["reason"], row["denied_by"], row["denied_at"]
    )


def hook(enabled: Any) -> Any:
    """An `ApprovalService.in_transaction` hook that remembers denials while `enabled()`."""

    def on_change(
        tx: WriteTx, stored: StoredApproval, events: tuple[str, ...], now: datetime
    ) -> None:
        if "approval.denied" in events and enabled():
            remember(tx.conn, stored, now)

    return on_change


def as_decision(decision: Decision, earlier: RememberedDenial, window_s: int) -> Decision:
    """The policy's `approve` decision turned into the earlier denial, with its reason."""
    who = earlier.denied_by or "an approver"
    when = earlier.denied_at.isoformat().replace("+00:00", "Z")
    reason = (
        f"denied earlier by {who} at {when} (request {earlier.approval_id}): {earlier.reason}. "
        f"The same request is denied without asking again for {_span(window_s)}; change the "
        "request or ask a person instead of retrying"
    )
    return Decision(
        effect=Effect.DENY,
        rules=decision.rules,
        reasons=(reason,),
        policy_version=decision.policy_version,
        decision_id=decision.decision_id,
        redact=decision.redact,
    )


def agent_feedback(stored: StoredApproval) -> dict[str, Any] | None:
    """A denied request, for an agent (and the model behind it) to read: who, why, what now."""
    a = stored.approval
    if a.state is not ApprovalState.DENIED:
        return None
    denier = next((v.person for v in a.votes if v.decision is VoteDecision.DENY), None)
    return {
        "denied": True,
        "denied_by": denier,
        "reason": a.decided_reason,
        "action": a.action,
        "approval_id": a.id,
        "instruction": (
            f"A person denied this request ({a.action}) because: {a.decided_reason}. Do not "
            "retry the same request; change your plan, or tell the user why it was denied."
        ),
    }


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


__all__ = ["RememberedDenial", "agent_feedback", "as_decision", "hook", "recall", "remember"]
