"""Brute-force protection for the web inbox's sign-in: failures counted per person and per
client address, in the store (so a restart or a second server instance forgets nothing).

- `MAX_PER_PERSON` failures for one person id within `WINDOW` lock that id for `LOCK`;
- `MAX_PER_ADDRESS` failures from one address within `WINDOW` lock that address for `LOCK`
  (one address trying many ids: password spraying);
- while locked, sign-in is refused *before* the password is checked, with the same answer
  whatever the password, so a lock reveals nothing about it;
- a successful sign-in clears its person's count (not the address's).

Plain functions over a SQLAlchemy sync `Connection`, like `sessions`: writes run inside the
audit writer's transaction, next to their audit entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..store.schema import login_throttle

__all__ = [
    "LOCK",
    "MAX_PER_ADDRESS",
    "MAX_PER_PERSON",
    "WINDOW",
    "Lock",
    "locked",
    "record_failure",
    "subjects",
    "succeeded",
]

WINDOW = timedelta(minutes=15)
LOCK = timedelta(minutes=15)
MAX_PER_PERSON = 5
MAX_PER_ADDRESS = 20


@dataclass(frozen=True, slots=True)
class Lock:
    """A subject that may not sign in until `until`."""

    subject: str
    until: datetime


def subjects(person_id: str, address: str | None) -> list[str]:
    """The throttle keys of one attempt: the person id tried, and where it came from."""
    keys = [f"person:{person_id}"]
    if address:
        keys.append(f"ip:{address}")
    return keys


def locked(conn: Connection, keys: Iterable[str], now: datetime) -> Lock | None:
    """The lock that holds for any of `keys` at `now` (the one lasting longest), or None."""
    rows = conn.execute(
        select(login_throttle.c.subject, login_throttle.c.locked_until).where(
            login_throttle.c.subject.in_(list(keys)), login_throttle.c.locked_until > now
        )
    ).all()
    if not rows:
        return None
    subject, until = max(rows, key=lambda r: r[1])
    return Lock(subject, until)


def record_failure(conn: Connection, keys: Iterable[str], now: datetime) -> Lock | None:
    """Count a failed attempt for each of `keys`; the lock this failure set off, if any."""
    started: Lock | None = None
    for key in keys:
        limit = MAX_PER_ADDRESS if key.startswith("ip:") else MAX_PER_PERSON
        row = conn.execute(
            select(login_throttle.c.failures, login_throttle.c.window_start).where(
                login_throttle.c.subject == key
            )
        ).first()
        if row is None or now - row[1] >= WINDOW:
            failures, window_start = 1, now
        else:
            failures, window_start = int(row[0]) + 1, row[1]
        until = now + LOCK if failures >= limit else None
        values = {"failures": failures, "window_start": window_start, "locked_until": until}
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(login_throttle).values(subject=key, **values))
            except IntegrityError:  # another attempt counted first, in parallel: add to it
                conn.execute(
                    update(login_throttle)
                    .where(login_throttle.c.subject == key)
                    .values(failures=login_throttle.c.failures + 1)
                )
        else:
            conn.execute(
                update(login_throttle).where(login_throttle.c.subject == key).values(**values)
            )
        if until is not None and (started is None or until > started.until):
            started = Lock(key, until)
    return started


def succeeded(conn: Connection, person_id: str) -> None:
    """A successful sign-in: forget the person's failures (an address keeps its count)."""
    conn.execute(delete(login_throttle).where(login_throttle.c.subject == f"person:{person_id}"))
