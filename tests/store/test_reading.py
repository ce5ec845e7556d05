"""`Database.reading`: SQLite reads reuse one connection per thread, and never read stale."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from clearance.store.database import Database, open_database
from clearance.store.reads import read


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(f"sqlite:///{tmp_path}/r.db")
    with database.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    yield database  # type: ignore[misc]
    database.dispose()


def count(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_one_kept_connection_per_thread(db: Database) -> None:
    with db.reading() as first:
        pass
    with db.reading() as again:
        assert again is first
    other: list[Connection] = []

    def elsewhere() -> None:
        with db.reading() as conn:
            other.append(conn)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert other and other[0] is not first


def test_each_read_sees_the_latest_commit(db: Database) -> None:
    """The transaction a read's `execute` began is ended with the read, so a commit made
    in between by another connection is seen by the next read."""
    with db.reading() as conn:
        assert count(conn) == 1
    assert not conn.in_transaction()
    with db.begin() as writer:
        writer.execute(text("INSERT INTO t VALUES (2)"))
    with db.reading() as conn:
        assert count(conn) == 2


async def test_read_uses_the_kept_connection(db: Database) -> None:
    seen = [await read(db, lambda c: c), await read(db, lambda c: c)]
    assert seen[0] is seen[1]
    assert await read(db, count) == 1


def test_a_failed_read_throws_its_connection_away(db: Database) -> None:
    with db.reading() as first:
        pass
    with pytest.raises(Exception, match="no such table"), db.reading() as conn:
        conn.execute(text("SELECT * FROM missing"))
    assert first.closed
    with db.reading() as fresh:
        assert fresh is not first and count(fresh) == 1


def test_a_nested_read_gets_its_own_connection(db: Database) -> None:
    with db.reading() as outer:
        assert count(outer) == 1
        with db.reading() as inner:
            assert inner is not outer and count(inner) == 1
        assert count(outer) == 1  # the outer read's transaction is still usable
    with db.reading() as again:
        assert again is outer


def test_dispose_closes_the_kept_connections(db: Database) -> None:
    with db.reading() as conn:
        pass
    db.dispose()
    assert conn.closed
    with db.reading() as fresh:  # usable again after dispose, like the engine
        assert count(fresh) == 1
