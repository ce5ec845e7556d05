"""The audit writer: group commit, units of work, several writers and processes, failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from clearance.audit.entry import AuditEntry
from clearance.audit.export import iter_entries, verify_store
from clearance.audit.writer import AuditWriter, WriteTx
from clearance.store.database import Database, open_database
from clearance.store.errors import StoreUnavailable
from clearance.store.schema import audit_checkpoints, audit_heads, outbox
from tests.conftest_db import pg_admin

from .chains import T0, draft


def stored(db: Database, chain_id: str | None = None) -> list[AuditEntry]:
    return list(iter_entries(db, chain_id=chain_id))


def add_outbox(tx: WriteTx, kind: str) -> int:
    """A unit of work: one outbox row and one audit entry."""
    tx.conn.execute(
        sa.insert(outbox).values(kind=kind, payload={"k": kind}, created_at=T0, available_at=T0)
    )
    return tx.audit(draft(0, kind="approval.created", approval_id=kind)).seq


def outbox_kinds(db: Database) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(outbox.c.kind).order_by(outbox.c.id)).scalars())


async def test_concurrent_appends_make_one_gap_free_chain(database: Database) -> None:
    """200 concurrent appends commit as one valid chain numbered 1…200 with no gaps, and each
    caller gets back exactly the entry that was stored."""
    writer = AuditWriter(database)
    returned = await asyncio.gather(*(writer.append(draft(i)) for i in range(200)))
    await writer.aclose()
    assert sorted(e.seq for e in returned) == list(range(1, 201))
    assert stored(database) == sorted(returned, key=lambda e: e.seq)
    report = verify_store(database)
    assert report.ok, report.summary()
    assert report.entries_checked == 200


async def test_append_returns_only_after_commit(database: Database) -> None:
    """When append returns, another connection already sees the entry."""
    writer = AuditWriter(database)
    entry = await writer.append(draft(1))
    other = open_database(database.sync_engine.url)
    assert [e.hash for e in stored(other)] == [entry.hash]
    other.dispose()
    await writer.aclose()


async def test_sequential_appends_continue_the_chain(database: Database) -> None:
    """Appends one after another link each entry to the one before."""
    writer = AuditWriter(database)
    first = await writer.append(draft(1))
    second = await writer.append(draft(2))
    await writer.aclose()
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev_hash == first.hash


async def test_failing_work_rolls_back_only_its_own_unit(database: Database) -> None:
    """In one batch, a unit that raises loses its row and its audit entries; the caller gets
    its exception; the other units and appends commit; the chain stays gap-free."""
    writer = AuditWriter(database)

    def failing(tx: WriteTx) -> None:
        add_outbox(tx, "b")
        tx.audit(draft(9, kind="vote"))
        raise LookupError("approval already decided")

    results = await asyncio.gather(
        writer.run(lambda tx: add_outbox(tx, "a")),
        writer.run(failing),
        writer.append(draft(3)),
        writer.run(lambda tx: add_outbox(tx, "c")),
        return_exceptions=True,
    )
    await writer.aclose()
    assert isinstance(results[1], LookupError)
    assert results[0] == 1 and results[3] == 3  # the failed unit's seq numbers were reused
    assert outbox_kinds(database) == ["a", "c"]
    assert [(e.seq, e.kind) for e in stored(database)] == [
        (1, "approval.created"),
        (2, "check"),
        (3, "approval.created"),
    ]
    assert verify_store(database).ok


async def test_work_returns_its_value_and_sees_its_writes(database: Database) -> None:
    """A unit's return value reaches its caller, and the unit reads its own uncommitted rows."""
    writer = AuditWriter(database)

    def work(tx: WriteTx) -> tuple[int, int]:
        add_outbox(tx, "x")
        count = tx.conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
        return count, tx.head.seq

    assert await writer.run(work) == (1, 1)
    await writer.aclose()


async def test_database_errors_in_work_stay_in_the_unit(database: Database) -> None:
    """A unit whose statement violates a constraint fails alone; the batch still commits."""
    writer = AuditWriter(database)

    def duplicate(tx: WriteTx) -> None:
        tx.conn.execute(
            sa.insert(audit_heads).values(chain_id="main", seq=0, hash="x", updated_at=T0)
        )

    results = await asyncio.gather(
        writer.append(draft(1)), writer.run(duplicate), writer.append(draft(2)),
        return_exceptions=True,
    )  # fmt: skip
    await writer.aclose()
    assert isinstance(results[1], sa.exc.IntegrityError)
    assert [e.seq for e in stored(database)] == [1, 2]
    assert verify_store(database).ok


async def test_two_writers_on_two_chains(database: Database) -> None:
    """Two writers on one database keep two independent, valid chains."""
    a, b = AuditWriter(database, "a"), AuditWriter(database, "b")
    await asyncio.gather(*(w.append(draft(i)) for i in range(40) for w in (a, b)))
    await asyncio.gather(a.aclose(), b.aclose())
    report = verify_store(database)
    assert report.ok, report.summary()
    assert [(c.chain_id, c.entries) for c in report.chains] == [("a", 40), ("b", 40)]


APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from clearance.audit.entry import AuditDraft
    from clearance.audit.writer import AuditWriter
    from clearance.store.database import open_database

    async def main(url, tag, n):
        db = open_database(url)
        writer = AuditWriter(db, "shared")
        ts = datetime(2025, 1, 1, tzinfo=UTC)
        async def worker(k):
            for i in range(n // 8):
                await writer.append(AuditDraft(kind="check", ts=ts, actor=f"{tag}-{k}-{i}"))
        await asyncio.gather(*(worker(k) for k in range(8)))
        await writer.aclose()
        await db.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def test_two_processes_append_to_one_chain(db_url: str) -> None:
    """Writers in two processes appending to the same chain at once produce one valid,
    gap-free chain holding every entry of both."""
    db = open_database(db_url)
    db.migrate()
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, db_url, tag, "160"])
        for tag in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = stored(db, "shared")
    assert [e.seq for e in entries] == list(range(1, 321))
    assert {e.actor.split("-")[0] for e in entries if e.actor} == {"p1", "p2"}
    report = verify_store(db)
    assert report.ok, report.summary()
    db.dispose()


@contextmanager
def unavailable(db: Database, url: str) -> Iterator[None]:
    """Make the database unusable for `db` for the duration (a held lock on SQLite; refused
    connections on PostgreSQL)."""
    if db.is_sqlite:
        holder = open_database(url)
        with holder.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                conn.execute(sa.text("SELECT 1"))
                yield
        holder.dispose()
        return
    name = make_url(url).database
    with pg_admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        yield
    finally:
        with pg_admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_unavailable_database_fails_every_caller_and_writes_nothing(db_url: str) -> None:
    """When the database cannot be used, every caller in the batch gets StoreUnavailable,
    nothing is half-written, and the writer recovers when the database is back."""
    db = open_database(db_url, busy_timeout_ms=50)
    db.migrate()
    writer = AuditWriter(db)
    await writer.append(draft(0))
    with unavailable(db, db_url):
        results = await asyncio.gather(
            writer.append(draft(1)),
            writer.run(lambda tx: add_outbox(tx, "lost")),
            writer.append(draft(2)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert str(results[0]).startswith("database unavailable: ")
        with pytest.raises(StoreUnavailable):
            await writer.append(draft(3))
    assert [e.seq for e in stored(db)] == [1]
    assert outbox_kinds(db) == []
    after = await writer.append(draft(4))
    assert after.seq == 2
    assert verify_store(db).ok
    await writer.aclose()
    await db.aclose()


def _install_failing_trigger(db: Database) -> None:
    """Make the database reject, mid-batch, any audit entry of kind 'boom'."""
    with db.begin() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON audit_entries WHEN NEW.kind = 'boom' "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.kind = 'boom' THEN RAISE EXCEPTION 'disk on fire'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON audit_entries "
                "FOR EACH ROW EXECUTE FUNCTION boom()"
            )


async def test_failure_late_in_the_batch_rolls_everything_back(database: Database) -> None:
    """If the batch's final insert fails, the whole transaction rolls back: the units' rows
    and every entry are gone, and every caller gets StoreUnavailable."""
    _install_failing_trigger(database)
    writer = AuditWriter(database)
    results = await asyncio.gather(
        writer.run(lambda tx: add_outbox(tx, "a")),
        writer.append(draft(1)),
        writer.append(draft(2, kind="boom")),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "disk on fire" in str(results[0])
    assert stored(database) == [] and outbox_kinds(database) == []
    assert (await writer.append(draft(3))).seq == 1
    await writer.aclose()


async def test_unencodable_draft_is_refused_alone(database: Database) -> None:
    """A draft that cannot be encoded is refused to its caller before it can spoil a batch."""
    writer = AuditWriter(database)
    results = await asyncio.gather(
        writer.append(draft(1)),
        writer.append(draft(2, data={"when": datetime.now(UTC)})),
        writer.append(draft(3)),
        return_exceptions=True,
    )
    await writer.aclose()
    assert isinstance(results[1], ValueError)
    assert [e.seq for e in stored(database)] == [1, 2]


async def test_work_must_not_call_the_writer(database: Database) -> None:
    """A unit that calls the writer itself gets a RuntimeError (it would deadlock)."""
    writer = AuditWriter(database)
    with pytest.raises(RuntimeError, match=r"use tx\.audit\(\)"):
        await writer.run(lambda tx: writer.append_sync(draft(1)))
    await writer.aclose()


async def test_coroutine_work_is_refused(database: Database) -> None:
    """Passing an async function as work is an error, not a silently skipped unit."""
    writer = AuditWriter(database)

    async def not_sync(tx: WriteTx) -> None:
        add_outbox(tx, "never")

    with pytest.raises(TypeError, match="coroutine"):
        _never_awaited = await writer.run(not_sync)
    await writer.aclose()
    assert outbox_kinds(database) == []


async def test_work_that_ends_the_transaction_fails_the_batch(database: Database) -> None:
    """A unit that commits on the writer's connection breaks the batch's guarantees, so
    the batch fails instead of carrying on outside its transaction."""
    writer = AuditWriter(database)

    def rogue(tx: WriteTx) -> None:
        add_outbox(tx, "rogue")
        tx.conn.commit()

    results = await asyncio.gather(
        writer.append(draft(1)), writer.run(rogue), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "ended the writer's transaction" in str(results[1])
    assert (await writer.append(draft(2))).seq >= 1
    await writer.aclose()
    assert verify_store(database).ok


async def test_audit_after_the_unit_finished_is_refused(database: Database) -> None:
    """A WriteTx kept past its unit cannot add entries."""
    writer = AuditWriter(database)
    tx = await writer.run(lambda tx: tx)
    with pytest.raises(RuntimeError, match="finished"):
        tx.audit(draft(1))
    await writer.aclose()


async def test_cancelled_caller_still_gets_its_entry_written(database: Database) -> None:
    """Cancelling a caller after it queued does not drop its audit entry."""
    writer = AuditWriter(database)
    task = asyncio.create_task(writer.append(draft(1)))
    await asyncio.sleep(0)  # queued
    task.cancel()
    await writer.append(draft(2))
    await writer.aclose()
    assert [e.seq for e in stored(database)] == [1, 2]


async def test_aclose_flushes_what_is_queued(database: Database) -> None:
    """aclose waits for queued work to commit; afterwards the writer refuses new work."""
    writer = AuditWriter(database)
    tasks = [asyncio.create_task(writer.append(draft(i))) for i in range(10)]
    await asyncio.sleep(0)
    await writer.aclose()
    assert all(t.done() and not t.exception() for t in tasks)
    assert len(stored(database)) == 10
    with pytest.raises(RuntimeError, match="closed"):
        await writer.append(draft(11))


async def test_flush_runs_inline_on_sqlite_and_in_a_thread_on_postgresql(
    database: Database,
) -> None:
    """SQLite flushes on the event-loop thread; PostgreSQL in the writer's own thread."""
    writer = AuditWriter(database)
    thread = await writer.run(lambda tx: threading.get_ident())
    await writer.aclose()
    assert (thread == threading.get_ident()) is database.is_sqlite


async def test_small_batches_still_commit_everything(database: Database) -> None:
    """With a batch limit of 7, 50 concurrent appends still commit as one valid chain."""
    writer = AuditWriter(database, max_batch=7)
    await asyncio.gather(*(writer.append(draft(i)) for i in range(50)))
    await writer.aclose()
    assert [e.seq for e in stored(database)] == list(range(1, 51))
    assert verify_store(database).ok


async def test_checkpoint_records_every_chain_head(database: Database) -> None:
    """A checkpoint stores every chain's head at that moment, with a hash over them."""
    a, b = AuditWriter(database, "a"), AuditWriter(database, "b")
    await b.append(draft(1))
    await a.append(draft(1))
    entry = await a.append(draft(2))
    point = await a.checkpoint(T0)
    await asyncio.gather(a.aclose(), b.aclose())
    assert point.heads["a"] == (2, entry.hash) and point.heads["b"].seq == 1
    with database.connect() as conn:
        row = conn.execute(sa.select(audit_checkpoints)).one()
    assert row.id == point.id and row.ts == T0 and row.hash == point.hash
    assert row.heads_json["a"] == {"seq": 2, "hash": entry.hash}
    assert verify_store(database).ok


def test_sync_api_for_callers_without_a_loop(db_url: str) -> None:
    """append_sync, run_sync and checkpoint_sync write through the same chain."""
    db = open_database(db_url)
    db.migrate()
    writer = AuditWriter(db)
    assert writer.append_sync(draft(1)).seq == 1
    assert writer.run_sync(lambda tx: add_outbox(tx, "cli")) == 2
    with pytest.raises(ZeroDivisionError):
        writer.run_sync(lambda tx: 1 // 0)
    writer.checkpoint_sync(T0)
    writer.close()
    assert verify_store(db).ok
    assert outbox_kinds(db) == ["cli"]
    db.dispose()


async def test_lost_head_row_is_rebuilt_from_the_last_entry(database: Database) -> None:
    """If the head row disappears, the writer continues after the chain's last entry."""
    writer = AuditWriter(database)
    await writer.append(draft(1))
    with database.begin() as conn:
        conn.execute(sa.delete(audit_heads))
    assert (await writer.append(draft(2))).seq == 2
    await writer.aclose()
    assert verify_store(database).ok


def test_writer_moves_between_event_loops_when_idle(db_url: str) -> None:
    """A writer used under one asyncio.run can be used under the next one."""
    db = open_database(db_url)
    db.migrate()
    writer = AuditWriter(db)
    assert asyncio.run(writer.append(draft(1))).seq == 1
    assert asyncio.run(writer.append(draft(2))).seq == 2
    asyncio.run(writer.aclose())
    db.dispose()


async def test_sqlite_wal_is_checkpointed_off_the_event_loop(sqlite_url: str) -> None:
    """On SQLite a background thread checkpoints the WAL (the writer's own connection only
    keeps a far-off automatic checkpoint as a backstop), and stops with the writer."""
    db = open_database(sqlite_url)
    db.migrate()
    writer = AuditWriter(db)
    for i in range(600):
        await writer.append(draft(i))
    checkpointer = writer._checkpointer
    assert checkpointer is not None and checkpointer.runs >= 1
    with db.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # others: default
    await writer.aclose()
    assert writer._checkpointer is None
    assert not checkpointer._thread.is_alive()
    assert verify_store(db).ok
    await db.aclose()


def test_writer_arguments_are_checked(sqlite_url: str) -> None:
    """An empty or over-long chain id, or a batch limit below one, is refused."""
    db = open_database(sqlite_url)
    for bad in ("", "x" * 65):
        with pytest.raises(ValueError, match="chain_id"):
            AuditWriter(db, bad)
    with pytest.raises(ValueError, match="max_batch"):
        AuditWriter(db, max_batch=0)
    db.dispose()
