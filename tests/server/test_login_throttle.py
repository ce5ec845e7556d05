"""Sign-in brute-force protection: per person and per address, durable, audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clearance.audit.export import iter_entries
from clearance.gateway import Gateway
from clearance.identity import throttle
from clearance.server.app import create_app
from clearance.store import open_database

from ..fixtures import ENTERPRISE
from .test_inbox import Clock, Env, give_password, login


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[Env]:
    clock = Clock()
    gateway = Gateway.open(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    yield Env(gateway, clock, create_app(gateway, scheduler=False))
    await gateway.aclose()


NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


async def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(inbox: Env) -> None:
    """After 5 failures alice is refused with 429 even with her password, until the lock
    ends; then she signs in and her count starts again."""
    await give_password(inbox, "alice")
    async with inbox.client() as client:
        for _ in range(throttle.MAX_PER_PERSON):
            assert (await login(client, "alice", "wrong")).status_code == 401
        refused = await login(client, "alice")
        assert refused.status_code == 429
        assert "Too many failed sign-ins" in refused.text
    inbox.clock.advance(minutes=16)
    async with inbox.client() as client:
        assert (await login(client, "alice")).status_code == 303
    async with inbox.client() as client:
        assert (await login(client, "alice", "wrong")).status_code == 401  # one, not six
        assert (await login(client, "alice")).status_code == 303
    failed = [e for e in iter_entries(inbox.gateway.db) if e.kind == "login.failed"]
    assert failed[throttle.MAX_PER_PERSON - 1].data["locked_until"]
    assert failed[throttle.MAX_PER_PERSON].data["refused"] == "too_many_failures"


async def test_one_address_spraying_many_accounts_is_stopped(inbox: Env) -> None:
    """Twenty failures from one address over many ids lock the address, not the people."""
    await give_password(inbox, "bob")
    async with inbox.client() as client:
        for i in range(throttle.MAX_PER_ADDRESS):
            assert (await login(client, f"user{i}", "guess")).status_code == 401
        assert (await login(client, "bob")).status_code == 429


def test_counts_live_in_the_store_and_windows_expire(tmp_path: Path) -> None:
    """Failures survive a new connection (a restart); a failure after the window restarts
    the count instead of locking."""
    db = open_database(f"sqlite:///{tmp_path}/t.db")
    db.migrate()
    keys = throttle.subjects("carol", "10.0.0.9")
    with db.connect() as conn, conn.begin():
        for _ in range(throttle.MAX_PER_PERSON - 1):
            assert throttle.record_failure(conn, keys, NOW) is None
    later = NOW + throttle.WINDOW + timedelta(seconds=1)
    with db.connect() as conn, conn.begin():
        assert throttle.locked(conn, keys, NOW) is None
        assert throttle.record_failure(conn, keys, later) is None  # a new window: count 1
        for _ in range(throttle.MAX_PER_PERSON - 2):
            throttle.record_failure(conn, keys, later)
        lock = throttle.record_failure(conn, keys, later)
    assert lock is not None and lock.subject == "person:carol"
    with db.connect() as conn:
        assert throttle.locked(conn, keys, later) == lock
        assert throttle.locked(conn, keys, lock.until) is None
    db.dispose()
