"""Database fixtures (a pytest plugin module): a SQLite file, a fresh PostgreSQL database,
both in turn (`db_url`), and a migrated `Database` on either (`database`).

PostgreSQL: a uniquely named database is created on the server at 127.0.0.1:5432 (user
`postgres`, trust authentication, administrative connection to database `test`; override with
`CLEARANCE_TEST_PG_URL`) and dropped afterwards. When the server is unreachable the
PostgreSQL variants are skipped, unless `CLEARANCE_REQUIRE_PG=1`, which makes them fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from clearance.store.database import Database, open_database

PG_ADMIN_URL = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skips, or fails, when there is none)."""
    try:
        _admin().close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}".strip()
        if os.environ.get("CLEARANCE_REQUIRE_PG") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return PG_ADMIN_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of its own, in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'clearance.db'}"


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = f"clearance_test_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs twice: on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """A migrated `Database` on `db_url`, closed after the test."""
    db = open_database(db_url)
    db.migrate()
    try:
        yield db
    finally:
        await db.aclose()
