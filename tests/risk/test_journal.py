"""Risk rows written behind the check: the audit entry is the journal, a fold stores it once."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clearance.audit.entry import AuditDraft, Kind
from clearance.audit.writer import AuditWriter, WriteTx
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.risk import RiskEngine
from clearance.risk.journal import facts_from_json
from clearance.risk.store import RiskStoreConflict
from clearance.risk.tables import risk_folds, risk_state
from clearance.store.database import Database
from clearance.testing import FrozenClock

from .helpers import T0, request


def stored(db: Database) -> dict[tuple[str, str, str], int]:
    """Each risk row's version."""
    with db.connect() as conn:
        found = conn.execute(
            sa.select(
                risk_state.c.kind, risk_state.c.subject, risk_state.c.item, risk_state.c.version
            )
        ).all()
    return {(r[0], r[1], r[2]): int(r[3]) for r in found}


def marks(db: Database) -> dict[str, int]:
    with db.connect() as conn:
        return {
            str(c): int(s)
            for c, s in conn.execute(sa.select(risk_folds.c.chain_id, risk_folds.c.seq))
        }


class Process:
    """One gateway process's share of a check, spelled out: an engine and a writer (chain)."""

    def __init__(self, db: Database, chain: str, *, cache_rows: int = 1000) -> None:
        self.db = db
        self.engine = RiskEngine(cache_rows=cache_rows, chain_id=chain)
        self.writer = AuditWriter(db, chain)

    async def check(self, req: Request, at: datetime, effect: str = "allow") -> dict[str, Any]:
        """Assess, append the entry with its journal, note it: what `Gateway.check` does."""
        with self.db.connect() as conn:
            a = self.engine.assessment(conn, req, at)
        data = {"risk": {"score": a.risk["score"], "f": self.engine.journal_entry(a)}}
        entry = await self.writer.append(
            AuditDraft(kind=Kind.CHECK, ts=at, action=req.action, effect=effect, data=data)
        )
        self.engine.note(entry.seq, a, effect, at)
        return a.risk

    async def fold(self, at: datetime) -> int:
        result = await self.writer.run(lambda tx: self.engine.fold(tx, at))
        self.engine.folded(result)
        return int(result.entries)

    def assess(self, req: Request, at: datetime) -> dict[str, Any]:
        with self.db.connect() as conn:
            return self.engine.assess(conn, req, at)


def afresh(db: Database, req: Request, when: datetime) -> dict[str, Any]:
    """The risk map a process with nothing in memory reads from the store."""
    with db.connect() as conn:
        return RiskEngine(chain_id="fresh").assess(conn, req, when)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_a_check_counts_at_once_and_is_stored_by_the_fold(database: Database) -> None:
    """The next check sees a noted check before any fold; the fold stores it; a process with
    nothing in memory then reads the same counts from the store."""
    one = Process(database, "one")
    req = request(amount=20, geo="US", device="d1", payee="p1")
    try:
        assert (await one.check(req, at(0)))["velocity_1m"] == 1
        assert (await one.check(req, at(1)))["velocity_1m"] == 2
        assert one.assess(req, at(2))["velocity_1m"] == 3
        assert stored(database) == {}  # written behind: nothing yet
        assert one.engine.journal.pending == 2
        assert await one.fold(at(2)) == 2
        assert one.engine.journal.pending == 0
        assert marks(database)["one"] == 2
        assert one.assess(req, at(2))["velocity_1m"] == 3
    finally:
        await one.writer.aclose()
    fresh = Process(database, "fresh")
    try:
        r = fresh.assess(req, at(3))
        assert r["velocity_1m"] == 3 and r["amount_24h"] == 60
        assert not (r["new_geo"] or r["new_device"] or r["new_payee"])
    finally:
        await fresh.writer.aclose()


async def crashed_process(database: Database, checks: int) -> Request:
    """A process on chain "crashed" that makes `checks` checks of one payment a second apart
    from `at(0)`, then dies before folding (its memory is gone); the request."""
    crashed = Process(database, "crashed")
    req = request(amount=10, geo="US")
    try:
        for i in range(checks):
            await crashed.check(req, at(i))
    finally:
        await crashed.writer.aclose()  # and its memory is gone: no fold
    return req


async def test_a_crashed_process_checks_are_folded_once_by_another(database: Database) -> None:
    """A process that dies before folding loses nothing: its checks are in its audit entries,
    and the next fold of any process counts them — once, however often it folds."""
    req = await crashed_process(database, 5)
    survivor = Process(database, "survivor")
    try:
        assert survivor.assess(req, at(6))["velocity_1m"] == 1  # not folded yet: unseen
        assert await survivor.fold(at(6)) == 5
        assert await survivor.fold(at(7)) == 0
        assert survivor.assess(req, at(8))["velocity_1m"] == 6
        assert marks(database)["crashed"] == 5
        assert stored(database)[("actor_action", "carol", "payments.transfer")] == 1
    finally:
        await survivor.writer.aclose()


async def test_two_processes_folding_in_turn_count_every_check_once(database: Database) -> None:
    """Two processes check the same person and fold in turn (each folds the other's checks
    too): every check is counted exactly once, and each sees the other's after a fold."""
    a, b = Process(database, "a"), Process(database, "b")
    req = request(amount=1, geo="US")
    try:
        n = 0
        for round_ in range(4):
            for p in (a, b, a):
                await p.check(req, at(n))
                n += 1
            await (a if round_ % 2 else b).fold(at(n))
        assert a.assess(req, at(n))["velocity_1m"] >= 12 - 2  # b's unfolded are not seen yet
        await a.fold(at(n))
        await b.fold(at(n))
        assert a.assess(req, at(n))["velocity_1m"] == 13
        assert b.assess(req, at(n))["velocity_1m"] == 13
    finally:
        await a.writer.aclose()
        await b.writer.aclose()
    fresh = Process(database, "c")
    try:
        assert fresh.assess(req, at(n))["velocity_1m"] == 13
    finally:
        await fresh.writer.aclose()


async def test_a_fold_that_is_rolled_back_stores_nothing(database: Database) -> None:
    """A fold whose transaction fails moves no mark and writes no row; the next one does it
    all, and the checks stay counted in memory in between."""
    p = Process(database, "p")
    req = request(amount=5)
    try:
        await p.check(req, at(0))
        await p.check(req, at(1))

        def failing(tx: WriteTx) -> None:
            p.engine.fold(tx, at(2))
            raise RuntimeError("the disk is full")

        with pytest.raises(RuntimeError):
            await p.writer.run(failing)
        assert stored(database) == {} and "p" not in marks(database)
        assert p.assess(req, at(2))["velocity_1m"] == 3
        assert await p.fold(at(2)) == 2
        assert p.assess(req, at(2))["velocity_1m"] == 3
    finally:
        await p.writer.aclose()


async def test_a_row_written_through_under_a_fold_fails_it(database: Database) -> None:
    """A row changed since the fold read it (a process writing through, in between) makes the
    fold fail whole rather than overwrite a count."""
    p = Process(database, "p")
    req = request(amount=5)
    try:
        await p.check(req, at(0))

        def racing(tx: WriteTx) -> Any:
            import clearance.risk.journal as journal

            real = journal.select_rows

            def stale(conn: Any, keys: Any) -> Any:
                rows = real(conn, keys)
                RiskEngine().record(conn, req, "allow", at(1))  # writes the same rows
                return rows

            journal.select_rows = stale
            try:
                return p.engine.fold(tx, at(1))
            finally:
                journal.select_rows = real

        with pytest.raises(RiskStoreConflict):
            await p.writer.run(racing)
        assert "p" not in marks(database)
    finally:
        await p.writer.aclose()


async def test_malformed_journals_are_skipped_not_fatal(database: Database) -> None:
    """An entry whose journal is not what a check writes (hand-made, or from elsewhere) counts
    nothing, and the fold goes on past it."""
    writer = AuditWriter(database, "odd")
    for data in (
        {"risk": {"f": ["carol", None, None, None, None, "lots", None]}},
        {"risk": {"f": "carol"}},
        {"risk": "x"},
        {},
    ):
        await writer.append(AuditDraft(kind=Kind.CHECK, ts=T0, action="pay", data=data))
    await writer.aclose()
    p = Process(database, "p")
    try:
        assert await p.fold(at(0)) == 4
        assert stored(database) == {} and marks(database)["odd"] == 4
    finally:
        await p.writer.aclose()


def test_journal_facts_are_read_back_strictly() -> None:
    """Only a list of seven fields of the right types is a journal."""
    good = facts_from_json("pay", ["carol", "bot", "US", "d", "p", 12, None])
    assert good is not None and good.actor == "carol" and good.amount == 12.0
    assert facts_from_json("pay", [None, "bot", None, None, None, None, None]).actor == "bot"  # type: ignore[union-attr]
    for bad in (
        None,
        [],
        ["carol"] * 8,
        ["carol", 1, None, None, None, None, None],
        ["carol", None, None, None, None, True, None],
    ):
        assert facts_from_json("pay", bad) is None


POLICY = """
version: 1
policies:
  default: allow
  rules:
    - id: busy
      actions: [pay]
      when: risk.velocity_1h > 3
      effect: deny
risk: {}
"""


async def crashed_gateway(tmp_path: Path, db_url: str) -> tuple[Path, FrozenClock, Request]:
    """A gateway on POLICY that allows three payments by dana, then dies (no fold): the
    policy file, the clock and the request, for the gateway started after it."""
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    clock = FrozenClock(T0)
    req = Request("pay", {"amount": 1}, {"user": "dana", "agent": "bot"}, {})
    first = Gateway.open(policy, database_url=db_url, clock=clock)
    for _ in range(3):
        assert (await first.check(req)).decision.effect.value == "allow"
    assert first.risk is not None and first.risk.journal.pending == 3
    await first.writer.aclose()  # dies here: nothing folded
    await first.db.aclose()
    return policy, clock, req


async def test_a_restarted_gateway_loses_no_count(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that stops without closing (a crash: no fold) and one started after it: the
    new one folds the old one's checks before its first, so the velocity rule still holds."""
    monkeypatch.setattr("clearance.risk.journal.FOLD_INTERVAL_S", 3600.0)  # no fold by time
    policy, clock, req = await crashed_gateway(tmp_path, db_url)
    second = Gateway.open(policy, database_url=db_url, clock=clock)
    try:
        assert (await second.check(req)).decision.effect.value == "deny"  # the 4th in an hour
        assert second.risk is not None and second.risk.journal.folded_entries == 3
    finally:
        await second.aclose()
    third = Gateway.open(policy, database_url=db_url, clock=clock)
    try:  # the second closed cleanly: it folded its own check on the way out
        assert (await third.check(req)).decision.effect.value == "deny"
        assert third.risk is not None and third.risk.journal.folded_entries == 0
    finally:
        await third.aclose()


async def test_warming_keeps_the_most_recent_rows_with_the_unfolded_checks(
    database: Database,
) -> None:
    """`warm` fills the row cache with the most recently updated rows, up to its size, and
    counts this process's unfolded checks on top: a warmed read needs no statement and
    matches what the store and memory say together."""
    writer = Process(database, "w")
    try:
        for i, user in enumerate(("old", "mid", "new")):
            await writer.check(request(user=user, agent=None, amount=1), at(i * 60))
        await writer.fold(at(200))
        await writer.check(request(user="new", agent=None, amount=1), at(201))  # unfolded
        warmed = RiskEngine(cache_rows=2, chain_id="w")
        warmed.journal.adopt(writer.engine.journal)  # the same process, after a reload
        with database.connect() as conn:
            assert warmed.warm(conn, at(202)) == 2
        kept = {k[1] for k in warmed.cache._rows}
        assert kept == {"mid", "new"}  # the two most recently updated
        misses = warmed.cache.misses
        with database.connect() as conn:
            r = warmed.assess(conn, request(user="new", agent=None, amount=1), at(203))
        assert r["velocity_1h"] == 3 and warmed.cache.misses == misses
    finally:
        await writer.writer.aclose()


async def test_a_process_warmed_with_every_row_reads_nothing_until_another_folds(
    database: Database,
) -> None:
    """When every row of the store fits in the cache, warming keeps them all and knows it: a
    person never seen, or a known one's new country, device or payee, is new without a
    statement, and says what the store says. Once another process has folded, the first's
    next fold drops what it kept, and a check reads again."""
    first = Process(database, "a")
    second = Process(database, "b")
    try:
        await first.check(request(user="ann", geo="FR", device="d1", payee="p1", amount=5), at(0))
        await first.fold(at(1))
        warmed = RiskEngine(cache_rows=100, chain_id="a")
        warmed.journal.adopt(first.engine.journal)
        first.engine = warmed
        with database.connect() as conn:
            assert warmed.warm(conn, at(2)) == len(stored(database))
        assert warmed.cache.whole
        asks = [
            request(user="ann", geo="FR", device="d1", payee="p1", amount=5),
            request(user="ann", geo="DE", device="d2", payee="p2", amount=5),
            request(user="zed", geo="FR", device="d1", payee="p1", amount=5),
        ]
        for i, req in enumerate(asks):
            kept = warmed.kept_assessment(req, at(3 + i))
            assert kept is not None  # no statement needed
            assert kept.risk == afresh(database, req, at(3 + i))
        assert kept is not None and kept.risk["new_geo"] and kept.risk["new_payee"]
        await first.check(asks[2], at(10))  # zed, allowed: his rows now exist, in memory
        again = warmed.kept_assessment(asks[2], at(11))
        assert again is not None and not again.risk["new_geo"] and again.risk["velocity_1h"] == 2
        await second.check(request(user="zed", geo="IT"), at(12))
        await second.fold(at(13))  # another process folded
        await first.check(asks[2], at(14))
        await first.fold(at(15))
        assert not warmed.cache.whole
        assert warmed.kept_assessment(request(user="zed", geo="IT"), at(16)) is None
        with database.connect() as conn:
            r = warmed.assess(conn, request(user="zed", geo="IT"), at(16))
        assert r["velocity_1h"] == 4 and not r["new_geo"]
    finally:
        await first.writer.aclose()
        await second.writer.aclose()


async def test_a_failing_first_fold_fails_the_check_closed_until_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its first check a gateway folds what a predecessor left; until that fold has
    succeeded the signals could read low, so a failed fold fails the check closed (as a store
    that is down does), and the next check tries the fold again."""
    from clearance.store.errors import StoreUnavailable

    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    gateway = Gateway.open(policy, database_url=f"sqlite:///{tmp_path}/f.db")
    failures: list[BaseException] = [RuntimeError("a bug"), StoreUnavailable("down")]
    real = gateway.fold_risk

    async def fold() -> int | None:
        if failures:
            raise failures.pop(0)
        return await real()

    monkeypatch.setattr(gateway, "fold_risk", fold)
    req = Request("pay", {"amount": 1}, {"user": "erin"}, {})
    try:
        with pytest.raises(StoreUnavailable, match="risk history could not be brought up"):
            await gateway.check(req)  # a bug in the fold: not answered
        assert gateway.risk is not None and gateway.risk.journal.never_folded
        with pytest.raises(StoreUnavailable):
            await gateway.check(req)
        assert (await gateway.check(req)).decision.effect.value == "allow"
        assert gateway.risk is not None and not gateway.risk.journal.never_folded
    finally:
        await gateway.aclose()


async def test_two_folds_of_one_process_at_once_keep_its_rows(database: Database) -> None:
    """Two folds of the same process in flight together (a background one and `risk show`'s)
    are not taken for another process's: the rows it keeps stay, and nothing counts twice."""
    import asyncio

    p = Process(database, "p")
    req = request(amount=5, geo="US")
    try:
        await p.fold(at(0))  # the marks as this process knows them
        for i in range(3):
            await p.check(req, at(i))
        kept = len(p.engine.cache)
        assert kept > 0
        counted = await asyncio.gather(p.fold(at(4)), p.fold(at(4)))
        assert sorted(counted) == [0, 3]
        assert len(p.engine.cache) >= kept  # not dropped as stale
        assert p.assess(req, at(5))["velocity_1m"] == 4
    finally:
        await p.writer.aclose()


async def test_kill_9_of_a_server_loses_no_risk_count(tmp_path: Path) -> None:
    """A real `clearance serve` answers three checks and is killed with SIGKILL before its
    background fold; the restarted server still counts them: the fourth in an hour is
    denied by the velocity rule, and each is counted once."""
    import httpx

    from ..fixtures import make_keys
    from ..serverproc import ServerProcess

    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    url = f"sqlite:///{tmp_path}/k.db"
    setup = Gateway.open(policy, database_url=url)
    keys = make_keys(setup)
    await setup.aclose()
    server = ServerProcess(policy, url, tmp_path / "server.log")
    body = {"action": "pay", "params": {"amount": 1}, "actor": {"user": "dana"}}
    headers = {"authorization": f"Bearer {keys.agent}"}
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(3):
                answer = await http.post("/v1/checks", json=body, headers=headers)
                assert answer.json()["effect"] == "allow", answer.text
        server.kill()
        server.start()
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.post("/v1/checks", json=body, headers=headers)
            assert answer.json()["effect"] == "deny", answer.text
    finally:
        server.stop()
    later = Gateway.open(policy, database_url=url)
    try:
        await later.fold_risk()  # whatever the last server left unfolded
        with later.db.connect() as conn:
            risk = later.risk.assess(conn, Request("pay", {}, {"user": "dana"}, {}), later.clock())  # type: ignore[union-attr]
        assert risk["velocity_1h"] == 5  # four checks stored, once each, and this one
    finally:
        await later.aclose()


async def test_known_people_and_payees_need_no_read_once_kept_whole(database: Database) -> None:
    """After a fold every payee-bank row is kept, and a person read once is kept whole: their
    payment to a payee never seen, from a new device, reads nothing from the store, and still
    finds it new; a bank-details change made meanwhile still matches the pattern."""
    p = Process(database, "p")

    def change(payee: str) -> Request:
        return request(
            "procurement.change_supplier_terms",
            user="mallory",
            supplier_id=payee,
            changes=["bank_details"],
        )

    try:
        await p.check(request(amount=10, payee="s1", geo="US", device="d1"), at(0))
        await p.fold(at(1))  # (a process's first fold keeps nothing it read before)
        # carol's rows are kept (the fold wrote them); a new device of hers is read, with all
        # her countries, devices and payees: she is kept whole from then on
        await p.check(request(amount=10, payee="s1", geo="US", device="d2"), at(2))
        await p.check(change("s7"), at(3))
        await p.fold(at(4))
        cache = p.engine.cache
        assert cache.covers_kind("payee_bank")
        misses = cache.misses
        r = await p.check(request(amount=10, payee="s2", geo="US", device="d9"), at(5))
        assert r["new_payee"] and r["new_device"] and not r["new_geo"]
        r = await p.check(request(amount=10, payee="s7", geo="US", device="d9"), at(6))
        assert r["patterns"] == ["payee_bank_change"] and not r["new_device"]
        await p.check(change("s8"), at(7))
        r = await p.check(request(amount=10, payee="s8", geo="US", device="d9"), at(8))
        assert r["patterns"] == ["payee_bank_change"]  # noted at once, before any fold
        assert cache.misses == misses  # every row was kept, or known absent
    finally:
        await p.writer.aclose()


async def test_a_long_backlog_is_folded_in_bounded_units(database: Database) -> None:
    """A fold takes at most `limit` checks, shared among the chains, so that no fold holds the
    writer for long; `more` says there is a tail, the next folds take it, each check is
    counted once, and the checks stay counted in between."""
    req = await crashed_process(database, 3)
    p = Process(database, "p")
    try:
        for i in range(3, 8):
            await p.check(req, at(i))

        async def fold_two() -> tuple[int, bool]:
            result = await p.writer.run(lambda tx: p.engine.journal.fold(tx, at(9), limit=2))
            p.engine.folded(result)
            return result.entries, result.more

        assert await fold_two() == (2, True)  # one of each chain: two, shared
        assert marks(database) == {"crashed": 1, "p": 1}
        assert p.assess(req, at(9))["velocity_1m"] == 5 + 1 + 1  # all of p's, 1 of crashed's
        assert await fold_two() == (2, True)
        assert await fold_two() == (2, True)  # crashed's are all in
        assert await fold_two() == (2, False)  # the one chain left takes the whole share
        assert p.engine.journal.pending == 0
        assert p.assess(req, at(9))["velocity_1m"] == 8 + 1
    finally:
        await p.writer.aclose()
    fresh = Process(database, "fresh")
    try:
        assert fresh.assess(req, at(9))["velocity_1m"] == 8 + 1
    finally:
        await fresh.writer.aclose()


async def test_the_gateway_folds_a_backlog_unit_by_unit(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Gateway.fold_risk` runs bounded folds one after another until none is left: a
    restarted gateway with a crashed one's backlog folds all of it before its first check."""
    import clearance.risk.journal as journal

    monkeypatch.setattr(journal, "FOLD_INTERVAL_S", 3600.0)  # no fold by time
    policy, clock, req = await crashed_gateway(tmp_path, db_url)
    monkeypatch.setattr(journal, "FOLD_LIMIT", 1)
    units: list[int] = []
    real_fold = journal.Journal.fold

    def counting_fold(self: journal.Journal, tx: WriteTx, now: datetime, **kw: Any) -> Any:
        result = real_fold(self, tx, now, **kw)
        units.append(result.entries)
        return result

    monkeypatch.setattr(journal.Journal, "fold", counting_fold)
    second = Gateway.open(policy, database_url=db_url, clock=clock)
    try:
        assert (await second.check(req)).decision.effect.value == "deny"  # the 4th in an hour
        assert units == [1, 1, 1]  # three units of one check each
    finally:
        await second.aclose()


async def test_a_check_whose_rows_are_kept_takes_no_connection(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway assesses from the rows kept in memory when they are all there, and only
    otherwise takes a connection to read the rest (on PostgreSQL even an unused one costs a
    pool checkout); the cache's figures count each row once either way."""
    import clearance.gateway as gateway_module

    reads: list[object] = []
    real_read = gateway_module.read

    async def counting_read(db: Database, fn: Any) -> Any:
        reads.append(fn)
        return await real_read(db, fn)

    monkeypatch.setattr(gateway_module, "read", counting_read)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    gateway = Gateway.open(policy, database_url=db_url, clock=FrozenClock(T0))
    req = Request("pay", {"amount": 1}, {"user": "dana", "agent": "bot"}, {})
    try:
        assert gateway.risk is not None
        cache = gateway.risk.cache
        rows = 3  # dana's counters, the bot's, the bot's denials
        await gateway.check(req)
        first = len(reads)
        assert first >= 1  # dana's rows were read
        assert cache.hits + cache.misses == rows and cache.misses > 0  # each counted once
        assert (await gateway.check(req)).decision.effect.value == "allow"
        assert len(reads) == first  # all kept: no connection taken
        assert cache.hits + cache.misses == 2 * rows
    finally:
        await gateway.aclose()


def expiry(db: Database, key: tuple[str, str, str]) -> datetime:
    with db.connect() as conn:
        c = risk_state.c
        found = conn.execute(
            sa.select(c.expires_at).where(c.kind == key[0], c.subject == key[1], c.item == key[2])
        ).scalar_one()
    assert isinstance(found, datetime)
    return found


async def test_a_fold_writes_the_rows_kept_without_reading_them(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows kept current by this process's checks are folded from memory: counters written
    as kept, a known country, device or payee seen again within the hour not even written, a
    country seen again after it written with its new time; nothing is read. What is stored is
    what a process reading it afresh finds, and what the folding process sees itself."""
    import clearance.risk.journal as journal

    reads: list[list[tuple[str, str, str]]] = []
    real = journal.select_rows

    def counting(conn: Any, keys: list[tuple[str, str, str]]) -> Any:
        reads.append(list(keys))
        return real(conn, keys)

    monkeypatch.setattr(journal, "select_rows", counting)
    p = Process(database, "p")
    req = request(amount=20, geo="US", device="d1", payee="p1")
    counter = ("actor_action", "carol", "payments.transfer")
    geo = ("seen_geo", "carol", "US")
    device = ("seen_device", "carol", "d1")
    try:
        await p.check(req, at(0))
        await p.fold(at(1))  # a process's first fold reads: it knows no marks yet
        assert stored(database)[counter] == 1
        reads.clear()
        await p.check(req, at(2))
        await p.check(req, at(3))
        await p.fold(at(4))
        assert reads == [[]]  # every row the checks touched was kept
        versions = stored(database)
        assert versions[counter] == 2 and versions[geo] == 1 and versions[device] == 1
        # an hour on, the country and device are seen again: their times move on
        await p.check(req, at(3 * 3600))
        await p.fold(at(3 * 3600 + 1))
        assert reads == [[], []]
        versions = stored(database)
        assert versions[counter] == 3 and versions[geo] == 2 and versions[device] == 2
        retention = 90 * 86400
        expected = at(3 * 3600 + retention)  # rounded up to the hour, as every write is
        assert abs((expiry(database, geo) - expected).total_seconds()) < 3600
        assert expiry(database, geo) >= expected
        mine = p.assess(req, at(3 * 3600 + 2))
    finally:
        await p.writer.aclose()
    theirs = afresh(database, req, at(3 * 3600 + 2))
    assert theirs == mine
    assert theirs["velocity_24h"] == 5 and theirs["amount_24h"] == 100
    assert not (theirs["new_geo"] or theirs["new_device"] or theirs["new_payee"])


async def test_a_kept_row_written_through_meanwhile_is_read_and_redone(
    database: Database,
) -> None:
    """A row kept by a process and changed since by another that writes through fails the
    fold's compare-and-set: the fold reads it again and counts its checks on top, losing
    neither the other process's count nor its own."""
    p = Process(database, "p")
    req = request(amount=20, geo="US")
    counter = ("actor_action", "carol", "payments.transfer")
    try:
        await p.check(req, at(0))
        await p.fold(at(1))
        await p.check(req, at(2))
        with database.connect() as conn, conn.begin():
            RiskEngine().record(conn, req, "allow", at(3))  # version 1 → 2, behind p's back
        assert stored(database)[counter] == 2
        assert await p.fold(at(4)) == 1
        assert stored(database)[counter] == 3
    finally:
        await p.writer.aclose()
    r = afresh(database, req, at(5))
    assert r["velocity_1m"] == 4 and r["amount_24h"] == 80  # 3 counted, and this one


async def test_a_fold_of_part_of_the_checks_does_not_take_the_rows_kept(
    database: Database,
) -> None:
    """A fold that takes only the first of this process's checks (a bounded unit) cannot
    write a kept row that counts later ones too: it reads and counts what it takes, and the
    next units count the rest, each once."""
    p = Process(database, "p")
    req = request(amount=20, geo="US")
    try:
        await p.check(req, at(0))
        await p.fold(at(1))
        for t in (2, 3, 4):
            await p.check(req, at(t))
        units = 0
        while True:
            result = await p.writer.run(lambda tx: p.engine.journal.fold(tx, at(5), limit=1))
            p.engine.folded(result)
            units += 1
            if not result.more:
                break
        assert units == 3
        mine = p.assess(req, at(6))
        assert mine["velocity_1m"] == 5
    finally:
        await p.writer.aclose()
    assert afresh(database, req, at(6)) == mine


CONCURRENT_POLICY = """
version: 1
policies:
  default: allow
risk: {}
"""


async def test_concurrent_checks_with_background_folds_count_each_check_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waves of concurrent checks through the gateway, a background fold starting whenever
    one may (on PostgreSQL it runs in the writer's thread while the event loop notes checks):
    the rows stored, and the gateway's own view, count every check exactly once."""
    import asyncio
    import random

    import clearance.risk.journal as journal

    monkeypatch.setattr(journal, "FOLD_INTERVAL_S", 0.0)  # fold as often as it can
    policy = tmp_path / "p.yaml"
    policy.write_text(CONCURRENT_POLICY)
    clock = FrozenClock(T0)
    gateway = Gateway.open(policy, database_url=db_url, clock=clock)
    rng = random.Random(7)
    people = ["ann", "bo", "cy"]
    made: dict[str, list[float]] = {p: [] for p in people}

    def payment(person: str) -> Request:
        amount = float(rng.randrange(1, 100))
        made[person].append(amount)
        context = {"geo": rng.choice(["US", "FR"]), "device_id": f"d{rng.randrange(3)}"}
        params = {"amount": amount, "payee_id": f"p{rng.randrange(4)}"}
        return Request("pay", params, {"user": person, "agent": "bot"}, context)

    try:
        for _ in range(15):
            wave = [payment(rng.choice(people)) for _ in range(8)]
            await asyncio.gather(*(gateway.check(r) for r in wave))
            clock.advance(seconds=1)
        risk = gateway.risk
        assert risk is not None
        assert risk.journal.folded_entries > 0  # folds ran while checks were being made
        await gateway.fold_risk()
        assert risk.journal.pending == 0
        with gateway.db.connect() as conn:
            own = {p: risk.assessment(conn, probe(p), clock()).risk for p in people}
    finally:
        await gateway.aclose()
    for person in people:
        stored_view = afresh(gateway.db, probe(person), clock())
        assert stored_view["velocity_24h"] == len(made[person]) + 1
        assert stored_view["amount_24h"] == pytest.approx(sum(made[person]) + 1)
        assert own[person]["velocity_24h"] == stored_view["velocity_24h"]
        assert own[person]["amount_24h"] == pytest.approx(stored_view["amount_24h"])


def probe(person: str) -> Request:
    """A payment of 1 by `person`, to assess (never made)."""
    return Request("pay", {"amount": 1}, {"user": person, "agent": "bot"}, {})


async def test_a_check_noted_during_a_fold_is_not_counted_into_what_it_writes(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a fold runs in the writer's thread while the event loop notes checks
    committed before it. A check beyond the fold's range noted in the middle of it counts
    itself into the row kept; the fold writes the row as it took it, so that check is stored
    once, by the next fold, and counted once in memory."""
    import clearance.risk.journal as journal

    p = Process(database, "p")
    req = request(amount=10, geo="US")
    try:
        await p.check(req, at(0))
        await p.fold(at(1))
        await p.check(req, at(2))
        with database.connect() as conn:  # a third check, committed; its note comes late
            late = p.engine.assessment(conn, req, at(3))
        data = {"risk": {"score": 0, "f": p.engine.journal_entry(late)}}
        entry = await p.writer.append(
            AuditDraft(kind=Kind.CHECK, ts=at(3), action=req.action, effect="allow", data=data)
        )
        real = journal.select_rows
        noted: list[int] = []

        def noting_meanwhile(conn: Any, keys: Any) -> Any:
            if not noted:  # the event loop, meanwhile
                p.engine.note(entry.seq, late, "allow", at(3))
                noted.append(entry.seq)
            return real(conn, keys)

        monkeypatch.setattr(journal, "select_rows", noting_meanwhile)
        # only the second check (the first was folded); the third is beyond this fold
        result = await p.writer.run(lambda tx: p.engine.journal.fold(tx, at(4), limit=1))
        monkeypatch.setattr(journal, "select_rows", real)
        p.engine.folded(result)
        assert noted and result.entries == 1 and result.more
        assert await p.fold(at(5)) == 1
        mine = p.assess(req, at(6))
        assert mine["velocity_1m"] == 4
    finally:
        await p.writer.aclose()
    assert afresh(database, req, at(6)) == mine
