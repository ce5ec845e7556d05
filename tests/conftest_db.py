"""Database fixtures (a pytest plugin module): a SQLite file, a fresh PostgreSQL database,
both in turn (`db_url`), and a migrated `Database` on each in turn (`database`).

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


def pg_admin() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the PostgreSQL server's administrative database."""
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skips, or fails, when there is none)."""
    try:
        pg_admin().close()
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
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs twice: on SQLite and on PostgreSQL (an empty database)."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A migrated PostgreSQL database to clone: cheaper than migrating for every test."""
    name = f"clearance_template_{secrets.token_hex(6)}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        db = open_database(make_url(pg_server).set(database=name))
        db.migrate()
        db.dispose()
        yield name
    finally:
        with pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_migrated_url(pg_server: str, pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database already at the newest migration, dropped after the test."""
    name = f"clearance_test_{secrets.token_hex(6)}"
    with pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A migrated `Database`, on SQLite and then on PostgreSQL; closed after the test.

    Its URL is `database.sync_engine.url`. (Not built on `db_url`: a PostgreSQL database is
    cloned from a migrated template, which saves the migration in every test.)
    """
    name = "sqlite_url" if request.param == "sqlite" else "pg_migrated_url"
    db = open_database(request.getfixturevalue(name))
    db.migrate()  # a no-op check on the clone
    try:
        yield db
    finally:
        await db.aclose()


@pytest.fixture
async def sqlite_database(sqlite_url: str) -> AsyncIterator[Database]:
    """A migrated SQLite `Database`, for tests of SQLite-only behaviour."""
    db = open_database(sqlite_url)
    db.migrate()
    try:
        yield db
    finally:
        await db.aclose()
