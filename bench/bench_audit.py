"""Audit benchmarks: append latency and throughput, and verification speed.

    .venv/bin/python bench/bench_audit.py [--entries 1000000] [--pg postgresql://…]

Prints:
- lone-caller `AuditWriter.append` latency on SQLite (median and p99, µs);
- per-entry cost with 64 concurrent callers on SQLite (µs; group commit);
- `verify_store` over 1,000,000 entries on SQLite (seconds, read included);
- with --pg, the first two on PostgreSQL as well.

Figures are medians over several rounds, since a shared machine is noisy. Nothing here is
asserted: the targets live in docs/DESIGN.md and are compared by people.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


async def _concurrent(writer: AuditWriter, callers: int, each: int) -> float:
    async def caller(k: int) -> None:
        for i in range(each):
            await writer.append(_draft(k * each + i))

    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    return (time.perf_counter() - start) / (callers * each) * 1e6


async def bench_append(db: Database, label: str, lone_n: int, rounds: int) -> None:
    writer = AuditWriter(db, chain_id=f"bench-{label}")
    await _lone(writer, 300)  # warm up: connection, caches, the WAL
    medians: list[float] = []
    p99s: list[float] = []
    for _ in range(rounds):
        gc.collect()
        samples = sorted(await _lone(writer, lone_n))
        medians.append(statistics.median(samples))
        p99s.append(samples[int(len(samples) * 0.99)])
    print(
        f"{label:10s} lone-caller append:      median {statistics.median(medians):7.1f} µs   "
        f"p99 {statistics.median(p99s):7.1f} µs   (best round median {min(medians):.1f} µs; "
        f"{rounds} rounds of {lone_n})"
    )
    per_entry = [await _concurrent(writer, 64, 100) for _ in range(rounds)]
    print(
        f"{label:10s} 64 concurrent callers:   {statistics.median(per_entry):7.1f} µs per entry "
        f"(best {min(per_entry):.1f} µs; {rounds} rounds of 64×100)"
    )
    await writer.aclose()


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
            conn.executemany(f"INSERT INTO audit_entries VALUES ({','.join('?' * 16)})", chunk)
            chunk.clear()
    if chunk:
        conn.executemany(f"INSERT INTO audit_entries VALUES ({','.join('?' * 16)})", chunk)
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
    start = time.perf_counter()
    report = verify_store(db)
    took = time.perf_counter() - start
    db.dispose()
    print(
        f"sqlite     verify_store:            {took:7.2f} s for {report.entries_checked:,} "
        f"entries ({took / max(report.entries_checked, 1) * 1e6:.1f} µs each; "
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
