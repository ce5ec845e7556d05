"""What a process reads through its kept rows equals a replay of every check, whatever happens.

The row cache keeps rows counted on in place by each check, says rows are absent from complete
sets (every row of a person's countries, devices and payees; every payee-bank row), and
drops them on eviction, on another process's fold and on folds in flight at once. Any slip
there shows as a signal that differs from the one a plain replay of the same checks gives:
a payment after a bank-details change that does not match the pattern, a device that looks
new twice, a velocity that reads low. So every check of a random run is compared, whole risk
map against whole risk map, with the replay.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from typing import Any

import pytest

from clearance.policy import Request
from clearance.risk.facts import facts_of
from clearance.risk.settings import RiskSettings
from clearance.risk.signals import compute
from clearance.risk.store import Key, history_of, keys_of, updaters
from clearance.store.database import Database

from .helpers import request
from .test_journal import Process, at

CHANGE = "procurement.change_supplier_terms"
#: Eight people, so that none makes more than the 50 amounts each person's ring keeps: the two
#: processes' checks are folded chain by chain, not in time order, and which 50 are kept
#: would depend on that order.
PEOPLE = ("ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal")
PAYEES = ("s0", "s1", "s2", "s3", "s4", "s5")


def random_request(rng: random.Random) -> Request:
    user = rng.choice(PEOPLE)
    agent = rng.choice(("bot-1", "bot-2"))
    if rng.random() < 0.15:  # someone changes a supplier's bank details
        return request(
            CHANGE, user=user, agent=agent, supplier_id=rng.choice(PAYEES), changes=["bank_details"]
        )
    return request(
        amount=round(rng.choice((50, 60, 70, 5000)) * rng.uniform(0.9, 1.1), 2),
        payee=rng.choice(PAYEES),
        user=user,
        agent=agent,
        geo=rng.choice(("US", "US", "GB", "FR")),
        device=rng.choice(("d0", "d1", "d2")),
    )


class Replay:
    """Every check so far, counted in time order into plain rows (no store, no cache)."""

    def __init__(self, settings: RiskSettings) -> None:
        self.settings = settings
        self.rows: dict[Key, Any] = {}

    def risk(self, req: Request, now: datetime) -> dict[str, Any]:
        facts = facts_of(req, self.settings)
        rows = {k: (0, v) for k, v in self.rows.items()}
        return compute(facts, history_of(keys_of(facts), rows), now, self.settings, {})

    def count(self, req: Request, now: datetime, effect: str) -> None:
        facts = facts_of(req, self.settings)
        ups = updaters(keys_of(facts), facts, effect, now.timestamp(), self.settings)
        for key, update in ups.items():
            changed = update(self.rows.get(key))
            if changed is not None:
                self.rows[key] = changed[0]

    def assert_read_by(self, fresh: Process, now: datetime) -> None:
        """A process with nothing kept reads what the replay says (from the store)."""
        for user in PEOPLE:
            req = request(amount=55.0, payee="s1", user=user, agent="bot-1", geo="US", device="d0")
            assert fresh.assess(req, now) == self.risk(req, now)


EFFECTS = ("allow", "allow", "approve", "deny", "block")


@pytest.mark.parametrize("cache_rows", [4, 12, 64, 1000])
async def test_one_process_reads_what_a_replay_reads(database: Database, cache_rows: int) -> None:
    """One process checks at random times; now and then it folds, another process folds its
    checks (as after a crash, or as a second instance does), or two of its folds run at once.
    Before each check its risk map must equal the replay's (small caches evict constantly)."""
    await one_process_against_a_replay(database, cache_rows)


@pytest.mark.parametrize("cache_rows", [12, 1000])
async def test_partial_folds_read_what_a_replay_reads(
    database: Database, cache_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with folds of at most three checks, as when a backlog takes several writer
    units: each fold leaves checks unfolded, which must go on counting on top of the store."""
    monkeypatch.setattr("clearance.risk.journal.FOLD_LIMIT", 3)
    await one_process_against_a_replay(database, cache_rows)


async def one_process_against_a_replay(database: Database, cache_rows: int) -> None:
    rng = random.Random(cache_rows)
    a = Process(database, "a", cache_rows=cache_rows)
    b = Process(database, "b", cache_rows=cache_rows)  # only folds (a's checks among them)
    replay = Replay(a.engine.settings)
    t = 0.0
    try:
        for step in range(260):
            t += rng.choice((0.5, 2.0, 30.0, 700.0, 4000.0))
            now = at(t)
            roll = rng.random()
            if roll < 0.08:
                await a.fold(now)
            elif roll < 0.16:
                await b.fold(now)
            elif roll < 0.19:
                await asyncio.gather(a.fold(now), a.fold(now))
            else:
                req, effect = random_request(rng), rng.choice(EFFECTS)
                expected = replay.risk(req, now)
                assert await a.check(req, now, effect) == expected, f"step {step}: {req}"
                replay.count(req, now, effect)
        while await a.fold(at(t + 1)):  # until nothing is left (folds may be partial)
            pass
    finally:
        await a.writer.aclose()
        await b.writer.aclose()
    fresh = Process(database, "fresh", cache_rows=cache_rows)
    try:
        replay.assert_read_by(fresh, at(t + 2))
    finally:
        await fresh.writer.aclose()


@pytest.mark.parametrize("cache_rows", [4, 12, 64, 1000])
async def test_two_processes_read_what_a_replay_reads_once_folded(
    database: Database, cache_rows: int
) -> None:
    """Two processes check in turns, at random times; now and then one folds, a third folds
    everyone's checks, or two folds of one process run at once. Before each check by a process
    that has folded since the other last checked (so that it has seen every check), its risk
    map must equal the replay's."""
    rng = random.Random(cache_rows)
    procs = [Process(database, name, cache_rows=cache_rows) for name in ("a", "b")]
    folder = Process(database, "c", cache_rows=cache_rows)  # only folds, everyone's checks
    replay = Replay(procs[0].engine.settings)
    synced = [True, True]  # whether each process has seen every check (folded since)
    t = 0.0
    compared = 0
    who = 0
    try:
        for step in range(400):
            t += rng.choice((0.5, 2.0, 30.0, 700.0, 4000.0))
            now = at(t)
            if rng.random() < 0.1:  # runs of checks by one process, then by the other
                who = 1 - who
            p = procs[who]
            roll = rng.random()
            if roll < 0.12:
                await p.fold(now)
                synced[who] = True
            elif roll < 0.17:
                await folder.fold(now)
            elif roll < 0.20:
                await asyncio.gather(p.fold(now), p.fold(now))
                synced[who] = True
            else:
                req, effect = random_request(rng), rng.choice(EFFECTS)
                expected = replay.risk(req, now)
                got = await p.check(req, now, effect)
                if synced[who]:
                    assert got == expected, f"step {step}, process {who}: {req}"
                    compared += 1
                synced[1 - who] = False  # the other has not seen this one yet
                replay.count(req, now, effect)
        await procs[0].fold(at(t + 1))
    finally:
        for p in (*procs, folder):
            await p.writer.aclose()
    assert compared > 150
    fresh = Process(database, "fresh", cache_rows=cache_rows)
    try:
        replay.assert_read_by(fresh, at(t + 2))
    finally:
        await fresh.writer.aclose()
