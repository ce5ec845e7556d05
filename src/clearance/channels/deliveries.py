"""Delivery records: which message went to whom through which channel, or why it did not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select

from ..store.schema import deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    approval_id: str
    person: str
    channel: str
    stage_index: int
    status: str
    message_ref: dict[str, Any] | None
    attempts: int
    last_error: str | None
    updated_at: datetime


def record(
    conn: Connection,
    *,
    approval_id: str,
    person: str,
    channel: str,
    stage_index: int,
    status: str,
    now: datetime,
    message_ref: dict[str, Any] | None = None,
    attempts: int = 1,
    error: str | None = None,
) -> None:
    key = and_(
        deliveries.c.approval_id == approval_id,
        deliveries.c.person == person,
        deliveries.c.channel == channel,
        deliveries.c.stage_index == stage_index,
    )
    conn.execute(delete(deliveries).where(key))
    conn.execute(
        insert(deliveries).values(
            approval_id=approval_id,
            person=person,
            channel=channel,
            stage_index=stage_index,
            status=status,
            message_ref=message_ref,
            attempts=attempts,
            last_error=error,
            created_at=now,
            updated_at=now,
        )
    )


def for_approval(conn: Connection, approval_id: str) -> list[Delivery]:
    rows = conn.execute(
        select(deliveries).where(deliveries.c.approval_id == approval_id).order_by(deliveries.c.id)
    ).mappings()
    return [
        Delivery(
            r["approval_id"],
            r["person"],
            r["channel"],
            int(r["stage_index"]),
            r["status"],
            r["message_ref"],
            int(r["attempts"]),
            r["last_error"],
            r["updated_at"],
        )
        for r in rows
    ]
