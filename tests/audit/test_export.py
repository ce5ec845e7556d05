"""Reading the trail back: streaming, JSON Lines and CSV export, and verify_store catching
tampering done behind the writer's back with plain SQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from clearance.audit.chain import GENESIS, entry_hash
from clearance.audit.export import (
    CSV_COLUMNS,
    entry_as_dict,
    export_csv,
    export_jsonl,
    iter_entries,
    verify_store,
)
from clearance.audit.writer import AuditWriter
from clearance.store.database import Database
from clearance.store.schema import audit_checkpoints, audit_entries, audit_heads

from .chains import T0, draft


async def fill(db: Database, n: int = 10, chain_id: str = "main", **overrides: object) -> None:
    """`n` entries one second apart, starting at T0."""
    writer = AuditWriter(db, chain_id)
    for i in range(n):
        await writer.append(draft(i, **overrides))
    await writer.aclose()


async def test_iter_entries_streams_in_order_in_small_chunks(database: Database) -> None:
    """Entries come back in (chain, seq) order whatever the chunk size, times aware UTC."""
    await fill(database, 7, "b")
    await fill(database, 5, "a")
    entries = list(iter_entries(database, chunk_size=2))
    assert [(e.chain_id, e.seq) for e in entries] == [("a", i) for i in range(1, 6)] + [
        ("b", i) for i in range(1, 8)
    ]
    assert all(e.ts.tzinfo is UTC for e in entries)
    assert entries[0].rule_ids == ("payments-small",) and entries[0].data["i"] == 0
    assert [e.seq for e in iter_entries(database, chain_id="a")] == [1, 2, 3, 4, 5]


async def test_export_jsonl_with_since_and_until(database: Database) -> None:
    """JSON Lines export holds the entries with since <= ts < until, one object per line."""
    await fill(database, 10)
    out = io.StringIO()
    count = export_jsonl(
        database, out, since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=7)
    )
    lines = out.getvalue().splitlines()
    assert count == len(lines) == 4
    rows = [json.loads(line) for line in lines]
    assert [r["seq"] for r in rows] == [4, 5, 6, 7]
    assert rows[0]["ts"] == "2025-01-31T09:30:03.000000+00:00"
    assert rows[0]["rule_ids"] == ["payments-small"] and rows[0]["data"]["i"] == 3
    assert set(rows[0]) == set(CSV_COLUMNS)


async def test_export_csv_with_since_and_until(database: Database) -> None:
    """CSV export has a header and one row per entry in the window, JSON fields as text."""
    await fill(database, 10)
    out = io.StringIO(newline="")
    count = export_csv(database, out, since=T0 + timedelta(seconds=8))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert count == len(rows) == 2
    assert [int(r["seq"]) for r in rows] == [9, 10]
    assert json.loads(rows[0]["data"]) == {"agent": "billing-bot", "i": 8}
    assert rows[0]["approver"] == ""  # None becomes an empty cell


async def test_export_csv_defuses_spreadsheet_formulas(database: Database) -> None:
    """A value a spreadsheet would run as a formula is prefixed with an apostrophe, unless
    the guard is turned off."""
    await fill(database, 1, actor='=HYPERLINK("http://evil")')
    guarded, raw = io.StringIO(newline=""), io.StringIO(newline="")
    export_csv(database, guarded)
    export_csv(database, raw, guard_formulas=False)
    assert next(csv.DictReader(io.StringIO(guarded.getvalue())))["actor"].startswith("'=")
    assert next(csv.DictReader(io.StringIO(raw.getvalue())))["actor"].startswith("=")


async def test_exported_entries_verify_offline(database: Database) -> None:
    """The JSON Lines export carries everything needed to recompute every hash."""
    await fill(database, 5)
    prev = GENESIS
    for entry in iter_entries(database):
        assert entry_as_dict(entry)["prev_hash"] == prev
        assert entry_hash(prev, entry.chain_id, entry.seq, entry) == entry.hash
        prev = entry.hash


async def test_verify_store_on_an_empty_database(database: Database) -> None:
    """An empty trail verifies."""
    report = verify_store(database)
    assert report.ok and report.entries_checked == 0


async def test_verify_store_passes_several_untouched_chains(database: Database) -> None:
    """Untouched chains verify, with their heads and a checkpoint, in one pass."""
    await fill(database, 6, "a")
    writer = AuditWriter(database, "b")
    await writer.append(draft(1))
    await writer.checkpoint(T0)
    await writer.aclose()
    await fill(database, 3, "b")
    report = verify_store(database)
    assert report.ok, report.summary()
    assert [(c.chain_id, c.last_seq) for c in report.chains] == [("a", 6), ("b", 4)]


def _where(seq: int) -> sa.ColumnElement[bool]:
    return sa.and_(audit_entries.c.chain_id == "main", audit_entries.c.seq == seq)


def alter_actor(conn: Connection) -> None:
    conn.execute(sa.update(audit_entries).where(_where(5)).values(actor="mallory"))


def alter_time(conn: Connection) -> None:
    conn.execute(sa.update(audit_entries).where(_where(5)).values(ts=T0 - timedelta(days=1)))


def respell_data(conn: Connection) -> None:
    """Same JSON value, different bytes."""
    conn.execute(
        sa.text("UPDATE audit_entries SET data = :d WHERE chain_id = 'main' AND seq = 5"),
        {"d": '{"i": 4, "agent": "billing-bot"}'},
    )


def delete_middle(conn: Connection) -> None:
    conn.execute(sa.delete(audit_entries).where(_where(5)))


def delete_tail(conn: Connection) -> None:
    conn.execute(sa.delete(audit_entries).where(audit_entries.c.seq >= 8))


def swap_rows(conn: Connection) -> None:
    """Exchange the contents of entries 5 and 6, keeping their seq numbers."""
    cols = [c for c in audit_entries.c if c.name not in ("chain_id", "seq")]
    five = conn.execute(sa.select(*cols).where(_where(5))).one()._asdict()
    six = conn.execute(sa.select(*cols).where(_where(6))).one()._asdict()
    conn.execute(sa.update(audit_entries).where(_where(5)).values(six))
    conn.execute(sa.update(audit_entries).where(_where(6)).values(five))


def alter_prev_hash(conn: Connection) -> None:
    conn.execute(sa.update(audit_entries).where(_where(5)).values(prev_hash="e" * 64))


def alter_head(conn: Connection) -> None:
    conn.execute(
        sa.update(audit_heads).where(audit_heads.c.chain_id == "main").values(hash="d" * 64)
    )


TAMPERING: list[tuple[Callable[[Connection], None], int, str]] = [
    (alter_actor, 5, "entry 5 of chain 'main' was altered"),
    (alter_time, 5, "entry 5 of chain 'main' was altered"),
    (respell_data, 5, "entry 5 of chain 'main' was altered"),
    (delete_middle, 5, "entry 5 of chain 'main' is missing (deleted?)"),
    (delete_tail, 8, "entry 8 of chain 'main' is missing: the chain ends at entry 7"),
    (swap_rows, 5, "entry 5 of chain 'main' does not link to entry 4"),
    (alter_prev_hash, 5, "entry 5 of chain 'main' does not link to entry 4"),
    (alter_head, 10, "entry 10 of chain 'main' does not match the chain's head record"),
]


@pytest.mark.parametrize(
    ("tamper", "seq", "reason"), TAMPERING, ids=[t[0].__name__ for t in TAMPERING]
)
async def test_verify_store_names_tampering_done_with_sql(
    database: Database, tamper: Callable[[Connection], None], seq: int, reason: str
) -> None:
    """Each kind of tampering with plain SQL is caught, and the first bad entry is named."""
    await fill(database, 10)
    await fill(database, 3, "other")
    assert verify_store(database).ok
    with database.begin() as conn:
        tamper(conn)
    report = verify_store(database)
    assert not report.ok
    problem = report.first_problem
    assert problem is not None
    assert (problem.chain_id, problem.seq) == ("main", seq)
    assert problem.reason.startswith(reason), problem.reason
    assert [c.chain_id for c in report.chains if c.chain_id == "other"] == ["other"]
    assert len(report.problems) == 1  # the other chain is fine
    assert verify_store(database, chain_id="other").ok


async def test_wrongly_typed_value_is_reported_not_crashed_on(
    sqlite_database: Database,
) -> None:
    """A value of the wrong type written into an entry (SQLite accepts a BLOB in a text
    column; PostgreSQL enforces column types) is reported as that entry's problem;
    verification does not crash."""
    database = sqlite_database
    await fill(database, 6)
    with database.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE audit_entries SET actor = X'00ff' WHERE chain_id = 'main' AND seq = 4"
        )
    problem = verify_store(database).first_problem
    assert problem is not None and problem.seq == 4
    assert problem.reason == "entry 4 of chain 'main' cannot be encoded"


async def test_checkpoint_catches_a_consistently_rewritten_chain(database: Database) -> None:
    """Rewriting entries and re-hashing the rest of the chain and its head fools the chain
    alone, but not an earlier checkpoint."""
    await fill(database, 4)
    writer = AuditWriter(database)
    await writer.checkpoint(T0)
    await writer.aclose()
    await fill(database, 3)
    entries = list(iter_entries(database))
    prev = entries[1].hash
    with database.begin() as conn:
        for e in entries[2:]:
            forged = draft(e.seq, actor="mallory")
            new = entry_hash(prev, "main", e.seq, forged)
            conn.execute(
                sa.update(audit_entries)
                .where(_where(e.seq))
                .values(
                    actor="mallory", ts=forged.ts, data=dict(forged.data), prev_hash=prev, hash=new
                )
            )
            prev = new
        conn.execute(sa.update(audit_heads).values(hash=prev))
    problem = verify_store(database).first_problem
    assert problem is not None and problem.seq == 4  # the entry the checkpoint recorded
    assert "does not match checkpoint 1" in problem.reason
    assert "the chain up to entry 4 was rewritten" in problem.reason


async def test_altered_checkpoint_is_reported(database: Database) -> None:
    """Editing a checkpoint's recorded heads is itself reported."""
    await fill(database, 2)
    writer = AuditWriter(database)
    await writer.checkpoint(T0)
    await writer.aclose()
    with database.begin() as conn:
        conn.execute(
            sa.update(audit_checkpoints).values(heads_json={"main": {"seq": 1, "hash": "x"}})
        )
    report = verify_store(database)
    assert not report.ok
    assert report.problems[0].reason.startswith("checkpoint 1 (") and "altered" in report.summary()
