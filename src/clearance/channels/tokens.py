"""Opaque tokens carried by buttons and links: they name a request and a recipient.

A token grants nothing by itself: whoever clicks is identified by the platform's verified user
id (or, for email, by the single-use link sent to one address), and the approval service
decides whether that person may vote. Only the token's SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, insert, select, update

from ..store.schema import channel_tokens


@dataclass(frozen=True, slots=True)
class TokenInfo:
    approval_id: str
    person: str
    channel: str
    expires_at: datetime
    used_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    conn: Connection,
    *,
    approval_id: str,
    person: str,
    channel: str,
    now: datetime,
    expires_at: datetime,
) -> str:
    """A new token (22 URL-safe characters: fits Telegram's 64-byte callback data)."""
    token = secrets.token_urlsafe(16)
    conn.execute(
        insert(channel_tokens).values(
            token_hash=digest(token),
            approval_id=approval_id,
            person=person,
            channel=channel,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return token


def lookup(conn: Connection, token: str) -> TokenInfo | None:
    row = (
        conn.execute(select(channel_tokens).where(channel_tokens.c.token_hash == digest(token)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return TokenInfo(
        row["approval_id"], row["person"], row["channel"], row["expires_at"], row["used_at"]
    )


def use_once(conn: Connection, token: str, now: datetime) -> bool:
    """Mark a single-use token used; False when it was used already (compare-and-set)."""
    result = conn.execute(
        update(channel_tokens)
        .where(
            and_(channel_tokens.c.token_hash == digest(token), channel_tokens.c.used_at.is_(None))
        )
        .values(used_at=now)
    )
    return result.rowcount == 1
