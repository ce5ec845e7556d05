"""The durable outbox: work for the channels, written in the same transaction as the change
that caused it, and claimed by one dispatcher at a time (`FOR UPDATE SKIP LOCKED` on
PostgreSQL; SQLite's single writer serialises claims by itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from ..store.schema import outbox

LEASE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    approval_id: str | None
    channel: str | None
    recipient: str | None
    payload: dict[str, Any]
    attempts: int


def enqueue(
    conn: Connection,
    *,
    kind: str,
    now: datetime,
    approval_id: str | None = None,
    channel: str | None = None,
    recipient: str | None = None,
    payload: dict[str, Any] | None = None,
    available_at: datetime | None = None,
) -> None:
    conn.execute(
        insert(outbox).values(
            kind=kind,
            approval_id=approval_id,
            channel=channel,
            recipient=recipient,
            payload=payload or {},
            created_at=now,
            available_at=available_at or now,
            attempts=0,
        )
    )


def claim(conn: Connection, worker: str, now: datetime, limit: int = 20) -> list[Job]:
    """Take up to `limit` due jobs for `worker` for one lease period."""
    due = and_(
        outbox.c.sent_at.is_(None),
        outbox.c.available_at <= now,
        or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < now),
    )
    query = select(outbox.c.id).where(due).order_by(outbox.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [int(i) for i in conn.execute(query).scalars()]
    if not ids:
        return []
    conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(ids))
        .values(locked_by=worker, locked_until=now + LEASE)
    )
    rows = conn.execute(select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)).mappings()
    return [
        Job(
            int(r["id"]),
            r["kind"],
            r["approval_id"],
            r["channel"],
            r["recipient"],
            dict(r["payload"] or {}),
            int(r["attempts"]),
        )
        for r in rows
    ]


def complete(conn: Connection, job_id: int, now: datetime) -> None:
    conn.execute(update(outbox).where(outbox.c.id == job_id).values(sent_at=now, locked_until=None))


def retry_later(
    conn: Connection,
    job_id: int,
    error: str,
    at: datetime,
    payload: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {
        "attempts": outbox.c.attempts + 1,
        "available_at": at,
        "locked_by": None,
        "locked_until": None,
        "last_error": error[:2000],
    }
    if payload is not None:
        values["payload"] = payload
    conn.execute(update(outbox).where(outbox.c.id == job_id).values(**values))


def set_payload(conn: Connection, job_id: int, payload: dict[str, Any]) -> None:
    """Replace a job's payload (the dispatcher notes an attempt in it before sending)."""
    conn.execute(update(outbox).where(outbox.c.id == job_id).values(payload=payload))


def next_due(conn: Connection) -> datetime | None:
    from ..store.schema import UTCDateTime

    value = conn.execute(
        select(func.min(outbox.c.available_at)).where(outbox.c.sent_at.is_(None))
    ).scalar_one_or_none()
    if value is None:
        return None
    converted = UTCDateTime().process_result_value(value, conn.dialect)
    return converted if isinstance(converted, datetime) else None


def pending_count(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        ).scalar_one()
    )
