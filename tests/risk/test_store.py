"""The risk state in the store, on SQLite and PostgreSQL: one read, one upsert, no lost counts."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from clearance.audit.writer import AuditWriter, WriteTx
from clearance.risk import Recorded, RiskEngine
from clearance.risk.store import RiskStoreConflict, RowCache, describe, keys_of
from clearance.risk.tables import risk_state
from clearance.store.database import Database, open_database
from clearance.store.schema import metadata

from .helpers import T0, request

CHANGE = "procurement.change_supplier_terms"


def rows(db: Database) -> dict[tuple[str, str, str], tuple[int, str]]:
    with db.connect() as conn:
        found = conn.execute(sa.select(risk_state)).all()
    return {(r.kind, r.subject, r.item): (r.version, r.state) for r in found}


def check(
    db: Database, engine: RiskEngine, req: object, effect: str = "allow", at: object = T0
) -> dict[str, Any]:
    """Assess then record one check, the way the gateway does (two connections)."""
    with db.connect() as conn:
        a = engine.assessment(conn, req, at)  # type: ignore[arg-type]
    with db.begin() as conn:
        recorded = engine.record(conn, req, effect, at, assessment=a)  # type: ignore[arg-type]
    engine.committed(recorded)
    return a.risk


def test_the_migration_creates_the_risk_table_as_declared(database: Database) -> None:
    """After `migrate()`, Alembic finds no difference for `risk_state` and `risk_folds` (their
    module registers them)."""
    with database.connect() as conn:
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), metadata
        )
    assert [d for d in diffs if "risk_state" in repr(d) or "risk_folds" in repr(d)] == []
    assert "risk_state" in metadata.tables and "risk_folds" in metadata.tables


def test_an_empty_store_reads_as_no_history(database: Database) -> None:
    """Nothing recorded: counts of one, everything new."""
    with database.connect() as conn:
        r = RiskEngine().assess(conn, request(geo="US", device="d", payee="p", amount=5), T0)
    assert r["velocity_1h"] == 1 and r["agent_velocity_1h"] == 1
    assert (r["new_geo"], r["new_device"], r["new_payee"]) == (True, True, True)


def test_recorded_checks_feed_the_next_assessment(database: Database) -> None:
    """Counts, 24 h amounts, anomaly history and sightings come back from the store."""
    engine = RiskEngine({"amount_24h_limit": 2000})
    for i in range(12):
        check(
            database,
            engine,
            request(amount=100 + i, geo="US", device="d", payee="p"),
            at=T0 + timedelta(seconds=i),
        )
    r = check(
        database,
        engine,
        request(amount=5000, geo="US", device="d", payee="p"),
        at=T0 + timedelta(seconds=30),
    )
    assert (r["velocity_1m"], r["velocity_1h"], r["agent_velocity_24h"]) == (13, 13, 13)
    assert r["amount_24h"] == sum(100 + i for i in range(12)) + 5000
    assert r["amount_anomaly"] > 100
    assert (r["new_geo"], r["new_device"], r["new_payee"]) == (False, False, False)
    assert sorted({k[0] for k in rows(database)}) == [
        "actor_action",
        "agent_action",
        "seen_device",
        "seen_geo",
        "seen_payee",
    ]


def test_a_stale_snapshot_loses_no_count(database: Database) -> None:
    """Two checks assessed before either records (a race): both are counted."""
    engine = RiskEngine(cache_rows=0)
    req = request(amount=10)
    with database.connect() as conn:
        first = engine.assessment(conn, req, T0)
        second = engine.assessment(conn, req, T0)
    for a in (first, second):
        with database.begin() as conn:
            engine.record(conn, req, "allow", T0, assessment=a)
    actor = keys_of(engine.facts(req)).actor
    assert actor is not None
    assert rows(database)[actor][0] == 2
    with database.connect() as conn:
        assert engine.assess(conn, req, T0)["velocity_1m"] == 3


def test_a_stale_snapshot_of_an_existing_row_is_reread(database: Database) -> None:
    """A row updated after the snapshot was taken is read again and updated on top."""
    engine = RiskEngine(cache_rows=0)
    req = request(amount=10)
    check(database, engine, req)
    with database.connect() as conn:
        snapshots = [engine.assessment(conn, req, T0) for _ in range(3)]
    for a in snapshots:
        with database.begin() as conn:
            engine.record(conn, req, "allow", T0, assessment=a)
    with database.connect() as conn:
        r = engine.assess(conn, req, T0)
    assert r["velocity_1m"] == 5 and r["amount_24h"] == 50


def test_record_without_a_snapshot_reads_inside_its_transaction(database: Database) -> None:
    """`record` alone (no assessment), even outside a transaction, counts the check."""
    engine = RiskEngine()
    req = request()
    with database.connect() as conn:
        engine.record(conn, req, "allow", T0)
        engine.record(conn, req, "allow", T0)
        assert not conn.in_transaction()
    with database.connect() as conn:
        assert engine.assess(conn, req, T0)["velocity_1m"] == 3


def test_a_known_sighting_is_rewritten_at_most_hourly(database: Database) -> None:
    """A country seen again within the hour costs no write; after an hour its time moves on."""
    engine = RiskEngine()
    req = request(geo="US")
    geo = keys_of(engine.facts(req)).geo
    assert geo is not None
    check(database, engine, req)
    check(database, engine, req, at=T0 + timedelta(minutes=59))
    assert rows(database)[geo][0] == 1
    check(database, engine, req, at=T0 + timedelta(hours=1))
    assert rows(database)[geo][0] == 2


def test_a_sighting_expires_after_the_retention(database: Database) -> None:
    """Seen once, a country is known for 90 days and new again after."""
    engine = RiskEngine()
    check(database, engine, request(geo="US"))
    with database.connect() as conn:
        assert engine.assess(conn, request(geo="US"), T0 + timedelta(days=89))["new_geo"] is False
        assert engine.assess(conn, request(geo="US"), T0 + timedelta(days=90))["new_geo"] is True
        assert engine.assess(conn, request(geo="FR"), T0 + timedelta(days=1))["new_geo"] is True


def test_a_bank_details_change_then_a_payment_matches_the_pattern(database: Database) -> None:
    """The supplier-fraud case: a change to s-1's bank details, then a payment to s-1."""
    engine = RiskEngine()
    change = request(CHANGE, user="mallory", supplier_id="s-1", changes=["bank_details"])
    check(database, engine, change, effect="approve")
    soon = check(database, engine, request(payee="s-1", amount=900), at=T0 + timedelta(days=2))
    assert soon["patterns"] == ["payee_bank_change"]
    assert "changed 2 days ago" in soon["reasons"][-1]
    other = check(database, engine, request(payee="s-2", amount=900), at=T0 + timedelta(days=2))
    assert other["patterns"] == []
    later = check(database, engine, request(payee="s-1", amount=900), at=T0 + timedelta(days=30))
    assert later["patterns"] == []


def test_denials_build_a_burst_and_allowed_checks_do_not(database: Database) -> None:
    """Five denied checks from one agent within ten minutes match `denial_burst`."""
    engine = RiskEngine()
    for i in range(4):
        check(database, engine, request(), effect="deny", at=T0 + timedelta(minutes=i))
    check(database, engine, request(), effect="allow", at=T0 + timedelta(minutes=4))
    with database.connect() as conn:
        assert engine.assess(conn, request(), T0 + timedelta(minutes=5))["patterns"] == []
    check(database, engine, request(user="dave"), effect="block", at=T0 + timedelta(minutes=5))
    with database.connect() as conn:
        r = engine.assess(conn, request(user="erin"), T0 + timedelta(minutes=6))
        assert r["patterns"] == ["denial_burst"]
        assert engine.assess(conn, request(), T0 + timedelta(minutes=11))["patterns"] == []


def test_refused_amounts_are_not_kept(database: Database) -> None:
    """A denied request counts as a request but its amount joins neither sum nor history."""
    engine = RiskEngine()
    check(database, engine, request(amount=1000), effect="deny")
    check(database, engine, request(amount=10), effect="allow")
    with database.connect() as conn:
        r = engine.assess(conn, request(amount=1), T0)
    assert r["velocity_1m"] == 3 and r["amount_24h"] == 11


def test_prune_deletes_only_expired_rows(database: Database) -> None:
    """Rows past `expires_at` go; the rest stay."""
    engine = RiskEngine()
    check(database, engine, request(geo="US"))  # agent counters: a day; actor and geo: 90
    check(database, engine, request(user="x", agent=None), at=T0 + timedelta(days=2))
    with database.begin() as conn:
        assert engine.prune(conn, T0 + timedelta(days=3)) == 1
    kinds = sorted(k[0] for k in rows(database))
    assert kinds == ["actor_action", "actor_action", "seen_geo"]


def test_an_idle_sqlite_connection_reads_fresh_rows(tmp_path: object) -> None:
    """A read on an idle SQLite connection keeps no snapshot: it sees later commits."""
    db = open_database(f"sqlite:///{tmp_path}/r.db")
    db.migrate()
    engine = RiskEngine()
    try:
        with db.connect() as reader:
            assert engine.assess(reader, request(), T0)["velocity_1m"] == 1
            assert not reader.in_transaction()
            with db.begin() as writer:
                engine.record(writer, request(), "allow", T0)
            assert engine.assess(reader, request(), T0)["velocity_1m"] == 2
    finally:
        db.dispose()


def test_a_disabled_engine_reads_and_writes_nothing(database: Database) -> None:
    """`enabled: false`: the neutral map, no rows."""
    engine = RiskEngine({"enabled": False})
    r = check(database, engine, request(geo="US"))
    assert r["score"] == 0 and r["new_geo"] is False
    assert rows(database) == {}


async def test_record_runs_inside_the_audit_writers_unit(database: Database) -> None:
    """In the writer's batch transaction, the risk rows commit with the audit entry; a unit
    that fails leaves no count behind, even in the engine's cache."""
    engine = RiskEngine()
    writer = AuditWriter(database, "risk-test")
    req = request(amount=20, geo="US")
    try:
        for i in range(3):
            now = T0 + timedelta(seconds=i)
            with database.connect() as conn:
                a = engine.assessment(conn, req, now)

            def unit(tx: WriteTx, now: Any = now, a: Any = a) -> Recorded:
                return engine.record(tx.conn, req, "allow", now, assessment=a)

            engine.committed(await writer.run(unit))

        def failing(tx: WriteTx) -> None:
            engine.record(tx.conn, req, "allow", T0)
            raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            await writer.run(failing)  # its savepoint is rolled back: not counted
    finally:
        await writer.aclose()
    with database.connect() as conn:
        assert engine.assess(conn, req, T0 + timedelta(seconds=5))["velocity_1m"] == 4


def test_concurrent_postgresql_transactions_lose_no_count(pg_migrated_url: str) -> None:
    """Two PostgreSQL transactions recording the same actor at once: both counts survive."""
    db = open_database(pg_migrated_url)
    engine = RiskEngine()
    req = request(amount=5)
    errors: list[BaseException] = []
    try:
        with db.connect() as conn:
            snapshot = engine.assessment(conn, req, T0)
        first = db.sync_engine.connect()
        tx = first.begin()
        engine.record(first, req, "allow", T0, assessment=snapshot)  # holds the row locks

        def second() -> None:
            try:
                with db.begin() as conn:
                    engine.record(conn, req, "allow", T0, assessment=snapshot)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        with db.connect() as probe:  # wait until the second one waits on our lock
            for _ in range(500):
                waiting = probe.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
                probe.rollback()
                if waiting:
                    break
                threading.Event().wait(0.01)
        tx.commit()
        first.close()
        thread.join(30)
        assert not thread.is_alive() and errors == []
        with db.connect() as conn:
            r = engine.assess(conn, req, T0)
        assert r["velocity_1m"] == 3 and r["amount_24h"] == 15
    finally:
        db.dispose()


def test_endless_conflicts_fail_the_unit(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When rows keep changing under `record`, it raises instead of guessing."""
    from clearance.risk import store

    monkeypatch.setattr(store, "_upsert", lambda conn, rows, ts: set())
    with pytest.raises(RiskStoreConflict), database.begin() as conn:
        RiskEngine().record(conn, request(), "allow", T0)


def count_selects(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store reads `clearance.risk.store` makes (each entry: keys read)."""
    from clearance.risk import store

    calls: list[int] = []
    real = store._select

    def spy(conn: Any, keys: list[Any]) -> Any:
        calls.append(len(keys))
        return real(conn, keys)

    monkeypatch.setattr(store, "_select", spy)
    return calls


def test_the_cache_saves_the_read_of_a_recent_subject(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its rows were read and its check committed, a subject's next check reads nothing."""
    engine = RiskEngine()
    req = request(amount=10, geo="US", device="d", payee="p")
    check(database, engine, req)
    calls = count_selects(monkeypatch)
    r = check(database, engine, req, at=T0 + timedelta(seconds=1))
    assert calls == [] and r["velocity_1m"] == 2 and r["new_geo"] is False
    r = check(database, engine, req, at=T0 + timedelta(seconds=2))
    assert calls == [] and r["velocity_1m"] == 3 and r["amount_24h"] == 30


def test_an_unreported_commit_only_costs_reads(database: Database) -> None:
    """Without `committed`, the rows written are read from the store again: counts stay exact."""
    engine = RiskEngine()
    req = request(amount=10)
    for i in range(3):
        now = T0 + timedelta(seconds=i)
        with database.connect() as conn:
            a = engine.assessment(conn, req, now)
        with database.begin() as conn:
            engine.record(conn, req, "allow", now, assessment=a)
    with database.connect() as conn:
        assert engine.assess(conn, req, T0)["velocity_1m"] == 4


def test_a_rolled_back_record_leaves_no_phantom(database: Database) -> None:
    """A transaction that rolls back after `record` is not counted, not even from the cache."""
    engine = RiskEngine()
    req = request(amount=10)
    check(database, engine, req)
    with database.connect() as conn:
        a = engine.assessment(conn, req, T0)
        tx = conn.begin()
        engine.record(conn, req, "allow", T0, assessment=a)
        tx.rollback()
    with database.connect() as conn:
        assert engine.assess(conn, req, T0)["velocity_1m"] == 2


def test_two_instances_with_their_own_caches_lose_no_count(database: Database) -> None:
    """Two engines (two server instances) alternating on one subject: the store counts every
    check, and each engine's stale view is corrected when it records."""
    a, b = RiskEngine(), RiskEngine()
    req = request(amount=1)
    for i in range(6):
        check(database, a if i % 2 == 0 else b, req, at=T0 + timedelta(seconds=i))
    fresh = RiskEngine(cache_rows=0)
    with database.connect() as conn:
        assert fresh.assess(conn, req, T0 + timedelta(seconds=6))["velocity_1m"] == 7
        # b recorded last and refreshed on its conflict: its view is exact.
        assert b.assess(conn, req, T0 + timedelta(seconds=6))["velocity_1m"] == 7
        # a's copy lags by b's one check since a last recorded.
        assert a.assess(conn, req, T0 + timedelta(seconds=6))["velocity_1m"] == 6


def test_the_row_cache_is_a_bounded_lru_that_keeps_the_newest_version() -> None:
    """Old entries are evicted first; a lower version never replaces a higher; held rows are
    neither returned nor replaced by reads."""
    cache = RowCache(2)
    k1, k2, k3 = ("a", "1", ""), ("a", "2", ""), ("a", "3", "")
    cache.put_many({k1: (1, "x"), k2: (1, "y")})
    cache.get_many([k1])  # k1 is now the most recent
    cache.put_many({k3: (1, "z")})
    assert cache.get_many([k1, k2, k3]) == {k1: (1, "x"), k3: (1, "z")}
    cache.put_many({k1: (0, None)}, read=True)
    assert cache.get_many([k1]) == {k1: (1, "x")}
    cache.hold([k1])
    assert cache.get_many([k1]) == {}
    cache.put_many({k1: (1, "x")}, read=True)
    assert cache.get_many([k1]) == {}
    cache.put_many({k1: (2, "w")})
    assert cache.get_many([k1]) == {k1: (2, "w")}
    assert len(RowCache(0)) == 0


def test_complete_sets_say_absent_until_a_row_of_theirs_is_evicted_or_held() -> None:
    """A person kept whole answers for their unknown payees (absent, as of the set's mark);
    evicting one of their rows, or holding one, ends that; sets of a kind are never evicted."""
    cache = RowCache(3)
    mine = ("seen_payee", "ann", "s1")
    other = ("seen_payee", "ann", "s9")
    cache.cover_subject("ann", 7, {mine: (1, 100.0, 7)})
    assert cache.get_many([mine, other]) == {mine: (1, 100.0, 7), other: (0, None, 7)}
    assert cache.get_many([("seen_payee", "bob", "s1")]) == {}  # bob is not kept whole
    assert cache.get_many([("actor_action", "ann", "pay")]) == {}  # not a kind of the set
    cache.put_many({("x", str(i), ""): (1, i) for i in range(3)})  # evicts ann's one row
    assert cache.get_many([other]) == {}
    cache.cover_subject("ann", 8, {mine: (1, 100.0, 8)})
    cache.hold([mine])
    assert cache.get_many([other]) == {}

    bank = ("payee_bank", "s1", "")
    cache.cover_kind("payee_bank", 9, {bank: (2, 50.0, 9)})
    cache.put_many({("y", str(i), ""): (1, i) for i in range(10)})  # never evicts the kind
    assert cache.get_many([bank, ("payee_bank", "s2", "")]) == {
        bank: (2, 50.0, 9),
        ("payee_bank", "s2", ""): (0, None, 9),
    }
    cache.advance(10, [(bank, "u")], lambda update, value: value + 1)
    assert cache.get_many([bank])[bank] == (2, 51.0, 10)
    cache.advance(10, [(bank, "u")], lambda update, value: value + 1)  # counted once
    assert cache.get_many([bank])[bank] == (2, 51.0, 10)
    cache.forget([bank])  # deleted: absent now, and the set stays complete
    assert cache.get_many([bank]) == {bank: (0, None, 9)}
    cache.cover_kind("payee_bank", 11, {bank: (3, 60.0, 11)})
    cache.drop_sets()  # the kept rows stay, as ordinary rows
    assert cache.get_many([bank, ("payee_bank", "s2", "")]) == {bank: (3, 60.0, 11)}
    cache.cover_kind("payee_bank", 12, {})
    cache.put_many({("payee_bank", f"n{i}", ""): (1, 1.0, 12) for i in range(3)})
    assert not cache.uncover_kind("payee_bank", 3) and cache.covers_kind("payee_bank")
    cache.put_many({("payee_bank", "n3", ""): (1, 1.0, 12)})  # grows past its bound: ends
    assert cache.uncover_kind("payee_bank", 3) and not cache.covers_kind("payee_bank")
    assert ("payee_bank", "n3", "") in cache.get_many([("payee_bank", "n3", "")])
    cache.clear()
    assert cache.get_many([bank]) == {} and len(cache) == 0


def test_a_cache_holding_the_whole_store_says_absent_until_it_no_longer_does() -> None:
    """Kept whole (`cover_all`), any row not kept is absent as of the mark; an eviction, a
    hold, dropped sets or a clear end that, a deletion does not; more rows than fit never
    make it whole."""
    k1, k2 = ("seen_geo", "ann", "FR"), ("actor_action", "bob", "pay")
    cache = RowCache(2)
    cache.cover_all(5, {k1: (1, 10.0, 5)})
    assert cache.whole
    assert cache.get_many([k1, k2]) == {k1: (1, 10.0, 5), k2: (0, None, 5)}
    cache.forget([k1])  # deleted from the store: absent, still whole
    assert cache.whole and cache.get_many([k1]) == {k1: (0, None, 5)}
    cache.put_many({("x", str(i), ""): (1, i) for i in range(3)})  # one is evicted
    assert not cache.whole and cache.get_many([k2]) == {}
    for end in (cache.hold, lambda _keys: cache.drop_sets(), lambda _keys: cache.clear()):
        cache.cover_all(6, {})
        assert cache.whole
        end([k1])
        assert not cache.whole and cache.get_many([k2]) == {}
    cache.cover_all(7, {("x", str(i), ""): (1, i) for i in range(3)})  # three rows, room for two
    assert not cache.whole
    assert not RowCache(0).whole


def test_a_person_with_too_many_rows_is_read_row_by_row(database: Database) -> None:
    """Someone who paid more payees than are read at once is never kept whole: each unknown
    payee of theirs is read, and still known new or not."""
    from clearance.risk.store import SUBJECT_ROWS_MOST, select_marked

    engine = RiskEngine(chain_id="many")
    with database.begin() as conn:
        for i in range(SUBJECT_ROWS_MOST + 1):
            engine.record(conn, request(user="zed", agent=None, payee=f"p{i}"), "allow", T0)
    with database.connect() as conn:
        wanted = [("seen_payee", "zed", "p0")]
        found, _, whole = select_marked(conn, wanted, "many", "zed")
        assert whole is None and found[wanted[0]][0] == 1
        found, _, whole = select_marked(conn, [("seen_payee", "amy", "p0")], "many", "amy")
        assert whole == {}  # amy has no rows: kept whole, and empty
        a = engine.assessment(conn, request(user="zed", agent=None, payee="p-new"), T0)
        assert a.risk["new_payee"] is True
        a = engine.assessment(conn, request(user="zed", agent=None, payee="p3"), T0)
        assert a.risk["new_payee"] is False


def test_prune_walks_the_table_in_batches(database: Database) -> None:
    """Pruning in batches of one row (each its own transaction) deletes every expired row."""
    engine = RiskEngine()
    for user in ("a", "b", "c"):
        check(database, engine, request(user=user, agent=None, geo="US"))
    with database.connect() as conn:
        assert engine.prune(conn, T0 + timedelta(days=89), batch=1) == 0
        assert engine.prune(conn, T0 + timedelta(days=91), batch=1) == 6
        assert not conn.in_transaction()
    assert rows(database) == {}


def test_describe_shows_a_rows_state_as_plain_values(database: Database) -> None:
    """`describe` decodes each kind of row for people reading the table."""
    engine = RiskEngine()
    check(database, engine, request(amount=12.5, geo="US"), effect="deny")
    found = {k[0]: describe(k[0], v[1]) for k, v in raw_states(database).items()}
    assert found["actor_action"]["amounts"] == []  # refused: no amount kept
    assert sum(found["actor_action"]["1m"].values()) == 1
    assert "seen_geo" not in found  # refused: the country is not made known
    assert found["agent_denials"] == [T0.timestamp()]
    check(database, engine, request(amount=12.5, geo="US"), effect="allow")
    found = {k[0]: describe(k[0], v[1]) for k, v in raw_states(database).items()}
    assert found["seen_geo"] == T0.timestamp()


def raw_states(db: Database) -> dict[tuple[str, str, str], tuple[int, bytes]]:
    with db.connect() as conn:
        found = conn.execute(sa.select(risk_state)).all()
    return {(r.kind, r.subject, r.item): (r.version, r.state) for r in found}
