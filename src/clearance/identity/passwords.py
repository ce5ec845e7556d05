"""Approver passwords, hashed with argon2 (argon2-cffi's defaults, re-hashed when they change)."""

from __future__ import annotations

import functools
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, delete, insert, select

from ..store.schema import credentials

_hasher = PasswordHasher()
MIN_LENGTH = 8


@functools.cache
def _dummy() -> str:
    """Verified against when a person has no password, so that "unknown person" and "wrong
    password" take the same time. Built on first use (hashing costs ~0.1 s)."""
    return _hasher.hash("not-a-real-password")


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    return _hasher.hash(password)


def set_password(conn: Connection, person_id: str, password: str, now: datetime) -> None:
    hashed = hash_password(password)
    conn.execute(delete(credentials).where(credentials.c.person_id == person_id))
    conn.execute(
        insert(credentials).values(person_id=person_id, password_hash=hashed, updated_at=now)
    )


def check_password(conn: Connection, person_id: str, password: str) -> bool:
    stored = conn.execute(
        select(credentials.c.password_hash).where(credentials.c.person_id == person_id)
    ).scalar_one_or_none()
    try:
        _hasher.verify(stored or _dummy(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return stored is not None


def has_password(conn: Connection, person_id: str) -> bool:
    row = conn.execute(
        select(credentials.c.person_id).where(credentials.c.person_id == person_id)
    ).first()
    return row is not None
