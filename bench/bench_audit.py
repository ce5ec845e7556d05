"""Audit benchmarks: append latency and throughput, and verification speed.

    .venv/bin/python bench/bench_audit.py [--entries 1000000] [--pg postgresql://…]

Prints:
- lone-caller `AuditWriter.append` latency on SQLite (median and p99, µs);
- per-entry cost with 64 concurrent callers on SQLite (µs; group commit);
- `verify_store` over 1,000,000 entries on SQLite (seconds, read included);
- with --pg, the first two on PostgreSQL as well.

Figures are medians over several rounds, since a shared machine is noisy; CPU time is shown
too, as it is what the figures would be on an idle machine (the process gets a whole core).
Nothing here is asserted: the targets live in DESIGN.md and are compared by people.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clearance.audit.chain import GENESIS, encode_draft, hash_with_body
from clearance.audit.entry import AuditDraft
from clearance.audit.export import verify_store
from clearance.audit.writer import AuditWriter
from clearance.store.database import Database, open_database

T0 = datetime(2025, 1, 1, tzinfo=UTC)
_INSERT = "INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _draft(i: int) -> AuditDraft:
    """A typical `check` entry: an allowed transfer."""
    return AuditDraft(
        kind="check",
        ts=T0 + timedelta(microseconds=i),
        actor="carol",
        action="payments.transfer",
        params_hash="sha256:" + "a" * 64,
        effect="allow",
        rule_ids=("payments-small",),
        policy_version="sha256:" + "b" * 64,
        data={"agent": "billing-bot", "decision_id": f"dec_{i:012d}"},
    )


async def _lone(writer: AuditWriter, n: int) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter_ns
    for i in range(n):
        draft = _draft(i)
        start = clock()
        await writer.append(draft)
        samples.append((clock() - start) / 1000)
    return samples


async def _concurrent(writer: AuditWriter, callers: int, each: int) -> tuple[float, float]:
    # Times follow arrival order, as `now` would: entries of one batch share an index page.
    clock = itertools.count(10_000_000)

    async def caller() -> None:
        for _ in range(each):
            await writer.append(_draft(next(clock)))

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    n = callers * each
    return (time.perf_counter() - start) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def bench_append(db: Database, label: str, lone_n: int, rounds: int) -> None:
    writer = AuditWriter(db, chain_id=f"bench-{label}")
    await _lone(writer, 300)  # warm up: connection, caches, the WAL
    medians: list[float] = []
    p99s: list[float] = []
    cpu = 0.0
    for _ in range(rounds):
        gc.collect()
        cpu -= time.process_time()
        samples = sorted(await _lone(writer, lone_n))
        cpu += time.process_time()
        medians.append(statistics.median(samples))
        p99s.append(samples[int(len(samples) * 0.99)])
    print(
        f"{label:10s} lone-caller append:      median {statistics.median(medians):7.1f} µs   "
        f"p99 {statistics.median(p99s):7.1f} µs   (best round median {min(medians):.1f} µs; "
        f"CPU {cpu / (rounds * lone_n) * 1e6:.1f} µs an append; {rounds} rounds of {lone_n})"
    )
    runs = [await _concurrent(writer, 64, 100) for _ in range(rounds)]
    per_entry = [wall for wall, _ in runs]
    print(
        f"{label:10s} 64 concurrent callers:   {statistics.median(per_entry):7.1f} µs per entry "
        f"(best {min(per_entry):.1f} µs; CPU {statistics.median(c for _, c in runs):.1f} µs "
        f"per entry; {rounds} rounds of 64×100)"
    )
    await writer.aclose()


def bench_floor(path: Path, n: int, rounds: int) -> None:
    """The same transaction as a lone append (lock, read head, insert, update head, commit)
    on a bare sqlite3 connection: the floor under the writer's figure on this machine."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "INSERT INTO audit_heads VALUES ('floor', 0, ?, '2025-01-01 00:00:00.000000')", (GENESIS,)
    )
    enc = encode_draft(_draft(0))
    row = ["floor", 0, "2025-01-01 00:00:00.000000", "check", "carol", None, None,
           "payments.transfer", "sha256:" + "a" * 64, "allow", enc.rule_ids_json,
           "sha256:" + "b" * 64, None, enc.data_json, GENESIS, GENESIS]  # fmt: skip
    medians: list[float] = []
    seq = 0
    for r in range(rounds + 1):
        samples: list[float] = []
        for _ in range(n):
            seq += 1
            start = time.perf_counter_ns()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SELECT seq, hash FROM audit_heads WHERE chain_id = 'floor'").fetchone()
            row[1] = seq
            conn.execute(_INSERT, row)
            conn.execute(
                "UPDATE audit_heads SET seq = ?, hash = ?, updated_at = ? WHERE chain_id = ?",
                (seq, GENESIS, row[2], "floor"),
            )
            conn.commit()
            samples.append((time.perf_counter_ns() - start) / 1000)
        if r:  # the first round warms up
            medians.append(statistics.median(samples))
    conn.close()
    print(
        f"{'sqlite':10s} bare sqlite3, same txn: median {statistics.median(medians):7.1f} µs   "
        "(reference: the database's share of a lone append)"
    )


def fill_sqlite(path: Path, n: int, chain_id: str = "main") -> float:
    """Insert `n` chained entries with real hashes straight through sqlite3; returns seconds."""
    start = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    prev = GENESIS
    chunk: list[tuple[object, ...]] = []
    conn.execute("BEGIN")
    for seq in range(1, n + 1):
        d = _draft(seq)
        enc = encode_draft(d)
        h = hash_with_body(prev, chain_id, seq, enc.body)
        chunk.append(
            (
                chain_id, seq, enc.ts[:10] + " " + enc.ts[11:26], d.kind, d.actor, d.approver,
                d.channel, d.action, d.params_hash, d.effect, enc.rule_ids_json,
                d.policy_version, d.approval_id, enc.data_json, prev, h,
            )
        )  # fmt: skip
        prev = h
        if len(chunk) == 50_000:
            conn.executemany(_INSERT, chunk)
            chunk.clear()
    if chunk:
        conn.executemany(_INSERT, chunk)
    conn.execute(
        "INSERT INTO audit_heads (chain_id, seq, hash, updated_at) VALUES (?, ?, ?, ?)",
        (chain_id, n, prev, "2025-01-01 00:00:00.000000"),
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - start


def bench_verify(directory: Path, n: int) -> None:
    db = open_database(f"sqlite:///{directory / 'verify.db'}")
    db.migrate()
    db.dispose()
    filled = fill_sqlite(directory / "verify.db", n)
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    report = verify_store(db)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    db.dispose()
    print(
        f"sqlite     verify_store:            {took:7.2f} s for {report.entries_checked:,} "
        f"entries ({took / max(report.entries_checked, 1) * 1e6:.1f} µs each; CPU {cpu:.2f} s; "
        f"{'OK' if report.ok else 'FAILED'}; generated in {filled:.1f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries to verify")
    parser.add_argument("--lone", type=int, default=3000, help="appends per latency round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg", help="also measure on this PostgreSQL database URL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clearance-bench-") as tmp:
        directory = Path(tmp)
        db = open_database(f"sqlite:///{directory / 'append.db'}")
        db.migrate()

        async def run() -> None:
            await bench_append(db, "sqlite", args.lone, args.rounds)
            await db.aclose()

        asyncio.run(run())
        bench_floor(directory / "append.db", args.lone, args.rounds)
        if args.pg:
            pg = open_database(args.pg)
            pg.migrate()

            async def run_pg() -> None:
                await bench_append(pg, "postgresql", max(args.lone // 10, 100), args.rounds)
                await pg.aclose()

            asyncio.run(run_pg())
        bench_verify(directory, args.entries)


if __name__ == "__main__":
    main()
