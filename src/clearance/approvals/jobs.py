"""Durable timers for reminders and escalations: one row per pending approval that has one.

The row holds when the approval's next reminder or escalation is due
(`escalation.next_due`). It is rewritten in the same transaction as every change of the
approval (`schedule`, an in-transaction hook of the approval service), so it survives a
restart and never disagrees with the approval it belongs to.

Firing: a scheduler claims due rows for a lease (`claim`: `FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several servers on one database never take the same row; SQLite's single
writer serialises claims by itself), applies `workflow.remind_and_escalate` through the
service's compare-and-set, and the change's own hook writes the next due time. Whatever
happens in between — a crash after the claim, a vote arriving, a second server — the
approval's recorded `routing_log` and its version decide: each reminder and each level
fires once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from ..store.schema import UTCDateTime, approval_timers
from . import escalation
from .model import Approval, ApprovalState

LEASE = timedelta(seconds=60)


def has_routing(approval: Approval) -> bool:
    return any(stage.routing is not None for stage in approval.plan.stages)


def schedule(conn: Connection, approval: Approval) -> datetime | None:
    """Write (or clear) the approval's timer from its current state; returns the due time."""
    if not has_routing(approval):
        return None
    due = escalation.next_due(approval) if approval.state is ApprovalState.PENDING else None
    conn.execute(delete(approval_timers).where(approval_timers.c.approval_id == approval.id))
    if due is not None:
        conn.execute(insert(approval_timers).values(approval_id=approval.id, due_at=due))
    return due


def claim(conn: Connection, worker: str, now: datetime, limit: int = 50) -> list[str]:
    """Take up to `limit` due timers for `worker` for one lease; returns their approval ids."""
    due = and_(
        approval_timers.c.due_at <= now,
        or_(approval_timers.c.locked_until.is_(None), approval_timers.c.locked_until < now),
    )
    query = (
        select(approval_timers.c.approval_id)
        .where(due)
        .order_by(approval_timers.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [str(i) for i in conn.execute(query).scalars()]
    if ids:
        conn.execute(
            update(approval_timers)
            .where(approval_timers.c.approval_id.in_(ids))
            .values(locked_by=worker, locked_until=now + LEASE)
        )
    return ids


def settle(conn: Connection, approval: Approval | None, approval_id: str, worker: str) -> None:
    """After a firing: if the timer is still ours (the firing changed nothing, so no hook
    rewrote it), write it again from the approval as it stands, or drop it."""
    held = conn.execute(
        select(approval_timers.c.locked_by).where(approval_timers.c.approval_id == approval_id)
    ).scalar_one_or_none()
    if held != worker:
        return
    if approval is None:
        conn.execute(delete(approval_timers).where(approval_timers.c.approval_id == approval_id))
        return
    if schedule(conn, approval) is None:
        conn.execute(delete(approval_timers).where(approval_timers.c.approval_id == approval_id))


def next_due(conn: Connection) -> datetime | None:
    value = conn.execute(select(func.min(approval_timers.c.due_at))).scalar_one_or_none()
    if value is None:
        return None
    # min() loses the column's type in SQLite (it comes back as text): convert it ourselves.
    converted = UTCDateTime().process_result_value(value, conn.dialect)
    return converted if isinstance(converted, datetime) else None


def due_at(conn: Connection, approval_id: str) -> datetime | None:
    """The approval's scheduled timer, if any (for tests and the request page)."""
    value = conn.execute(
        select(approval_timers.c.due_at).where(approval_timers.c.approval_id == approval_id)
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None
