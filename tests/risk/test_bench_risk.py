"""Smoke tests for the risk benchmark (`bench/bench_risk.py`) at tiny sizes.

They prove what it measures is sound — the bulk-inserted summaries are exactly what recording
the same checks through `RiskEngine` produces, and every variant runs — never a figure.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bench.bench_risk import (
    NOW,
    QUICK,
    Bench,
    Population,
    bulk_insert,
    measure,
    measure_fold_paths,
    prepare,
    simulate,
)

from bench import bench_risk
from clearance.policy import Engine, load_policy
from clearance.risk import RiskEngine, store
from clearance.risk.store import describe
from clearance.risk.tables import risk_state
from clearance.store.database import open_database

from ..fixtures import ENTERPRISE

TINY = dataclasses.replace(
    QUICK,
    past=400,
    people=30,
    agents=4,
    payees=50,
    hot_agents=1,
    hot_seconds=120,
    rounds=1,
    per_round=2,
    warmup=16,
    alone=3,
)


def states(url: str) -> dict[tuple[str, str, str], object]:
    db = open_database(url)
    try:
        with db.connect() as conn:
            rows = conn.execute(sa.select(risk_state)).all()
    finally:
        db.dispose()
    return {
        (r.kind, r.subject, r.item): describe(r.kind, r.state)
        for r in rows
        if r.kind in ("actor_action", "agent_action")
    }


def test_the_bulk_summaries_equal_recording_each_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying past checks in memory gives the same counters as recording them one by one."""
    risk = RiskEngine()
    sizes = dataclasses.replace(TINY, hot_agents=0)
    bulk_url = f"sqlite:///{tmp_path}/bulk.db"
    db = open_database(bulk_url)
    db.migrate()
    summaries = simulate(Population.make(sizes), risk, sizes.past, NOW)
    assert bulk_insert(db, summaries, risk) > 0
    db.dispose()

    # The same checks, one by one through the engine (same seed: same people, times, denials).
    replay_url = f"sqlite:///{tmp_path}/replay.db"
    db = open_database(replay_url)
    db.migrate()
    recorded: list[tuple[Any, float, bool]] = []
    real = bench_risk._count

    def spy(out: Any, facts: Any, t: float, refused: bool, keep: int, burst: int) -> None:
        recorded.append((facts, t, refused))
        real(out, facts, t, refused, keep, burst)

    monkeypatch.setattr(bench_risk, "_count", spy)
    simulate(Population.make(sizes), risk, sizes.past, NOW)
    with db.begin() as conn:
        for facts, t, refused in recorded:
            when = NOW - timedelta(seconds=NOW.timestamp() - t)
            store.record(conn, facts, "deny" if refused else "allow", when, risk.settings)
    db.dispose()
    assert states(bulk_url) == states(replay_url)


async def test_every_variant_runs_and_checks_are_decided(tmp_path: Path) -> None:
    """Each measured variant completes its checks; the decisions are real ones; the checks
    with risk carry journals that a fold counts (the second process's too)."""
    risk = RiskEngine()
    db, pop, figures = prepare(f"sqlite:///{tmp_path}/b.db", TINY, risk, sqlite_tuning=True)
    assert figures["rows"] > 0
    bench = Bench(db, pop, risk, Engine(load_policy(ENTERPRISE)))
    try:
        results = await measure(bench, TINY)
        folded = sum(f[0] for f in bench.folds) + await bench.fold(risk)
        assert risk.journal.pending == 0 and bench.uncached.journal.pending > 0
        with db.connect() as conn:  # the second process sees that its checks were folded
            bench.uncached.assessment(conn, bench.next_request(1), bench.now())
        assert bench.uncached.journal.pending == 0
    finally:
        await bench.aclose()
        db.dispose()
    assert folded >= 4 * TINY.rounds * TINY.per_round
    assert {"without", "with", "with/no-cache", "with/hot", "gateway", "gateway+risk"} <= set(
        results
    )
    assert all(r.n == TINY.rounds * TINY.per_round for r in results.values())
    assert set(bench.effects) <= {"allow", "approve", "deny", "block"}
    assert sum(bench.effects.values()) > 0


def test_people_below_two_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`--people` splits the checks between two halves of the population: it needs two."""
    with pytest.raises(SystemExit) as stopped:
        bench_risk.main(["--people=1"])
    assert stopped.value.code == 2
    assert "--people must be at least 2" in capsys.readouterr().err


async def test_both_fold_paths_run_and_the_journal_is_left_as_it_was(tmp_path: Path) -> None:
    """The fold comparison folds every check it makes both ways, times each, and puts the
    journal's own way back."""
    from clearance.risk.journal import Journal

    real = Journal._kept_for_fold
    risk = RiskEngine()
    db, pop, _ = prepare(f"sqlite:///{tmp_path}/f.db", TINY, risk)
    bench = Bench(db, pop, risk, Engine(load_policy(ENTERPRISE)))
    try:
        await bench.fold(risk)
        paths = await measure_fold_paths(bench, 2, checks=20)
        assert risk.journal.pending == 0
    finally:
        await bench.aclose()
        db.dispose()
    assert set(paths) == {"kept", "read"} and all(v > 0 for v in paths.values())
    assert Journal._kept_for_fold is real
