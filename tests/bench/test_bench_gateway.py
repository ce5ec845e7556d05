"""Smoke tests for the gateway benchmark (`bench/bench_gateway.py`).

They run the benchmark's builders at tiny sizes against a real `clearance serve` and prove
that what it measures is sound: every timed check is allowed and audited, every round trip
ends approved, bulk-inserted approvals are real approvals the API counts and lists, the load
generators count only successful answers, and the soak makes every kind of call. No figure is
asserted: wall-clock numbers belong in the benchmark's output, never in a test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.bench_gateway import (
    ENTERPRISE,
    BenchKeys,
    Server,
    audit_counts,
    database_url,
    exercise,
    measure_throughput,
    pending_row,
    prepare_database,
    round_trips,
    run_embedded,
    running,
    slope_per_minute,
    soak,
    wrk_path,
    wrk_script,
)
from sqlalchemy import insert

from clearance.approvals import records
from clearance.gateway import Gateway
from clearance.store.schema import approvals

PENDING = 1_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, BenchKeys]]:
    directory = tmp_path_factory.mktemp("bench-gateway")
    keys, _ = prepare_database(directory / "gateway.db", pending=PENDING)
    with running(directory / "gateway.db", directory / "server.log") as server:
        yield server, keys


def test_embedded_checks_are_all_allowed_and_audited(tmp_path: Path) -> None:
    """Every embedded check the benchmark makes is allowed, and each one is in the audit trail."""
    result = run_embedded(tmp_path, 200, warmup=20, callers=8)
    assert result.effects == Counter({"allow": result.checks_made})
    assert result.checks_made == 2 * (20 + 200) + 8 * 25
    assert result.audited_allow == result.checks_made
    timed = (result.check, result.gateway_check, result.evaluate, result.floor)
    assert [stats.n for stats in timed] == [200, 200, 200, 200]
    assert result.concurrent_checks == 200


def test_bulk_rows_read_back_like_insert_approval(tmp_path: Path) -> None:
    """A bulk-inserted pending approval reads back exactly as one written by insert_approval."""
    gateway = Gateway.open(ENTERPRISE, database_url=database_url(tmp_path / "rows.db"))
    try:
        row = pending_row(gateway.engine, random.Random(1), gateway.clock())
        twin = row.stored.replace(dataclasses.replace(row.stored.approval, id="apr_twin"))

        def work(tx: object) -> None:
            conn = tx.conn  # type: ignore[attr-defined]
            records.insert_approval(conn, twin)
            conn.execute(insert(approvals), [records.approval_values(row.stored)])

        gateway.writer.run_sync(work)
        with gateway.db.connect() as conn:
            bulk = records.load(conn, row.stored.approval.id)
            reference = records.load(conn, "apr_twin")
    finally:
        gateway.writer.close()
        gateway.db.dispose()
    assert bulk is not None and reference is not None
    assert bulk.approval.state.value == "pending"
    assert bulk == reference.replace(dataclasses.replace(reference.approval, id=bulk.approval.id))


def test_pending_approvals_are_visible_through_the_api(served: tuple[Server, BenchKeys]) -> None:
    """The 1,000 inserted approvals are counted pending by /metrics and listed to each caller."""
    server, keys = served
    seen = asyncio.run(exercise(server.url, keys, checks=20, list_limit=50))
    assert seen.pending_before == PENDING
    assert seen.check_effects == Counter({"allow": 10, "approve": 10})
    assert seen.listed == {"ivan": 50, "alice": 50, "agent": 50}
    assert seen.wait_states == Counter({"pending": 5, "approved": 3})
    assert seen.pending_after == PENDING + 10 - 3
    assert server.rss_mb() > 0


def test_round_trips_all_end_approved(served: tuple[Server, BenchKeys]) -> None:
    """Each round trip opens an approval, and its parked waiter returns it approved."""
    server, keys = served
    trips = asyncio.run(round_trips(server.url, keys, 20))
    assert trips.check_effects == Counter({"approve": 20})
    assert trips.final_states == Counter({"approved": 20})
    assert len(trips.approve_to_return_ns) == len(trips.check_to_return_ns) == 20
    assert all(
        0 < a < c for a, c in zip(trips.approve_to_return_ns, trips.check_to_return_ns, strict=True)
    )


def _allowed_checks(server: Server) -> int:
    counts = audit_counts(server.db_path)
    assert not {"deny", "block"} & set(counts)
    return counts["allow"]


def test_httpx_load_generator_counts_allowed_checks(
    served: tuple[Server, BenchKeys], tmp_path: Path
) -> None:
    """The fallback load generator gets only 200s, and every check it counted was audited."""
    server, keys = served
    before = _allowed_checks(server)
    result = measure_throughput(
        server, keys.agent, seconds=0.5, warmup=0.2, connections=4, tool="httpx",
        directory=tmp_path,
    )  # fmt: skip
    for load in (result.livez, result.checks):
        assert load.tool == "httpx"
        assert load.requests > 0 and load.status_errors == 0 and load.socket_errors == 0
    assert _allowed_checks(server) - before >= result.checks.requests


@pytest.mark.skipif(wrk_path() is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_wrk_counts_allowed_checks(served: tuple[Server, BenchKeys], tmp_path: Path) -> None:
    """wrk's figures are parsed, its checks all succeed, and every one it counted was audited."""
    server, keys = served
    before = _allowed_checks(server)
    result = measure_throughput(
        server, keys.agent, seconds=1, warmup=0, connections=4, tool="wrk", directory=tmp_path
    )
    for load in (result.livez, result.checks):
        assert load.tool == "wrk"
        assert load.requests > 0 and load.status_errors == 0 and load.socket_errors == 0
        assert 0 < load.p50_ms <= load.p99_ms
    assert _allowed_checks(server) - before >= result.checks.requests


def test_soak_makes_every_kind_of_call(served: tuple[Server, BenchKeys]) -> None:
    """A short soak allows, opens, approves and waits without one error, sampling the RSS."""
    server, keys = served
    result = asyncio.run(soak(server, keys, 2.0, workers=2))
    assert not result.errors
    kinds = {"check (allow)", "check (approval)", "decision (approve)", "wait"}
    assert kinds <= set(result.ops)
    assert result.ops["check (approval)"] == result.ops["wait"]
    assert len(result.samples) >= 2 and all(mb > 0 for _, mb in result.samples)


def test_slope_is_in_units_per_minute() -> None:
    """A series growing 1 MB every 10 s has a slope of 6 MB a minute; a flat one has 0."""
    assert slope_per_minute([(t, 100 + t / 10) for t in range(0, 60, 5)]) == pytest.approx(6)
    assert slope_per_minute([(t, 100.0) for t in range(0, 60, 5)]) == 0
    assert slope_per_minute([(0, 100.0)]) == 0


def test_wrk_script_escapes_the_body_and_headers() -> None:
    """The generated Lua quotes JSON bodies and tokens safely and reports through `done`."""
    script = wrk_script("POST", '{"a":"b\\\\c"}', {"Authorization": "Bearer clr_x_y"})
    assert 'wrk.body = "{\\"a\\":\\"b\\\\\\\\c\\"}"' in script
    assert 'wrk.headers["Authorization"] = "Bearer clr_x_y"' in script
    assert "CLEARANCE_BENCH" in script
