"""Risk signals benchmark: what the signals add to a check, with 1,000,000 past checks stored.

1. Past checks — 1,000,000 checks (200,000 with `--quick`) spread over the 30 days before
   "now", by 20,000 people through 200 agents over 10 actions (a heavy-tailed mix: a few
   people make most requests), from their home country (2% elsewhere), on one to three
   devices, paying mostly their usual payees out of 50,000, 3% denied. They are replayed in
   memory through the same counters the store keeps (`clearance.risk.activity`) and the
   resulting summaries bulk-inserted into `risk_state` (the store holds summaries, not one
   row per check; a smoke test proves the two give the same rows). Three agents have also
   been busy every second of the last day, so the heaviest rows are there too.
2. Checks — one sequential caller on the event loop, `examples/enterprise/clearance.yaml`,
   a SQLite file (WAL) and the audit writer (group commit), as `Gateway.check` does it:
   transfers under $500 by people drawn from the same population. Variants, interleaved in
   rounds so that machine noise hits them alike, after a warm-up of every variant, the row
   cache filled as `clearance serve` fills it at start (`RiskEngine.warm`: the most recently
   updated rows) and 10,000 checks (3,000 with `--quick`) of `with`, so that it holds what a
   server that has run a while would (the hit rate is printed); the audit entry keeps what
   `Gateway.check` keeps of the risk map (score, reasons, patterns, the journal):
   - `without`         evaluate (risk = the neutral default) + `writer.append(entry)`;
   - `without/run`     the same entry through `writer.run` (a unit: a SAVEPOINT), for scale;
   - `with`            what `Gateway.check` does: `risk.assessment` on a reader connection
                       (one indexed read, none when the rows are kept in memory) + evaluate +
                       `writer.append(entry with its risk journal)` + `risk.note`. A fold that
                       is due (a second since the last, or 5,000 checks) runs between two timed
                       checks, as the gateway runs it in the background, and is timed apart:
                       each check's share of it is added to the mean in the target line;
   - `with/no-cache`   `with` by a second process without a row cache (its own audit chain,
                       folded by the first; other people, so the two never share rows);
   - `with/hot`        `with`, for the busy agents (their rows are the largest);
   - `gateway`         the product's whole check, `Gateway.check`, on the same policy;
   - `gateway+risk`    `Gateway.check` with a `risk:` section (default settings), sharing
                       `with`'s engine and writer; the folds it starts itself in the
                       background are waited for between two timed checks, timed apart.
   Wall-clock median, mean and p99 µs a check, and the process's CPU time (all threads); the
   target is `with` < 2 × `without` (the issue: "a check with risk signals stays under 2×
   the cost of one without"); the same ratio for the whole `Gateway.check` is printed beside
   it. Also `assess` alone, and what the folds cost per check folded.

Run: `.venv/bin/python -m bench risk` (about 50 s here) or `… risk --quick`. Flags with a
value take `=`: `--past=N`; `--people=N` (20,000 by default; 500 keep every row in memory and
in the CPU's caches, to see what the size of the working set costs); `--fold-paths=N` also
times a fold that takes the rows kept current from memory against one that reads every row
(the journal before 2026-12-07), in N alternating rounds;
`--cache-rows=N` sizes the row cache (default: the `risk.cache_rows` setting, 100,000; with
400000 it holds the whole store, which the server then knows from its start);
`--database-url=postgresql://…` runs everything against PostgreSQL (an empty or migrated
database); `--sqlite-tuning` adds the proposed page cache and mmap pragmas. Nothing is
asserted; `tests/risk/test_bench_risk.py` runs the builders at tiny sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, func, insert, select

from clearance.audit.entry import AuditDraft, Kind
from clearance.audit.writer import AuditWriter
from clearance.canonical import params_hash
from clearance.gateway import Gateway
from clearance.policy import Engine, Request, load_policy
from clearance.policy.load import load_policy_texts
from clearance.risk import RiskEngine
from clearance.risk.activity import EPOCH, Activity
from clearance.risk.journal import Journal
from clearance.risk.store import (
    ACTOR_ACTION,
    AGENT_ACTION,
    AGENT_DENIALS,
    PAYEE_BANK,
    SEEN_DEVICE,
    SEEN_GEO,
    SEEN_PAYEE,
    _time_bytes,
    _times_encode,
)
from clearance.risk.tables import risk_state
from clearance.store.database import Database, open_database

ROOT = Path(__file__).resolve().parents[1]
ENTERPRISE = ROOT / "examples" / "enterprise" / "clearance.yaml"
SEED = 20_261_125
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # a Tuesday afternoon
SPAN_S = 30 * 86400
TARGET_RATIO = 2.0
SQLITE_CACHE_KB = 65536
SQLITE_MMAP_BYTES = 256 * 1024 * 1024

ACTIONS: tuple[tuple[str, float], ...] = (
    ("payments.transfer", 0.30),
    ("data.read", 0.25),
    ("comms.send", 0.15),
    ("procurement.purchase_order", 0.10),
    ("data.export", 0.06),
    ("data.write", 0.05),
    ("accounts.close", 0.03),
    ("procurement.add_vendor", 0.03),
    ("accounts.change_owner", 0.02),
    ("procurement.change_supplier_terms", 0.01),
)
PAYING = frozenset({"payments.transfer", "procurement.purchase_order"})
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "IE", "ES", "IT", "CA", "MX", "BR", "IN", "JP", "AU")


@dataclass(frozen=True, slots=True)
class Sizes:
    past: int = 1_000_000
    people: int = 20_000
    agents: int = 200
    payees: int = 50_000
    hot_agents: int = 3
    hot_seconds: int = 86_400  # the busy agents' last day, one request a second
    rounds: int = 20
    per_round: int = 150
    warmup: int = 300
    warm_cache: int = 10_000  # checks before measuring (a few minutes of a server's life)
    alone: int = 2_000


FULL = Sizes()
QUICK = Sizes(past=200_000, rounds=8, per_round=100, warmup=200, warm_cache=3_000, alone=500)


# ---------------------------------------------------------------------------------------------
# 1. Past checks


@dataclass
class Population:
    """Who makes requests, and how: deterministic from the seed."""

    sizes: Sizes
    rng: random.Random
    home: list[str] = field(default_factory=list)
    devices: list[int] = field(default_factory=list)
    typical: list[float] = field(default_factory=list)
    cum_weights: list[float] = field(default_factory=list)

    @classmethod
    def make(cls, sizes: Sizes, seed: int = SEED) -> Population:
        rng = random.Random(seed)
        pop = cls(sizes, rng)
        total = 0.0
        for i in range(sizes.people):
            pop.home.append(rng.choice(COUNTRIES))
            pop.devices.append(rng.randint(1, 3))
            pop.typical.append(rng.lognormvariate(math.log(150), 0.8))
            total += 1.0 / (i + 1) ** 0.8  # heavy-tailed: a few people make most requests
            pop.cum_weights.append(total)
        return pop

    def person(self, i: int) -> str:
        return f"user-{i:05d}"

    def agent(self, i: int) -> str:
        return f"agent-{i % self.sizes.agents:03d}"

    def payee(self, i: int, rng: random.Random) -> str:
        if rng.random() < 0.05:
            return f"payee-{rng.randrange(self.sizes.payees):05d}"
        return f"payee-{(i * 7 + rng.randrange(5)) % self.sizes.payees:05d}"  # usual five

    def request(
        self, i: int, action: str, rng: random.Random, *, cap: float | None = None
    ) -> Request:
        params: dict[str, Any] = {}
        if action in PAYING:
            amount = round(self.typical[i] * rng.lognormvariate(0, 0.3), 2)
            params = {
                "amount": min(amount, cap) if cap else amount,
                "destination_country": "US",
                "payee_id": self.payee(i, rng),
                "currency": "USD",
            }
        elif action == "procurement.change_supplier_terms":
            changes = ["bank_details"] if rng.random() < 0.2 else ["payment_terms"]
            params = {"supplier_id": self.payee(i, rng), "changes": changes}
        elif action.startswith("data."):
            params = {"classification": "general", "rows": rng.randint(1, 500)}
        elif action == "comms.send":
            params = {"category": "customer_response"}
        geo = self.home[i] if rng.random() >= 0.02 else rng.choice(COUNTRIES)
        context = {"geo": geo, "device_id": f"dev-{i}-{rng.randrange(self.devices[i])}"}
        return Request(action, params, {"user": self.person(i), "agent": self.agent(i)}, context)


@dataclass
class Summaries:
    """The store's rows after the past checks, built in memory."""

    activity: dict[tuple[str, str, str], Activity] = field(default_factory=dict)
    seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    bank: dict[str, float] = field(default_factory=dict)
    denials: dict[str, list[float]] = field(default_factory=dict)
    checks: int = 0

    def rows(self, retention_s: float, bank_s: float, burst_s: float) -> Iterator[tuple[Any, ...]]:
        """(kind, subject, item, version, state, updated_at, expires_at) epoch-second rows."""
        for (kind, subject, item), a in self.activity.items():
            keep = max(retention_s, 86400.0) if kind == ACTOR_ACTION else 86400.0
            last = float(a.sb[-1] + EPOCH)  # the newest 1 s bucket: the last request
            yield kind, subject, item, 1, a.encode(), last, last + keep
        for (kind, subject, item), t in self.seen.items():
            yield kind, subject, item, 1, _time_bytes(t), t, t + retention_s
        for payee, t in self.bank.items():
            yield PAYEE_BANK, payee, "", 1, _time_bytes(t), t, t + bank_s
        for agent, times in self.denials.items():
            state = _times_encode(times)
            yield AGENT_DENIALS, agent, "", 1, state, times[-1], times[-1] + burst_s


def simulate(pop: Population, risk: RiskEngine, n: int, end: datetime) -> Summaries:
    """Replay `n` past checks ending at `end` through the counters, in time order."""
    rng = pop.rng
    sizes = pop.sizes
    settings = risk.settings
    keep = settings.anomaly.history_size
    burst = settings.patterns.denial_burst.count
    who = rng.choices(range(sizes.people), cum_weights=pop.cum_weights, k=n)
    names = [a for a, _ in ACTIONS]
    what = rng.choices(names, weights=[w for _, w in ACTIONS], k=n)
    start = end.timestamp() - SPAN_S
    out = Summaries()
    for k in range(n):
        i = who[k]
        req = pop.request(i, what[k], rng)
        facts = risk.facts(req)
        t = start + (k + rng.random()) * SPAN_S / n
        refused = rng.random() < 0.03
        _count(out, facts, t, refused, keep, burst)
    # The busy agents: one request a second for the last 24 hours (their rows are the largest).
    for h in range(sizes.hot_agents):
        req = hot_request(h, 0)
        facts = risk.facts(req)
        first = end.timestamp() - sizes.hot_seconds
        for s in range(sizes.hot_seconds):
            _count(out, facts, first + s, False, keep, burst)
    out.checks = n + sizes.hot_agents * sizes.hot_seconds
    return out


def _count(out: Summaries, facts: Any, t: float, refused: bool, keep: int, burst: int) -> None:
    if facts.actor:
        key = (ACTOR_ACTION, facts.actor, facts.action)
        a = out.activity.get(key)
        if a is None:
            a = out.activity[key] = Activity()
        a.add(t, None if refused else facts.amount, keep_amounts=keep)
        for kind, value in (
            (SEEN_GEO, facts.geo),
            (SEEN_DEVICE, facts.device),
            (SEEN_PAYEE, facts.payee),
        ):
            if value and not refused:  # a refused request vouches for nothing (`updaters`)
                out.seen[(kind, facts.actor, value)] = t
    if facts.agent:
        key = (AGENT_ACTION, facts.agent, facts.action)
        a = out.activity.get(key)
        if a is None:
            a = out.activity[key] = Activity()
        a.add(t, None, keep_amounts=0)
        if refused:
            times = out.denials.setdefault(facts.agent, [])
            times.append(t)
            del times[:-burst]
    if facts.bank_change_payee:
        out.bank[facts.bank_change_payee] = t


def hot_request(h: int, k: int) -> Request:
    """A request of busy agent `h` (no person: the agent is the actor)."""
    return Request(
        "data.read",
        {"classification": "general", "rows": 10 + k % 50},
        {"agent": f"hot-agent-{h}"},
        {"geo": "US", "device_id": f"hot-{h}"},
    )


def bulk_insert(db: Database, summaries: Summaries, risk: RiskEngine, batch: int = 20_000) -> int:
    """Insert the summaries into `risk_state` (raw executemany on SQLite); how many rows."""
    s = risk.settings
    rows = summaries.rows(
        s.retention_days * 86400.0,
        s.patterns.payee_bank_change.days * 86400.0,
        s.patterns.denial_burst.minutes * 60.0,
    )
    n = 0
    with db.begin() as conn:
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch:
                n += _insert(conn, db, chunk)
                chunk = []
        if chunk:
            n += _insert(conn, db, chunk)
    return n


def _insert(conn: Connection, db: Database, chunk: list[tuple[Any, ...]]) -> int:
    if db.is_sqlite:
        values = [(*r[:5], _sqlite_time(r[5]), _sqlite_time(r[6])) for r in chunk]
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(
                "INSERT INTO risk_state (kind, subject, item, version, state, updated_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        finally:
            cursor.close()
    else:
        keys = ("kind", "subject", "item", "version", "state", "updated_at", "expires_at")
        conn.execute(
            insert(risk_state),
            [dict(zip(keys, (*r[:5], _aware(r[5]), _aware(r[6])), strict=True)) for r in chunk],
        )
    return len(chunk)


def _sqlite_time(ts: float) -> str:
    return _aware(ts).strftime("%Y-%m-%d %H:%M:%S.%f")


def _aware(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# ---------------------------------------------------------------------------------------------
# 2. Checks


@dataclass(frozen=True, slots=True)
class Stats:
    """Wall-clock median, mean and p99, and the median and mean CPU time of the process (all
    threads: the PostgreSQL writer works in its own), in µs. The mean carries the rare slow
    checks the median skips (WAL checkpoints); folds are timed apart (`Bench.folds`)."""

    n: int
    median_us: float
    p99_us: float
    cpu_us: float = math.nan
    mean_us: float = math.nan
    cpu_mean_us: float = math.nan

    @classmethod
    def of(cls, samples_ns: Sequence[int], cpu_ns: Sequence[int] = ()) -> Stats:
        if not samples_ns:
            return cls(0, math.nan, math.nan)
        ordered = sorted(samples_ns)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        cpu = statistics.median(cpu_ns) / 1000 if cpu_ns else math.nan
        cpu_mean = statistics.fmean(cpu_ns) / 1000 if cpu_ns else math.nan
        return cls(
            len(ordered),
            statistics.median(ordered) / 1000,
            p99 / 1000,
            cpu,
            statistics.fmean(ordered) / 1000,
            cpu_mean,
        )


class Bench:
    """The gateway's check path, spelled out, with and without risk signals."""

    def __init__(self, db: Database, pop: Population, risk: RiskEngine, engine: Engine) -> None:
        self.db = db
        self.pop = pop
        self.risk = risk
        # Stands for a second process: a chain of its own, folded by the first (which its own
        # folds would make drop its kept rows, as another process's do).
        self.uncached = RiskEngine(risk.settings, cache_rows=0, chain_id="bench-risk-2")
        self.engine = engine
        self.writer = AuditWriter(db, "bench-risk")
        risk.journal.chain_id = self.writer.chain_id  # its checks are noted against that chain
        self.other_writer = AuditWriter(db, self.uncached.journal.chain_id)
        self.reader = db.sync_engine.connect()
        self.rng = random.Random(SEED + 1)
        self.clock = NOW.timestamp()
        self.effects: dict[str, int] = {}
        self.whole_at_start = False  # every row kept once warmed (`RowCache.cover_all`)
        self.folds: list[tuple[int, int, int]] = []  # (checks counted, ns, CPU ns) each fold
        # The product's own check, whole: `Gateway.check` on the same policy without and with
        # a `risk:` section (default settings, as `risk`'s), on this process's writer and, with
        # risk, its one engine (so its rows, unfolded checks and folds are shared).
        self.gateway = Gateway(engine.policy, db, self.writer, clock=self.now)
        source = ENTERPRISE.read_text(encoding="utf-8")
        with_risk = load_policy_texts(
            [(str(ENTERPRISE), source), ("<risk>", "version: 1\nrisk: {}\n")]
        )
        self.gateway_risk = Gateway(with_risk, db, self.writer, clock=self.now)
        self.gateway_risk.risk = risk

    async def aclose(self) -> None:
        folding = self.gateway_risk._folding
        if folding is not None:
            await folding
        await self.other_writer.aclose()
        await self.writer.aclose()
        self.reader.close()

    def now(self) -> datetime:
        self.clock += 0.01  # 100 checks a second of simulated time
        return _aware(self.clock)

    def next_request(self, parity: int = 0) -> Request:
        """A transfer by someone drawn from the population (even or odd `parity` only, so
        that the engines with and without a cache never record the same subjects: for one
        engine, the other's writes would look like another instance's)."""
        i = self.rng.choices(range(self.pop.sizes.people), cum_weights=self.pop.cum_weights)[0]
        if i % 2 != parity:
            i = i + 1 if i + 1 < self.pop.sizes.people else i - 1
        return self.pop.request(i, "payments.transfer", self.rng, cap=499.0)

    def entry(
        self,
        request: Request,
        decision: Any,
        now: datetime,
        risk: dict[str, Any] | None,
        journal: list[Any] | None = None,
    ) -> AuditDraft:
        data: dict[str, Any] = {
            "decision_id": decision.decision_id,
            "reasons": list(decision.reasons),
            "params": request.params,
            "actor": dict(request.actor),
            "agent": request.actor.get("agent"),
        }
        if risk is not None:  # what `Gateway.check` keeps of it (`_check_data`)
            data["risk"] = {k: risk.get(k) for k in ("score", "reasons", "patterns")}
            if journal is not None:
                data["risk"]["f"] = journal
        self.effects[decision.effect.value] = self.effects.get(decision.effect.value, 0) + 1
        return AuditDraft(
            kind=Kind.CHECK,
            ts=now,
            actor=request.actor.get("user") or request.actor.get("agent"),
            channel="api",
            action=request.action,
            params_hash=params_hash(request.params),
            effect=decision.effect.value,
            rule_ids=decision.rules,
            policy_version=decision.policy_version,
            data=data,
        )

    # -- the variants --------------------------------------------------------------------------
    async def without(self, request: Request) -> None:
        decision = self.engine.evaluate(request)
        await self.writer.append(self.entry(request, decision, self.now(), None))

    async def without_run(self, request: Request) -> None:
        decision = self.engine.evaluate(request)
        entry = self.entry(request, decision, self.now(), None)
        await self.writer.run(lambda tx: tx.audit(entry))

    async def with_risk(self, request: Request, *, cached: bool = True) -> None:
        """What `Gateway.check` does: read (reader connection, or the engine's rows in
        memory), evaluate, append the entry with its risk journal, note it. When a fold is
        due, `Gateway.check` starts one in the background; here `settle` runs it after the
        check's time is taken, and times it apart (its cost per check folded is reported)."""
        now = self.now()
        risk = self.risk if cached else self.uncached
        assessment = risk.kept_assessment(request, now)
        if assessment is None:
            assessment = risk.assessment(self.reader, request, now, count=False)
        request = request.with_risk(assessment.risk)
        decision = self.engine.evaluate(request)
        entry = self.entry(request, decision, now, assessment.risk, risk.journal_entry(assessment))
        appended = await (self.writer if cached else self.other_writer).append(entry)
        risk.note(appended.seq, assessment, decision.effect.value, now)

    async def gateway_check(self, request: Request) -> None:
        """`Gateway.check` without risk signals."""
        result = await self.gateway.check(request)
        self._count(result.decision.effect.value)

    async def gateway_risk_check(self, request: Request) -> None:
        """`Gateway.check` with risk signals (it starts its own folds, in the background:
        `settle` waits for one, timed apart)."""
        result = await self.gateway_risk.check(request)
        self._count(result.decision.effect.value)

    def _count(self, effect: str) -> None:
        self.effects[effect] = self.effects.get(effect, 0) + 1

    async def settle(self) -> None:
        """Run the fold that is due, if one is (between two timed checks); or let the one the
        gateway started finish, timed the same way."""
        started = self.gateway_risk._folding
        if started is not None and not started.done():
            before = self.risk.journal.folded_entries
            t0, c0 = time.perf_counter_ns(), time.process_time_ns()
            await started
            counted = self.risk.journal.folded_entries - before
            self.folds.append((counted, time.perf_counter_ns() - t0, time.process_time_ns() - c0))
        if self.risk.fold_due():
            await self.fold(self.risk)

    async def fold(self, risk: RiskEngine) -> int:
        """Fold the checks not yet in the store, one writer unit after another until none is
        left (as `Gateway.fold_risk`); how many."""
        total = 0
        while True:
            now = self.now()
            started, cpu = time.perf_counter_ns(), time.process_time_ns()
            result = await self.writer.run(functools.partial(risk.fold, now=now))
            risk.folded(result)
            self.folds.append(
                (result.entries, time.perf_counter_ns() - started, time.process_time_ns() - cpu)
            )
            total += result.entries
            if not result.more:
                return total


Variant = Callable[[Request], Awaitable[None]]


async def measure(bench: Bench, sizes: Sizes) -> dict[str, Stats]:
    people = bench.next_request
    variants: dict[str, tuple[Variant, Callable[[], Request]]] = {
        "without": (bench.without, people),
        "without/run": (bench.without_run, people),
        "with": (bench.with_risk, people),
        "with/no-cache": (
            functools.partial(bench.with_risk, cached=False),
            functools.partial(bench.next_request, 1),
        ),
    }
    variants["gateway"] = (bench.gateway_check, people)
    variants["gateway+risk"] = (bench.gateway_risk_check, people)
    hot = iter(range(10**9))
    hot_agents = max(1, bench.pop.sizes.hot_agents)
    variants["with/hot"] = (bench.with_risk, lambda: hot_request(next(hot) % hot_agents, next(hot)))
    for fn, make in variants.values():  # warm up every path (statement caches, pages)
        for _ in range(max(1, sizes.warmup // len(variants))):
            await fn(make())
            await bench.settle()
    # A server that has run a while: its row cache filled at start (`warm`: the most recently
    # updated rows, as `clearance serve` does), then a few minutes of checks.
    bench.risk.warm(bench.reader, bench.now())
    bench.whole_at_start = bench.risk.cache.whole
    for _ in range(sizes.warm_cache):
        await bench.with_risk(people())
        await bench.settle()
    bench.risk.cache.hits = bench.risk.cache.misses = 0
    bench.folds.clear()
    samples: dict[str, list[int]] = {name: [] for name in variants}
    cpu: dict[str, list[int]] = {name: [] for name in variants}
    order = list(variants)
    wall, thread = time.perf_counter_ns, time.process_time_ns
    gc.collect()
    gc.disable()
    try:
        for r in range(sizes.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                fn, make = variants[name]
                out, out_cpu = samples[name], cpu[name]
                for _ in range(sizes.per_round):
                    request = make()
                    c0 = thread()
                    started = wall()
                    await fn(request)
                    out.append(wall() - started)
                    out_cpu.append(thread() - c0)
                    await bench.settle()
            gc.collect()
    finally:
        gc.enable()
    return {name: Stats.of(samples[name], cpu[name]) for name in variants}


def measure_alone(bench: Bench, n: int) -> Stats:
    """`assess` alone (reader connection, or the rows in memory), per call."""
    reads: list[int] = []
    for _ in range(n):
        request = bench.next_request()
        now = bench.now()
        started = time.perf_counter_ns()
        bench.risk.assessment(bench.reader, request, now)
        reads.append(time.perf_counter_ns() - started)
    return Stats.of(reads)


# ---------------------------------------------------------------------------------------------


def prepare(
    url: str, sizes: Sizes, risk: RiskEngine, *, sqlite_tuning: bool = False
) -> tuple[Database, Population, dict[str, float]]:
    """Open and migrate the database, replay and insert the past checks."""
    db = open_database(url)
    if sqlite_tuning and db.is_sqlite:
        tune_sqlite(db)
    db.migrate()
    with db.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(risk_state)).scalar_one()
    figures: dict[str, float] = {"existing_rows": float(existing)}
    pop = Population.make(sizes)
    started = time.perf_counter()
    summaries = simulate(pop, risk, sizes.past, NOW)
    figures["simulate_s"] = time.perf_counter() - started
    figures["checks"] = float(summaries.checks)
    started = time.perf_counter()
    if not existing:
        figures["rows"] = float(bulk_insert(db, summaries, risk))
    figures["insert_s"] = time.perf_counter() - started
    return db, pop, figures


async def measure_fold_paths(bench: Bench, rounds: int, checks: int = 800) -> dict[str, float]:
    """A fold's cost per check folded, taking the rows kept current from memory (`kept`, as
    the journal does) or reading every row, as it did before (`read`: `_kept_for_fold`
    replaced by one that takes none); the same process and rows, in alternating rounds of
    `checks` checks each folded whole. Medians of the rounds, µs."""
    real = Journal._kept_for_fold
    spent: dict[str, list[float]] = {"kept": [], "read": []}
    try:
        for r in range(rounds):
            for mode in ("kept", "read") if r % 2 else ("read", "kept"):
                Journal._kept_for_fold = real if mode == "kept" else _take_none  # type: ignore[method-assign]
                for _ in range(checks):
                    await bench.with_risk(bench.next_request())
                started = time.perf_counter_ns()
                counted = await bench.fold(bench.risk)
                spent[mode].append((time.perf_counter_ns() - started) / max(1, counted) / 1000)
    finally:
        Journal._kept_for_fold = real  # type: ignore[method-assign]
    return {mode: statistics.median(values) for mode, values in spent.items()}


def _take_none(self: Journal, *_: Any) -> dict[Any, Any]:
    return {}


async def run_checks(
    db: Database, pop: Population, risk: RiskEngine, sizes: Sizes, *, fold_paths: int = 0
) -> tuple[dict[str, Stats], Stats, dict[str, int], list[tuple[int, int, int]], dict[str, float]]:
    engine = Engine(load_policy(ENTERPRISE))
    bench = Bench(db, pop, risk, engine)
    paths: dict[str, float] = {}
    try:
        results = await measure(bench, sizes)
        cache = risk.cache
        looked = cache.hits + cache.misses
        bench.effects["cache hit %"] = round(100 * cache.hits / looked) if looked else 0
        bench.effects["kept whole: at start"] = int(bench.whole_at_start)
        bench.effects["at the end"] = int(cache.whole)
        folds = list(bench.folds)
        alone = measure_alone(bench, sizes.alone)
        if fold_paths:
            paths = await measure_fold_paths(bench, fold_paths)
    finally:
        await bench.aclose()
    return results, alone, bench.effects, folds, paths


def tune_sqlite(db: Database) -> None:
    """A PROPOSAL for `clearance.store.database` (emulated here): give each SQLite connection
    a 64 MB page cache and memory-map the file, so that B-tree pages are not read again with
    a system call on every statement (the default cache is 2 MB)."""

    @event.listens_for(db.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KB}")
            cursor.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
        finally:
            cursor.close()


def run(
    sizes: Sizes,
    url: str | None,
    label: str,
    *,
    sqlite_tuning: bool = False,
    fold_paths: int = 0,
    cache_rows: int | None = None,
) -> int:
    risk = RiskEngine(cache_rows=cache_rows)
    with tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp:
        target = url or f"sqlite:///{tmp}/risk.db"
        tuning = "; SQLite tuning (64 MB cache, mmap)" if sqlite_tuning else ""
        print(
            f"risk signals benchmark ({label}): {sizes.past:,} past checks; row cache "
            f"{risk.cache.size:,} rows; load {_load()}{tuning}"
        )
        db, pop, figures = prepare(target, sizes, risk, sqlite_tuning=sqlite_tuning)
        where = db.url if not db.is_sqlite else "SQLite (WAL) in a temporary directory"
        rows = int(figures.get("rows", figures["existing_rows"]))
        print(
            f"  store: {where}; {int(figures['checks']):,} past checks replayed in "
            f"{figures['simulate_s']:.1f} s → {rows:,} risk_state rows, inserted in "
            f"{figures['insert_s']:.1f} s"
        )
        if db.is_sqlite:
            size = Path(str(db.sync_engine.url.database)).stat().st_size
            print(f"  database file: {size / 1e6:.0f} MB")
        try:
            results, reads, effects, folds, paths = asyncio.run(
                run_checks(db, pop, risk, sizes, fold_paths=fold_paths)
            )
        finally:
            db.dispose()
    decisions = dict(sorted(effects.items()))
    print(f"  checks per variant: {results['with'].n:,} (after warm-up); decisions {decisions}")
    print(
        f"  {'variant':<16}{'median µs':>10}{'×':>6}{'mean µs':>10}{'×':>6}{'p99 µs':>10}"
        f"{'CPU µs':>10}{'×':>6}{'CPU mean':>10}{'×':>6}"
    )
    base = results["without"]
    for name, st in results.items():
        print(
            f"  {name:<16}{st.median_us:>10.1f}{st.median_us / base.median_us:>6.2f}"
            f"{st.mean_us:>10.1f}{st.mean_us / base.mean_us:>6.2f}{st.p99_us:>10.1f}"
            f"{st.cpu_us:>10.1f}{st.cpu_us / base.cpu_us:>6.2f}"
            f"{st.cpu_mean_us:>10.1f}{st.cpu_mean_us / base.cpu_mean_us:>6.2f}"
        )
    print("  (× is against `without`; the folds are timed apart, below)")
    print(f"  assess alone: median {reads.median_us:.1f} µs, p99 {reads.p99_us:.1f} µs")
    fold_us = fold_cpu_us = 0.0
    if folds:
        counted = max(1, sum(f[0] for f in folds))
        spent, cpu_spent = sum(f[1] for f in folds) / 1000, sum(f[2] for f in folds) / 1000
        fold_us, fold_cpu_us = spent / counted, cpu_spent / counted
        print(
            f"  folds while measuring: {len(folds)} writer units of {counted:,} checks in all, "
            f"{spent / len(folds):,.0f} µs each (the longest {max(f[1] for f in folds) / 1000:,.0f}"
            f" µs): {fold_us:.1f} µs ({fold_cpu_us:.1f} µs CPU) a check folded"
        )
    if paths:
        print(
            f"  a fold, per check folded, over {fold_paths} rounds: {paths['kept']:.1f} µs taking "
            f"the rows kept current from memory vs {paths['read']:.1f} µs reading every row "
            f"({paths['kept'] / paths['read']:.2f} ×)"
        )
    if "gateway+risk" in results:
        plain, risky = results["gateway"], results["gateway+risk"]
        print(
            f"  Gateway.check, the whole check: {risky.median_us:.1f} vs {plain.median_us:.1f} µs "
            f"→ {risky.median_us / plain.median_us:.2f} × median wall; with each check's share "
            f"of the folds {(risky.mean_us + fold_us) / plain.mean_us:.2f} × mean wall"
        )
    if "with" in results:
        st = results["with"]
        ratio = st.median_us / base.median_us
        cpu_ratio = st.cpu_us / base.cpu_us
        total = (st.mean_us + fold_us) / base.mean_us
        total_cpu = (st.cpu_mean_us + fold_cpu_us) / base.cpu_mean_us
        verdict = "meets" if ratio < TARGET_RATIO else "MISSES"
        print(
            f"  target: with < {TARGET_RATIO:g} × without → {ratio:.2f} × median wall, "
            f"{cpu_ratio:.2f} × median CPU ({verdict}); with each check's share of the folds: "
            f"{total:.2f} × mean wall, {total_cpu:.2f} × mean CPU"
        )
    return 0


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench risk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="200,000 past checks, fewer rounds")
    parser.add_argument("--past", type=int, default=None, help="number of past checks")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_RISK_DATABASE_URL"))
    parser.add_argument(
        "--sqlite-tuning", action="store_true", help="the proposed SQLite cache and mmap pragmas"
    )
    parser.add_argument(
        "--fold-paths",
        type=int,
        default=0,
        help="also time a fold taking kept rows from memory against one reading every row, "
        "in this many alternating rounds of 800 checks (e.g. 30)",
    )
    parser.add_argument(
        "--cache-rows",
        type=int,
        default=None,
        help="risk rows kept in memory (default: the `risk.cache_rows` setting, 100,000); "
        "above the store's row count (the bench's is about 313,000) every row is kept",
    )
    parser.add_argument(
        "--people",
        type=int,
        default=None,
        help="how many people make the checks (20,000): fewer keep every row hot in memory",
    )
    args, _ = parser.parse_known_args(list(argv) if argv is not None else sys.argv[1:])
    sizes = QUICK if args.quick else FULL
    if args.past is not None:
        sizes = dataclasses.replace(sizes, past=args.past)
    if args.fold_paths < 0:
        parser.error("--fold-paths is a number of rounds (0: skip)")
    if args.people is not None:
        if args.people < 2:
            parser.error("--people must be at least 2 (checks alternate between two halves)")
        sizes = dataclasses.replace(sizes, people=args.people)
    label = "quick" if args.quick else "full"
    if args.people is not None:
        label += f", {sizes.people:,} people"
    if args.cache_rows is not None and args.cache_rows < 0:
        parser.error("--cache-rows is a number of rows (0: no row cache)")
    return run(
        sizes,
        args.database_url,
        label,
        sqlite_tuning=args.sqlite_tuning,
        fold_paths=args.fold_paths,
        cache_rows=args.cache_rows,
    )


__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
