"""Browser sessions for the web inbox: an opaque cookie token, stored only as its SHA-256.

A token is 32 random bytes (`secrets.token_urlsafe(32)`), so a fast hash is the right one:
there is nothing to brute-force, and the database never holds a usable token. Each session
carries its own CSRF token, which every state-changing form must echo back. Sessions expire
`SESSION_TTL` after sign-in (an absolute lifetime, not a sliding one) and can be revoked;
`lookup` refuses both.

Plain functions over a SQLAlchemy *sync* `Connection`, like `keys` and `passwords`: writes
run inside the audit writer's transaction (a sign-in and its audit entry commit together),
reads go through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from ..store.schema import sessions

__all__ = [
    "MAX_TOKEN_LENGTH",
    "SESSION_TTL",
    "NewSession",
    "Session",
    "create",
    "csrf_matches",
    "lookup",
    "purge",
    "revoke",
    "revoke_person",
    "token_hash",
]

SESSION_TTL = timedelta(hours=12)
#: Longer cookie values are refused before hashing: a real token is 43 characters.
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in person. `id` is the SHA-256 (hex) of the cookie token, never the token."""

    id: str
    person_id: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just created: `token` goes into the cookie once and is never stored."""

    session: Session
    token: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    conn: Connection, person_id: str, now: datetime, *, ttl: timedelta = SESSION_TTL
) -> NewSession:
    """Start a session for `person_id` (who has just proved who they are)."""
    if ttl <= timedelta(0):
        raise ValueError("a session lifetime must be positive")
    token = secrets.token_urlsafe(32)
    session = Session(
        id=token_hash(token),
        person_id=person_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + ttl,
    )
    conn.execute(
        insert(sessions).values(
            id=session.id, person_id=person_id, csrf_token=session.csrf_token,
            created_at=now, expires_at=session.expires_at,
        )
    )  # fmt: skip
    return NewSession(session, token)


def lookup(conn: Connection, token: str, now: datetime) -> Session | None:
    """The live session behind a cookie token; None when unknown, expired or revoked."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    row = (
        conn.execute(select(sessions).where(sessions.c.id == token_hash(token))).mappings().first()
    )
    if row is None or row["revoked_at"] is not None or now >= row["expires_at"]:
        return None
    return Session(
        id=row["id"],
        person_id=row["person_id"],
        csrf_token=row["csrf_token"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def revoke(conn: Connection, session_id: str, now: datetime) -> bool:
    """End one session (sign-out). True when it was live until now."""
    result = conn.execute(
        update(sessions)
        .where(and_(sessions.c.id == session_id, sessions.c.revoked_at.is_(None)))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def revoke_person(conn: Connection, person_id: str, now: datetime) -> int:
    """End every live session of `person_id` (a password change, a departure)."""
    result = conn.execute(
        update(sessions)
        .where(and_(sessions.c.person_id == person_id, sessions.c.revoked_at.is_(None)))
        .values(revoked_at=now)
    )
    return int(result.rowcount)


def purge(conn: Connection, before: datetime) -> int:
    """Delete sessions that expired or were revoked before `before` (housekeeping)."""
    result = conn.execute(
        delete(sessions).where(or_(sessions.c.expires_at < before, sessions.c.revoked_at < before))
    )
    return int(result.rowcount)


def csrf_matches(session: Session, submitted: str | None) -> bool:
    """Constant-time check of a form's CSRF token against the session's."""
    if not submitted:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), submitted.encode())
