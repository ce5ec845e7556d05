"""Opening databases: URL spellings, SQLite settings, failing closed, racing migrations."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from clearance.store.database import Database, open_database
from clearance.store.errors import StoreUnavailable, translate_errors
from clearance.store.migrations import head_revision


@pytest.mark.parametrize(
    "spelling", ["sqlite:///{p}", "sqlite+pysqlite:///{p}", "sqlite+aiosqlite:///{p}"]
)
def test_sqlite_spellings_give_both_engines(tmp_path: Path, spelling: str) -> None:
    """Any SQLite spelling yields a pysqlite engine and an aiosqlite engine on one file."""
    db = open_database(spelling.format(p=tmp_path / "a" / "b.db"))
    assert db.sync_engine.url.drivername == "sqlite+pysqlite"
    assert db.async_engine.url.drivername == "sqlite+aiosqlite"
    assert db.sync_engine.url.database == db.async_engine.url.database
    assert db.is_sqlite and db.dialect == "sqlite"
    assert (tmp_path / "a").is_dir()  # the parent directory was created
    db.dispose()


@pytest.mark.parametrize(
    "spelling",
    [
        "postgresql://u:secret@db.example/app",
        "postgres://u:secret@db.example/app",
        "postgresql+psycopg://u:secret@db.example/app",
        "postgresql+asyncpg://u:secret@db.example/app",
    ],
)
def test_postgresql_spellings_give_psycopg_and_asyncpg(spelling: str) -> None:
    """Any PostgreSQL spelling yields psycopg (sync) and asyncpg (async) on the same server."""
    db = open_database(spelling)
    assert db.sync_engine.url.drivername == "postgresql+psycopg"
    assert db.async_engine.url.drivername == "postgresql+asyncpg"
    assert db.async_engine.url.host == "db.example"
    assert "secret" not in db.url and "secret" not in repr(db)
    assert not db.is_sqlite
    db.dispose()


def test_relative_sqlite_path_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative SQLite path is pinned to the current directory when the database opens."""
    monkeypatch.chdir(tmp_path)
    db = open_database("sqlite:///.clearance/clearance.db")
    assert db.sync_engine.url.database == str(tmp_path / ".clearance" / "clearance.db")
    db.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"])
def test_in_memory_sqlite_is_refused_with_a_reason(url: str) -> None:
    """An in-memory database is refused, saying why and what to use instead."""
    with pytest.raises(ValueError, match="in-memory SQLite database is not supported"):
        open_database(url)


def test_unknown_backend_is_refused() -> None:
    """A URL for an unsupported database names the supported ones."""
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        open_database("mysql://localhost/db")


async def test_sqlite_connections_get_wal_and_pragmas(sqlite_url: str) -> None:
    """Every SQLite connection, sync or async, runs in WAL with the documented pragmas."""
    db = open_database(sqlite_url, busy_timeout_ms=1234)
    pragmas = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    with db.connect() as conn:
        sync = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in pragmas]
    async with db.aconnect() as aconn:
        asyn = [(await aconn.exec_driver_sql(f"PRAGMA {p}")).scalar() for p in pragmas]
    await db.aclose()
    assert sync == asyn == ["wal", 1, 1, 1234]  # synchronous 1 = NORMAL


def test_sqlite_savepoints_roll_back_inside_a_transaction(sqlite_url: str) -> None:
    """SQLAlchemy, not the sqlite3 driver, drives BEGIN, so a rolled-back savepoint undoes
    only its own writes."""
    db = open_database(sqlite_url)
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        savepoint = conn.begin_nested()
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        savepoint.rollback()
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT x FROM t").scalars().all() == [1]
    db.dispose()


def test_unreachable_postgresql_raises_store_unavailable() -> None:
    """Nothing listening (port 1): migrate and connect raise StoreUnavailable, nothing else."""
    db = open_database("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(StoreUnavailable, match="database unavailable"):
        db.migrate()
    with pytest.raises(StoreUnavailable), db.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    db.dispose()


async def test_unreachable_postgresql_raises_store_unavailable_async() -> None:
    """The async engine fails the same way: StoreUnavailable."""
    db = open_database("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    with pytest.raises(StoreUnavailable):
        async with db.aconnect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    await db.aclose()


def test_unwritable_sqlite_path_raises_store_unavailable(tmp_path: Path) -> None:
    """A SQLite path that cannot be created or opened raises StoreUnavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        open_database(f"sqlite:///{blocker / 'sub' / 'x.db'}")
    db = open_database(f"sqlite:///{blocker / 'x.db'}", create_dirs=False)
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        db.migrate()
    db.dispose()


def test_locked_sqlite_raises_store_unavailable(sqlite_url: str) -> None:
    """A database whose write lock is held past the busy timeout raises StoreUnavailable."""
    db = open_database(sqlite_url, busy_timeout_ms=50)
    db.migrate()
    holder = open_database(sqlite_url)
    with holder.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            conn.execute(sa.text("SELECT 1"))
            with pytest.raises(StoreUnavailable, match="locked"), db.begin() as other:
                other.exec_driver_sql("DELETE FROM outbox")
    holder.dispose()
    db.dispose()


def test_translate_errors_leaves_other_errors_alone() -> None:
    """Errors that do not mean "unavailable" pass through translate_errors unchanged."""
    with pytest.raises(KeyError), translate_errors():
        raise KeyError("x")


def test_racing_migrations_in_threads(db_url: str) -> None:
    """Several migrations racing on one database all succeed and leave it at the head."""
    dbs = [open_database(db_url) for _ in range(4)]
    errors: list[BaseException] = []

    def migrate(i: int) -> None:
        try:
            dbs[i].migrate()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert dbs[0].current_revision() == head_revision()
    for db in dbs:
        db.dispose()


def test_racing_migrations_in_processes(db_url: str) -> None:
    """Two processes migrating the same database at once both succeed."""
    code = "import sys; from clearance.store import open_database as o; o(sys.argv[1]).migrate()"
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    db = open_database(db_url)
    assert db.current_revision() == head_revision()
    db.dispose()


def test_connections_racing_on_a_new_sqlite_file_all_open(tmp_path: Path) -> None:
    """The first connections to a brand-new SQLite file all switch it to WAL without
    "database is locked" (SQLite doesn't wait on that lock by itself; we retry)."""
    failures: list[BaseException] = []
    for n in range(30):
        dbs = [open_database(f"sqlite:///{tmp_path}/race{n}.db") for _ in range(6)]
        barrier = threading.Barrier(len(dbs))

        def touch(db: Database, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                with db.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            except BaseException as exc:  # collected and re-raised in the test thread
                failures.append(exc)

        threads = [threading.Thread(target=touch, args=(db,)) for db in dbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for db in dbs:
            db.dispose()
    assert failures == []


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "message", "unavailable"),
    [
        ("08006", "connection failure", True),
        ("57P01", "terminating connection due to administrator command", True),
        ("53300", "too many connections", True),
        ("3D000", 'database "x" does not exist', True),
        ("55000", 'database "x" is not currently accepting connections', True),
        ("55000", "cannot lock a row in this state", False),
        ("23505", "duplicate key value violates unique constraint", False),
    ],
)
def test_postgres_errors_are_judged_by_their_sqlstate(
    sqlstate: str, message: str, unavailable: bool
) -> None:
    """A driver error wrapped in SQLAlchemy's generic Error (as asyncpg's are) is "database
    unavailable" exactly when its SQLSTATE says the server can't serve us now."""
    wrapped = sa.exc.DBAPIError("SELECT 1", None, _PgError(message, sqlstate))
    assert isinstance(wrapped, sa.exc.DBAPIError)
    with pytest.raises(StoreUnavailable if unavailable else sa.exc.DBAPIError), translate_errors():
        raise wrapped
