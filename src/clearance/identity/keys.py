"""API keys: `clr_<prefix>_<secret>`, stored as a SHA-256 of the secret, shown once.

Keys are 32 random bytes, so a fast hash is the right one (there is nothing to brute-force);
comparison is constant-time. An agent key (`kind=agent`) may check actions and read its own
agent's approvals; a personal key (`kind=person`) acts as that approver.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, and_, insert, select, update

from ..store.schema import api_keys

KeyKind = Literal["agent", "person"]
PREFIX = "clr"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    kind: KeyKind
    subject: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: `token` is shown once and never stored."""

    key: ApiKey
    token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    conn: Connection, *, kind: KeyKind, subject: str, now: datetime, label: str | None = None
) -> NewKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key_id = "key_" + prefix
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            prefix=prefix,
            secret_hash=_hash(secret),
            kind=kind,
            subject=subject,
            label=label,
            created_at=now,
        )
    )
    key = ApiKey(key_id, kind, subject, label, now)
    return NewKey(key, f"{PREFIX}_{prefix}_{secret}")


def verify_token(conn: Connection, token: str, now: datetime) -> ApiKey | None:
    """The key a token belongs to, if it is valid and not revoked; None otherwise."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    row = conn.execute(select(api_keys).where(api_keys.c.prefix == parts[1])).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(row["secret_hash"], _hash(parts[2])):
        return None
    return ApiKey(
        row["id"],
        row["kind"],
        row["subject"],
        row["label"],
        row["created_at"],
        row["revoked_at"],
        row["last_used_at"],
    )


def revoke_key(conn: Connection, key_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(and_(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)))
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def list_keys(conn: Connection) -> list[ApiKey]:
    rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings()
    return [
        ApiKey(
            r["id"],
            r["kind"],
            r["subject"],
            r["label"],
            r["created_at"],
            r["revoked_at"],
            r["last_used_at"],
        )
        for r in rows
    ]


def any_agent_key(conn: Connection) -> bool:
    row = conn.execute(
        select(api_keys.c.id).where(
            and_(api_keys.c.kind == "agent", api_keys.c.revoked_at.is_(None))
        )
    ).first()
    return row is not None
