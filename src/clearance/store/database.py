"""Opening the database: one URL in, a sync engine and an async engine out.

The audit writer's hot path and the CLI use the sync engine (SQLite's `sqlite3` driver,
PostgreSQL's psycopg 3); readers in the server use the async engine (aiosqlite, asyncpg).
Both point at the same database, which is why an in-memory SQLite database is refused.

SQLite connections (both engines) get `journal_mode=WAL`, `synchronous=NORMAL`,
`foreign_keys=ON` and a busy timeout, and SQLAlchemy takes over `BEGIN` from the `sqlite3`
driver so that transactions, savepoints and DDL behave as documented. A sync connection with
the execution option `sqlite_begin="IMMEDIATE"` takes SQLite's write lock at `BEGIN`, which
is how writers in several processes sharing one file serialize.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from clearance.store.errors import DatabaseNotFound, translate_errors, unavailable_from

__all__ = ["Database", "open_database"]

_SQLITE_SYNC = "sqlite+pysqlite"
_SQLITE_ASYNC = "sqlite+aiosqlite"
_PG_SYNC = "postgresql+psycopg"
_PG_ASYNC = "postgresql+asyncpg"

#: Key of the PostgreSQL advisory lock held while migrating (any constant will do; this is
#: the first 8 bytes of sha256("clearance.migrate") as a signed integer).
_MIGRATE_LOCK_KEY = 0x2E1A_9C3B_5D7F_4A61
_MIGRATE_WAIT_MS = 120_000
_CONNECT_TIMEOUT_S = 5


@dataclass(eq=False)
class Database:
    """The database, reachable through a sync and an async engine. Create with `open_database`."""

    sync_engine: Engine
    async_engine: AsyncEngine
    dialect: str  # "sqlite" or "postgresql"
    busy_timeout_ms: int = 5000  # SQLite: how long a statement waits for a lock
    # `reading()`: each thread's kept connection, and all of them (to close them).
    _readers: threading.local = field(default_factory=threading.local, repr=False)
    _kept: list[Connection] = field(default_factory=list, repr=False)
    _kept_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def url(self) -> str:
        """The (sync) URL with any password hidden: safe to log."""
        return self.sync_engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    # -- connections -------------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A sync connection; driver errors meaning "unavailable" become `StoreUnavailable`."""
        with translate_errors(), self.sync_engine.connect() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A sync connection for a short read, kept open for this thread's next one.

        Checking a connection out of the pool and back costs more than a local SQLite read
        (about 50 µs against a few): reads on the event loop's thread reuse one connection.
        It is used outside a transaction, so each statement sees the latest commit; a
        transaction the read began (SQLAlchemy begins one on `execute`) is rolled back at the
        end, and a read that fails closes the connection (the next one opens a new one). A
        read nested in another on the same thread gets a pooled connection of its own.
        """
        readers = self._readers
        if getattr(readers, "busy", False):
            with self.connect() as nested:
                yield nested
            return
        conn: Connection | None = getattr(readers, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            with translate_errors():
                conn = self.sync_engine.connect()
            readers.conn = conn
            with self._kept_lock:
                self._kept.append(conn)
        readers.busy = True
        try:
            with translate_errors():
                yield conn
                if conn.in_transaction():
                    conn.rollback()
        except BaseException:
            readers.conn = None
            self._forget(conn)
            raise
        finally:
            readers.busy = False

    def _forget(self, conn: Connection) -> None:
        with self._kept_lock:
            if conn in self._kept:
                self._kept.remove(conn)
        _close_quietly(conn)

    def _close_kept(self) -> None:
        with self._kept_lock:
            kept, self._kept = self._kept, []
        for conn in kept:
            _close_quietly(conn)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A sync connection inside a transaction that commits on success."""
        with translate_errors(), self.sync_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def aconnect(self) -> AsyncIterator[AsyncConnection]:
        """An async connection (for reads); errors translated as in `connect`."""
        with translate_errors():
            async with self.async_engine.connect() as conn:
                yield conn

    # -- schema ------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration. Idempotent; safe when processes race.

        PostgreSQL: the whole upgrade runs in one transaction holding an advisory lock.
        SQLite: the whole upgrade runs in one `BEGIN IMMEDIATE` transaction.
        """
        from clearance.store.migrations import upgrade_head  # alembic is imported lazily

        with translate_errors(), self.sync_engine.connect() as conn:
            if self.is_sqlite:
                # Racing migrators queue on the write lock, each holding it while Alembic
                # loads its scripts: wait longer than a request would.
                _sqlite_pragma(conn, f"busy_timeout = {_MIGRATE_WAIT_MS}")
                conn.execution_options(sqlite_begin="IMMEDIATE")
            try:
                with conn.begin():
                    if not self.is_sqlite:
                        conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK_KEY}
                        )
                    upgrade_head(conn)
            finally:
                if self.is_sqlite:
                    _sqlite_pragma(conn, f"busy_timeout = {int(self.busy_timeout_ms)}")

    def check_exists(self) -> None:
        """Raise `DatabaseNotFound` unless this database already holds Clearance's tables,
        creating nothing: for commands that read or change what a gateway stored, so that one
        pointed at the wrong place says so instead of reporting on a new, empty database (an
        audit trail that verifies because there is none)."""
        if self.is_sqlite:
            path = Path(str(self.sync_engine.url.database))
            if not path.is_file():
                raise DatabaseNotFound(f"no Clearance database at {path}")
        try:
            with translate_errors():
                revision = self.current_revision()
        except DBAPIError as exc:  # e.g. a file that is not a SQLite database
            raise DatabaseNotFound(f"{self.url} is not a Clearance database ({exc.orig})") from None
        if revision is None:
            raise DatabaseNotFound(f"{self.url} holds no Clearance tables")

    def current_revision(self) -> str | None:
        """The migration the database is at, or None before the first `migrate()`."""
        from clearance.store.migrations import current_revision

        with self.connect() as conn:
            return current_revision(conn)

    # -- shutdown ----------------------------------------------------------------------------

    def dispose(self) -> None:
        """Close the sync engine's connections (for sync callers such as the CLI).

        Async connections can only be closed from a running event loop: use `aclose()` when
        the async engine was used.
        """
        self._close_kept()
        self.sync_engine.dispose()
        self.async_engine.sync_engine.dispose(close=False)

    async def aclose(self) -> None:
        """Close every connection of both engines."""
        self._close_kept()
        await self.async_engine.dispose()
        self.sync_engine.dispose()


def _close_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):  # being thrown away or shut down: it may be broken
        conn.close()


def open_database(
    url: str | URL, *, create_dirs: bool = True, busy_timeout_ms: int = 5000
) -> Database:
    """Open the database at `url` (nothing is connected until first use).

    Accepted spellings: `sqlite:///path.db`, `sqlite+pysqlite:///…`, `sqlite+aiosqlite:///…`,
    `postgresql://…`, `postgres://…`, `postgresql+psycopg://…`, `postgresql+asyncpg://…`.
    A relative SQLite path is resolved against the current directory; with `create_dirs`
    its parent directory is created.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        sync_url, async_url = _sqlite_urls(parsed, create_dirs=create_dirs)
        sync_engine = create_engine(sync_url)
        async_engine = create_async_engine(async_url)
        _configure_sqlite(sync_engine, busy_timeout_ms)
        _configure_sqlite(async_engine.sync_engine, busy_timeout_ms)
        return Database(sync_engine, async_engine, "sqlite", int(busy_timeout_ms))
    if backend in ("postgresql", "postgres"):
        base = parsed.set(drivername=_PG_SYNC)
        sync_engine = create_engine(
            base, pool_pre_ping=True, connect_args={"connect_timeout": _CONNECT_TIMEOUT_S}
        )
        async_engine = create_async_engine(
            base.set(drivername=_PG_ASYNC),
            pool_pre_ping=True,
            connect_args={"timeout": _CONNECT_TIMEOUT_S},
        )
        return Database(sync_engine, async_engine, "postgresql")
    raise ValueError(
        f"unsupported database {backend!r}: use sqlite:///path.db or postgresql://host/db"
    )


def _sqlite_urls(url: URL, *, create_dirs: bool) -> tuple[URL, URL]:
    database = url.database or ""
    query = dict(url.query)
    if database in ("", ":memory:") or query.get("mode") == "memory" or "mode=memory" in database:
        raise ValueError(
            "an in-memory SQLite database is not supported: the sync and async engines must "
            "share one database, so give a file path (sqlite:///.clearance/clearance.db)"
        )
    if query.get("uri") in ("true", "1") or database.startswith("file:"):
        raise ValueError("SQLite URI file names are not supported: give a plain file path")
    path = Path(database).expanduser().absolute()
    if create_dirs:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unavailable_from(exc) from exc
    url = url.set(database=os.fspath(path))
    return url.set(drivername=_SQLITE_SYNC), url.set(drivername=_SQLITE_ASYNC)


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    """Run a PRAGMA on the driver connection, outside any transaction."""
    dbapi: Any = conn.connection.dbapi_connection
    dbapi.execute(f"PRAGMA {pragma}").close()


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """Pragmas on every new connection; SQLAlchemy (not the driver) emits BEGIN."""
    timeout = int(busy_timeout_ms)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop sqlite3 from issuing BEGIN on its own (and skipping it for SELECT, DDL and
        # SAVEPOINT): the "begin" hook below does it, at the start of every transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout}")
            _set_wal(cursor, timeout)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in _BEGIN:
            raise ValueError(f"sqlite_begin must be DEFERRED, IMMEDIATE or EXCLUSIVE: {mode!r}")
        # Straight to the driver: SQLAlchemy's statement machinery would double the cost of
        # a one-row commit on the audit hot path.
        cursor = conn.connection.cursor()
        try:
            cursor.execute(_BEGIN[mode])
        finally:
            cursor.close()


_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


def _set_wal(cursor: Any, timeout_ms: int) -> None:
    """`PRAGMA journal_mode = WAL`, waiting out a concurrent switch.

    Turning a new file to WAL takes an exclusive lock, and SQLite answers "database is
    locked" at once instead of calling the busy handler: connections racing on a fresh file
    (several processes migrating it) retry here for up to the busy timeout. Once the file is
    in WAL (the mode is stored in it) the pragma is a read and never waits.
    """
    deadline = time.monotonic() + timeout_ms / 1000
    pause = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3's or aiosqlite's OperationalError
            if "database is locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
