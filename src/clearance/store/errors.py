"""Store errors, translated at the boundary.

Driver exceptions (sqlite3, psycopg, asyncpg, SQLAlchemy's wrappers, socket errors) never leave
the store: anything that means "the database cannot be used right now" becomes
`StoreUnavailable`, so callers fail closed with one `except` (the server answers 503).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

__all__ = [
    "DatabaseNotFound",
    "StoreUnavailable",
    "is_unavailable",
    "translate_errors",
    "unavailable_from",
]


class StoreUnavailable(Exception):
    """The database is down, unreachable, locked or otherwise unusable; nothing was written."""


class DatabaseNotFound(Exception):
    """No Clearance database where one was expected to exist (`Database.check_exists`):
    nothing was created there."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database could not be used (as opposed to a bad statement)."""
    if isinstance(exc, StoreUnavailable):
        return True
    if _unavailable_sqlstate(exc):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # OperationalError: connection refused/lost, "database is locked", "unable to open
        # database file", disk I/O errors. InterfaceError: connection already closed.
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    # The drivers' own errors, when a DB-API cursor is used directly (the audit hot path).
    if isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError):
        return True
    if type(exc).__module__.startswith("psycopg"):
        return any(c.__name__ in _PSYCOPG_UNAVAILABLE for c in type(exc).__mro__)
    # Pool exhausted (sqlalchemy.exc.TimeoutError), socket errors raised while connecting
    # (asyncpg raises ConnectionRefusedError, an OSError), connect timeouts.
    return isinstance(
        exc, sa_exc.TimeoutError | sa_exc.DisconnectionError | OSError | asyncio.TimeoutError
    )


_PSYCOPG_UNAVAILABLE = frozenset({"OperationalError", "InterfaceError"})

# PostgreSQL's SQLSTATE classes that mean "this server can't serve you now": connection
# exceptions (08), insufficient resources (53), operator intervention such as shutdown (57),
# system errors (58), and a database that doesn't exist (3D000). asyncpg's errors reach us
# wrapped in SQLAlchemy's generic `Error`, so the code, not the class, says what happened.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")


def _unavailable_sqlstate(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(3):  # the exception, the driver's, and the one it was raised from
        if seen is None:
            return False
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            if code.startswith(_UNAVAILABLE_CLASSES) or code == "3D000":
                return True
            # 55000 covers much; at connect time it is "not currently accepting connections".
            return code == "55000" and "accepting connections" in str(seen)
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def unavailable_from(exc: BaseException) -> StoreUnavailable:
    """A `StoreUnavailable` describing `exc` (without SQL text or bound parameters)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    err = StoreUnavailable(f"database unavailable: {detail}")
    err.__cause__ = exc
    return err


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver errors that mean "database unavailable" as `StoreUnavailable`.

    Works around `await` too: use it as a plain `with` block inside async code.
    """
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable_from(exc) from exc
        raise
