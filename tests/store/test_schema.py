"""The schema: migrations match the tables, and the column types keep their promises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError, StatementError

from clearance.store.database import Database
from clearance.store.migrations import alembic_config, head_revision
from clearance.store.schema import approvals, audit_entries, metadata, outbox, votes

T = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def approval_row(approval_id: str, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": approval_id,
        "state": "pending",
        "action": "payments.transfer",
        "params_json": {"amount": 7200},
        "params_hash": "sha256:" + "0" * 64,
        "binding_hash": "sha256:" + "1" * 64,
        "actor_json": {"user": "carol"},
        "context_json": {},
        "labels_json": [],
        "plan_json": {"stages": []},
        "stage_index": 0,
        "decision_json": {"effect": "approve"},
        "rules_json": ["payments-large"],
        "reasons_json": [],
        "policy_version": "sha256:" + "2" * 64,
        "created_at": T,
        "expires_at": T + timedelta(hours=4),
    }
    row.update(overrides)
    return row


def test_migrated_schema_equals_metadata(database: Database) -> None:
    """After `migrate()`, Alembic finds no difference between the database and `metadata`."""
    with database.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_migrations_form_one_line() -> None:
    """The migrations have exactly one head and each revises the one before."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    revisions = list(scripts.walk_revisions())
    assert revisions[-1].revision == "0001_initial" and revisions[-1].down_revision is None


def test_migrate_is_idempotent_and_records_head(database: Database) -> None:
    """Migrating twice is harmless and leaves the database at the newest revision."""
    database.migrate()
    assert database.current_revision() == head_revision()


def test_times_round_trip_as_aware_utc(database: Database) -> None:
    """A time written in any zone comes back as the same instant, timezone-aware, in UTC."""
    written = T.astimezone(timezone(timedelta(hours=-5)))
    with database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_1", created_at=written)))
    with database.connect() as conn:
        got = conn.execute(sa.select(approvals.c.created_at, approvals.c.decided_at)).one()
    assert got.created_at == T
    assert got.created_at.tzinfo is UTC
    assert got.created_at.microsecond == 891011
    assert got.decided_at is None


async def test_times_round_trip_through_the_async_engine(database: Database) -> None:
    """The async engine reads the same aware UTC datetimes the sync engine wrote."""
    with database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_1")))
    async with database.aconnect() as conn:
        got = (await conn.execute(sa.select(approvals.c.expires_at))).scalar_one()
    assert got == T + timedelta(hours=4)
    assert got.tzinfo is UTC


def test_naive_datetimes_are_refused(database: Database) -> None:
    """Writing a naive datetime is an error, never a silent guess at its zone."""
    with pytest.raises(StatementError, match="naive datetime"), database.begin() as conn:
        conn.execute(
            sa.insert(approvals).values(approval_row("apr_1", created_at=datetime(2025, 1, 1)))
        )


def test_json_columns_hold_canonical_json(database: Database) -> None:
    """JSON columns store canonical text (sorted keys, no spaces) and read back as values."""
    with database.begin() as conn:
        conn.execute(
            sa.insert(approvals).values(approval_row("apr_1", params_json={"b": 1, "a": "é"}))
        )
    with database.connect() as conn:
        raw = conn.execute(sa.text("SELECT params_json FROM approvals")).scalar_one()
        value = conn.execute(sa.select(approvals.c.params_json)).scalar_one()
    assert raw == '{"a":"é","b":1}'
    assert value == {"a": "é", "b": 1}


def test_idempotency_key_is_unique(database: Database) -> None:
    """Two approvals cannot share an idempotency key; any number may have none."""
    with database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_1", idempotency_key="k1")))
        conn.execute(sa.insert(approvals).values(approval_row("apr_2")))
        conn.execute(sa.insert(approvals).values(approval_row("apr_3")))
    with pytest.raises(IntegrityError), database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_4", idempotency_key="k1")))


def test_one_vote_per_person_per_approval(database: Database) -> None:
    """A person votes once on an approval; the foreign key refuses votes on unknown ones."""
    vote = {
        "approval_id": "apr_1",
        "person": "alice",
        "decision": "approve",
        "channel": "web",
        "stage_index": 0,
        "at": T,
    }
    with database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_1")))
        conn.execute(sa.insert(votes).values(vote))
    with pytest.raises(IntegrityError), database.begin() as conn:
        conn.execute(sa.insert(votes).values(vote))
    with pytest.raises(IntegrityError), database.begin() as conn:
        conn.execute(sa.insert(votes).values({**vote, "approval_id": "apr_missing"}))


def test_state_must_be_a_known_state(database: Database) -> None:
    """The database itself refuses an approval state outside the five known ones."""
    with pytest.raises(IntegrityError), database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_1", state="maybe")))


def test_counters_default_to_zero_and_ids_autoincrement(database: Database) -> None:
    """`version` and `attempts` start at 0; outbox ids are assigned by the database."""
    with database.begin() as conn:
        conn.execute(sa.insert(approvals).values(approval_row("apr_1")))
        ids = [
            conn.execute(
                sa.insert(outbox)
                .values(kind="notify", payload={}, created_at=T, available_at=T)
                .returning(outbox.c.id)
            ).scalar_one()
            for _ in range(2)
        ]
    with database.connect() as conn:
        assert conn.execute(sa.select(approvals.c.version)).scalar_one() == 0
        assert conn.execute(sa.select(outbox.c.attempts)).scalars().all() == [0, 0]
    assert ids[1] > ids[0]


def test_audit_tables_are_clustered_on_sqlite(sqlite_database: Database) -> None:
    """On SQLite the audit entries and heads are WITHOUT ROWID tables (one B-tree each)."""
    database = sqlite_database
    with database.connect() as conn:
        ddl = conn.execute(
            sa.text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": audit_entries.name}
        ).scalar_one()
    assert "WITHOUT ROWID" in ddl
