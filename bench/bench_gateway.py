"""Gateway benchmark: the audited hot path, HTTP throughput, approval round trips, memory.

Four parts, each printed beside its target (DESIGN.md, "The audit chain and throughput"):

1. Embedded audited allow — `Gate.local(examples/enterprise/clearance.yaml)` on SQLite in a
   temporary directory; one sequential caller runs `gate.check("payments.transfer",
   {"amount": 100, "destination_country": "US"}, actor={"user": "carol"})` (auto-allowed; each
   check's audit entry is committed before it returns): median and p99 µs. The same request
   on `gateway.check` (no SDK layer) and on `engine.evaluate` alone shows the audit's share,
   and the SQLite statements of one audit commit run raw through `sqlite3` on the same file
   show the machine's floor. Then 64 concurrent callers: µs per check (wall / checks).
   Target: audited allow < 100 µs median.
2. HTTP throughput — a real `clearance serve` subprocess (SQLite, an agent key made
   beforehand); auto-allowed `POST /v1/checks` at 32 concurrent connections, and the same
   server's trivial `GET /livez` in the same run as the ceiling. The load generator is `wrk`
   (`apt-get install -y wrk`) in its own process, or, without it, an httpx load generator in
   a subprocess (slower: then the client may be what is measured). Every check is verified
   allowed afterwards from the audit trail. Target: checks ≥ 50% of the /livez ceiling.
3. Approval round trip without the human — a $2,000 transfer (one manager must approve):
   the agent checks through `RemoteGate`, parks `gate.wait(id)` in a task, and alice
   approves through `POST /v1/approvals/{id}/decisions` with her personal key: p50/p99 from
   the approve POST to the waiter returning, and from the check to the waiter returning.
   Target: p99 < 50 ms on SQLite.
4. Memory — 100,000 pending approvals bulk-inserted (each built exactly as `Gateway.check`
   builds it on its approve path, with its two audit entries; the rows go in with one
   executemany per `writer.run_sync` batch of 2,000, since `records.insert_approval` costs
   over a millisecond a row), then the server is started and exercised (checks, a list of
   500 pending approvals for three callers, a few waits) and its VmRSS read from /proc.
   Target < 200 MB. Then a soak of steady mixed load (allowed checks, checks that open
   approvals, approvals and denials, waits, lists), sampling VmRSS: first/last/max and the
   slope. Target: flat.

Run: `.venv/bin/python -m bench gateway` (full, about 4 minutes; soak 60 s) or
`.venv/bin/python -m bench gateway --quick` (about a minute: fewer calls, 20,000 pending
approvals, soak 10 s). The one-hour soak of
DESIGN.md is `.venv/bin/python -m bench gateway --soak 3600` (not run by default).
`--loadgen httpx` forces the fallback load generator.

The machine has 2 cores, shared by the server, the load generator and this process (and, on
a shared machine, by others: the load average is printed). Requests go to 127.0.0.1 only.
Nothing is asserted: the smoke test (`tests/bench/test_bench_gateway.py`) checks the
builders' correctness at tiny sizes, never a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ENTERPRISE = ROOT / "examples" / "enterprise" / "clearance.yaml"
SEED = 20_240_611

ALLOW_PARAMS: dict[str, Any] = {"amount": 100, "destination_country": "US"}
APPROVE_PARAMS: dict[str, Any] = {"amount": 2000, "destination_country": "US"}
ACTOR = {"user": "carol"}
AGENT = "bench-bot"

TARGET_CHECK_US = 100.0
TARGET_EVALUATE_US = 10.0
TARGET_HTTP_RATIO = 0.5
TARGET_ROUND_TRIP_P99_MS = 50.0
TARGET_RSS_MB = 200.0
TARGET_SLOPE_MB_MIN = 1.0  # "flat": at most this growth over the soak's second half

WAIT_PARK_S = 0.005  # pause between parking the wait and approving, so the wait is parked
INSERT_BATCH = 2_000
LIST_LIMIT = 500  # the API's largest page


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each part does."""

    embedded: int = 20_000
    warmup: int = 2_000
    callers: int = 64
    http_seconds: float = 10.0
    http_warmup: float = 2.0
    connections: int = 32
    round_trips: int = 1_000
    pending: int = 100_000
    exercise_checks: int = 300
    soak_seconds: float = 60.0


FULL = Sizes()
QUICK = Sizes(
    embedded=5_000,
    warmup=1_000,
    http_seconds=2.0,
    http_warmup=1.0,
    round_trips=200,
    pending=20_000,
    soak_seconds=10.0,
)


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass(frozen=True, slots=True)
class Stats:
    """A latency distribution, in microseconds."""

    n: int
    median_us: float
    p99_us: float
    mean_us: float

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> Stats:
        if not samples_ns:
            return cls(0, math.nan, math.nan, math.nan)
        ordered = sorted(samples_ns)
        return cls(
            n=len(ordered),
            median_us=statistics.median(ordered) / 1000,
            p99_us=percentile(ordered, 0.99) / 1000,
            mean_us=statistics.fmean(ordered) / 1000,
        )


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of already sorted samples."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute (0 for fewer than 2)."""
    if len(samples) < 2:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for process {pid}")


def audit_counts(db_path: Path) -> Counter[str]:
    """Check entries in the audit trail by effect (read straight from the SQLite file)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT effect, count(*) FROM audit_entries WHERE kind = 'check' GROUP BY effect"
        ).fetchall()
    finally:
        conn.close()
    return Counter({str(effect): int(n) for effect, n in rows})


# ---------------------------------------------------------------------------------------------
# 1. Embedded audited allow


@dataclass
class EmbeddedResult:
    """Latencies of the embedded gate, and what the checks decided and audited."""

    check: Stats
    gateway_check: Stats
    evaluate: Stats
    floor: Stats
    callers: int
    concurrent_checks: int
    concurrent_us: float
    effects: Counter[str]
    checks_made: int
    audited_allow: int


async def _embedded(db_path: Path, n: int, warmup: int, callers: int) -> EmbeddedResult:
    from clearance import Gate
    from clearance.policy import Request

    gate = Gate.local(ENTERPRISE, database_url=f"sqlite:///{db_path}")
    effects: Counter[str] = Counter()
    made = 0
    try:
        gateway = gate.gateway
        request = Request("payments.transfer", dict(ALLOW_PARAMS), dict(ACTOR))
        clock = time.perf_counter_ns

        async def sdk_check() -> str:
            result = await gate.check("payments.transfer", ALLOW_PARAMS, actor=ACTOR)
            return result.effect

        async def gateway_check() -> str:
            result = await gateway.check(request, channel="sdk")
            return result.decision.effect.value

        async def timed(fn: Callable[[], Any], count: int) -> list[int]:
            nonlocal made
            for _ in range(warmup):
                effects[await fn()] += 1
            gc.collect()
            times = [0] * count
            for i in range(count):
                t0 = clock()
                effect = await fn()
                times[i] = clock() - t0
                effects[effect] += 1
            made += warmup + count
            return times

        check_times = await timed(sdk_check, n)
        gateway_times = await timed(gateway_check, n)

        engine = gateway.engine
        for _ in range(warmup):
            engine.evaluate(request)
        gc.collect()
        eval_times = [0] * n
        for i in range(n):
            t0 = clock()
            decision = engine.evaluate(request)
            eval_times[i] = clock() - t0
            if decision.effect.value != "allow":
                raise AssertionError(f"the benchmark request was not allowed: {decision}")

        each = max(1, n // callers)

        async def caller() -> None:
            nonlocal made
            for _ in range(each):
                effects[await sdk_check()] += 1
            made += each

        gc.collect()
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        wall = time.perf_counter() - started

        from sqlalchemy import text

        with gateway.db.connect() as conn:
            audited = int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM audit_entries WHERE kind = 'check' "
                        "AND effect = 'allow'"
                    )
                ).scalar_one()
            )
    finally:
        await gate.aclose()
    return EmbeddedResult(
        check=Stats.of(check_times),
        gateway_check=Stats.of(gateway_times),
        evaluate=Stats.of(eval_times),
        floor=Stats.of([]),  # measured by run_embedded once the gate is closed
        callers=callers,
        concurrent_checks=each * callers,
        concurrent_us=wall / (each * callers) * 1e6,
        effects=effects,
        checks_made=made,
        audited_allow=audited,
    )


def sqlite_floor(db_path: Path, n: int, warmup: int = 1_000) -> Stats:
    """The SQLite work of one audited check, straight through `sqlite3`: BEGIN IMMEDIATE,
    read the chain head, insert one entry (a copy of the newest real one), move the head,
    COMMIT — on the same database file and pragmas, in a chain of its own. The floor under
    any audited check with one commit each; it calibrates the machine at the moment."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        cursor = conn.execute("SELECT * FROM audit_entries ORDER BY seq DESC LIMIT 1")
        names = [d[0] for d in cursor.description]
        template = list(cursor.fetchone())
        head = conn.execute("SELECT * FROM audit_heads LIMIT 1")
        head_names = [d[0] for d in head.description]
        head_row = dict(zip(head_names, head.fetchone(), strict=True))
        chain = "bench-floor"
        head_row.update(chain_id=chain, seq=0)
        conn.execute(
            f"INSERT INTO audit_heads ({', '.join(head_row)}) "  # noqa: S608 - schema names
            f"VALUES ({', '.join('?' * len(head_row))})",
            list(head_row.values()),
        )
        insert_sql = (
            f"INSERT INTO audit_entries ({', '.join(names)}) "  # noqa: S608 - schema names
            f"VALUES ({', '.join('?' * len(names))})"
        )
        i_chain, i_seq, i_prev, i_hash = (
            names.index(c) for c in ("chain_id", "seq", "prev_hash", "hash")
        )
        clock = time.perf_counter_ns
        times = [0] * n
        for k in range(warmup + n):
            t0 = clock()
            conn.execute("BEGIN IMMEDIATE")
            seq, prev = conn.execute(
                "SELECT seq, hash FROM audit_heads WHERE chain_id = ?", (chain,)
            ).fetchone()
            row = template[:]
            new_hash = f"{seq + 1:064x}"
            row[i_chain], row[i_seq], row[i_prev], row[i_hash] = chain, seq + 1, prev, new_hash
            conn.execute(insert_sql, row)
            conn.execute(
                "UPDATE audit_heads SET seq = ?, hash = ? WHERE chain_id = ?",
                (seq + 1, new_hash, chain),
            )
            conn.execute("COMMIT")
            if k >= warmup:
                times[k - warmup] = clock() - t0
    finally:
        conn.close()
    return Stats.of(times)


def run_embedded(
    directory: Path, n: int, *, warmup: int = 2_000, callers: int = 64
) -> EmbeddedResult:
    """Part 1 on a fresh SQLite database in `directory`, then the raw SQLite floor."""
    db_path = directory / "embedded.db"
    result = asyncio.run(_embedded(db_path, n, warmup, callers))
    result.floor = sqlite_floor(db_path, n, warmup=warmup)
    return result


# ---------------------------------------------------------------------------------------------
# A real server, its database, keys and pending approvals


@dataclass(frozen=True, slots=True)
class BenchKeys:
    """API tokens: the agent's, and personal keys for two managers and an admin."""

    agent: str
    alice: str
    bob: str
    ivan: str


def database_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


def prepare_database(db_path: Path, *, pending: int = 0) -> tuple[BenchKeys, float]:
    """Migrate a fresh database, create the keys, and insert `pending` pending approvals.

    Returns the keys and the seconds the insertion took.
    """
    from clearance.gateway import Gateway
    from clearance.identity import keys

    gateway = Gateway.open(ENTERPRISE, database_url=database_url(db_path))
    try:
        now = gateway.clock()

        def make(tx: Any) -> BenchKeys:
            def key(kind: Any, subject: str) -> str:
                return keys.create_key(tx.conn, kind=kind, subject=subject, now=now).token

            return BenchKeys(
                agent=key("agent", AGENT),
                alice=key("person", "alice"),
                bob=key("person", "bob"),
                ivan=key("person", "ivan"),
            )

        made = gateway.writer.run_sync(make)
        started = time.perf_counter()
        if pending:
            insert_pending(gateway, pending)
        took = time.perf_counter() - started
    finally:
        gateway.writer.close()
        gateway.db.dispose()
    return made, took


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One pending approval as `Gateway.check` makes it: the row and its two audit entries."""

    stored: Any  # StoredApproval
    entries: tuple[Any, ...]  # AuditDraft, AuditDraft


def pending_row(engine: Any, rng: random.Random, now: datetime) -> PendingRow:
    """A pending $500–$5,000 transfer (one manager must approve), built as `Gateway.check`
    builds it on the `approve` path (same decision, approval, row and audit entries)."""
    from clearance.approvals import workflow
    from clearance.approvals.records import StoredApproval
    from clearance.audit.entry import AuditDraft, Kind
    from clearance.canonical import binding_hash, params_hash
    from clearance.gateway import new_approval_id
    from clearance.policy import Effect, Request

    params = {"amount": rng.randrange(500, 5001), "destination_country": "US"}
    actor = {**ACTOR, "agent": AGENT}
    request = Request("payments.transfer", params, actor)
    decision = engine.evaluate(request)
    if decision.effect is not Effect.APPROVE or decision.approval is None:
        raise AssertionError(f"expected an approval for {params}: {decision}")
    bind = binding_hash(request.action, params, actor)
    phash = params_hash(params)
    approval = workflow.open_approval(
        approval_id=new_approval_id(),
        action=request.action,
        params=params,
        binding_hash=bind,
        actor=actor,
        plan=decision.approval,
        now=now,
    )
    stored = StoredApproval(
        approval=approval,
        agent=AGENT,
        decision=decision.to_json(),
        rules=decision.rules,
        reasons=decision.reasons,
        policy_version=decision.policy_version,
        params_hash=phash,
    )
    common: dict[str, Any] = {
        "ts": now,
        "actor": ACTOR["user"],
        "channel": "api",
        "action": request.action,
        "params_hash": phash,
        "rule_ids": decision.rules,
        "policy_version": decision.policy_version,
        "approval_id": approval.id,
    }
    check = AuditDraft(
        kind=Kind.CHECK,
        effect=decision.effect.value,
        data={
            "decision_id": decision.decision_id,
            "reasons": list(decision.reasons),
            "params": params,
            "actor": actor,
            "agent": AGENT,
        },
        **common,
    )
    created = AuditDraft(
        kind=Kind.APPROVAL_CREATED,
        effect="pending",
        data={
            "plan": decision.approval.to_json(),
            "expires_at": approval.expires_at.isoformat(),
            "binding_hash": bind,
        },
        **common,
    )
    return PendingRow(stored, (check, created))


def insert_pending(gateway: Any, n: int, batch: int = INSERT_BATCH) -> None:
    """Insert `n` pending approvals (`pending_row`), `batch` to a `writer.run_sync`
    transaction: the rows with one executemany, their audit entries through `tx.audit`.

    (`records.insert_approval` builds a fresh `insert().values(...)` statement a row, which
    costs about 1.5 ms here: 100,000 rows would take minutes. See the report.)"""
    from sqlalchemy import insert

    from clearance.approvals.records import approval_values, people_of
    from clearance.store.schema import approval_people, approvals

    rng = random.Random(SEED)
    statement = insert(approvals)
    people = insert(approval_people)
    done = 0
    while done < n:
        size = min(batch, n - done)
        now = gateway.clock()
        rows = [pending_row(gateway.engine, rng, now) for _ in range(size)]

        def work(tx: Any, rows: list[PendingRow] = rows) -> None:
            tx.conn.execute(statement, [approval_values(r.stored) for r in rows])
            tx.conn.execute(
                people,
                [
                    {"person_id": p, "approval_id": r.stored.approval.id}
                    for r in rows
                    for p in people_of(r.stored.approval)
                ],
            )
            for r in rows:
                for entry in r.entries:
                    tx.audit(entry)

        gateway.writer.run_sync(work)
        done += size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`clearance serve` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, db_path: Path, log: Path) -> None:
        self.db_path = db_path
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not running")
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        cmd = [
            sys.executable, "-m", "clearance.cli", "serve", "--config", str(ENTERPRISE),
            "--database-url", database_url(self.db_path), "--port", str(self.port),
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not start in {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    def rss_mb(self) -> float:
        return rss_mb(self.pid)


@contextlib.contextmanager
def running(db_path: Path, log: Path) -> Iterator[Server]:
    """A started server, always stopped afterwards."""
    server = Server(db_path, log)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# 2. HTTP throughput


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load-generator run saw."""

    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    status_errors: int  # answers other than 2xx/3xx
    socket_errors: int  # connect, read, write errors and timeouts

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str | None:
    return shutil.which("wrk")


def check_body() -> str:
    return json.dumps({"action": "payments.transfer", "params": ALLOW_PARAMS, "actor": ACTOR})


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("CLEARANCE_BENCH %d %d %d %d %d %d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(method: str, body: str | None, headers: dict[str, str]) -> str:
    """A wrk Lua script: the request, and a `done` hook that prints parseable figures."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n" + _WRK_DONE


def run_wrk(
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    seconds: float,
    connections: int,
    threads: int = 1,
    directory: Path,
) -> LoadResult:
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    script = directory / f"wrk-{method.lower()}.lua"
    script.write_text(wrk_script(method, body, headers or {}))
    duration = max(1, round(seconds))
    cmd = [
        wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
        "--timeout", "10s", "--latency", "-s", str(script), url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("CLEARANCE_BENCH "):
            req, dur_us, p50, p99, status, sock = (int(x) for x in line.split()[1:])
            return LoadResult("wrk", req, dur_us / 1e6, p50 / 1000, p99 / 1000, status, sock)
    raise RuntimeError(f"wrk printed no figures (exit {out.returncode}):\n{out.stdout}{out.stderr}")


async def _httpx_load(spec: dict[str, Any]) -> dict[str, Any]:
    """The fallback load generator's body (runs in its own process)."""
    concurrency = int(spec["connections"])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    body = spec.get("body")
    content = body.encode() if body is not None else None
    latencies: list[int] = []
    status_errors = 0
    socket_errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def worker(until: float, record: bool) -> None:
            nonlocal status_errors, socket_errors
            clock = time.perf_counter_ns
            while time.monotonic() < until:
                t0 = clock()
                try:
                    response = await client.request(
                        spec["method"], spec["url"], content=content, headers=spec["headers"]
                    )
                except httpx.HTTPError:
                    if record:
                        socket_errors += 1
                    continue
                elapsed = clock() - t0
                if record:
                    latencies.append(elapsed)
                    if response.status_code >= 400:
                        status_errors += 1

        if spec["warmup"] > 0:
            until = time.monotonic() + float(spec["warmup"])
            await asyncio.gather(*(worker(until, False) for _ in range(concurrency)))
        started = time.perf_counter()
        until = time.monotonic() + float(spec["seconds"])
        await asyncio.gather(*(worker(until, True) for _ in range(concurrency)))
        took = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": took,
        "p50_us": percentile(latencies, 0.5) / 1000 if latencies else math.nan,
        "p99_us": percentile(latencies, 0.99) / 1000 if latencies else math.nan,
        "status_errors": status_errors,
        "socket_errors": socket_errors,
    }


def run_httpx_load(
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    seconds: float,
    connections: int,
    warmup: float = 0.0,
) -> LoadResult:
    """The fallback: an asyncio + httpx load generator in a separate Python process."""
    spec = {
        "url": url,
        "method": method,
        "body": body,
        "headers": {"content-type": "application/json", **(headers or {})},
        "seconds": seconds,
        "warmup": warmup,
        "connections": connections,
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_gateway", "--loadgen-spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=seconds + warmup + 120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the httpx load generator failed:\n{out.stdout}{out.stderr}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return LoadResult(
        "httpx",
        int(data["requests"]),
        float(data["seconds"]),
        float(data["p50_us"]) / 1000,
        float(data["p99_us"]) / 1000,
        int(data["status_errors"]),
        int(data["socket_errors"]),
    )


@dataclass(frozen=True, slots=True)
class Throughput:
    livez: LoadResult
    checks: LoadResult
    audited: Counter[str]  # check entries in the audit trail by effect, after the run

    @property
    def ratio(self) -> float:
        return self.checks.rps / self.livez.rps if self.livez.rps else math.nan


def measure_throughput(
    server: Server,
    agent_key: str,
    *,
    seconds: float,
    warmup: float,
    connections: int,
    tool: str,
    directory: Path,
) -> Throughput:
    """/livez then POST /v1/checks on `server`, each after a warm-up, with `tool`."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {agent_key}"}
    livez = f"{server.url}/livez"
    checks = f"{server.url}/v1/checks"
    body = check_body()
    results: list[LoadResult] = []
    for url, method, payload, head in ((livez, "GET", None, {}), (checks, "POST", body, headers)):
        request: dict[str, Any] = {"method": method, "body": payload, "headers": head}
        if tool == "wrk":
            if warmup > 0:
                run_wrk(
                    url, **request, seconds=warmup, connections=connections, directory=directory
                )
            result = run_wrk(
                url, **request, seconds=seconds, connections=connections, directory=directory
            )
        else:
            result = run_httpx_load(
                url, **request, seconds=seconds, connections=connections, warmup=warmup
            )
        results.append(result)
    return Throughput(results[0], results[1], audit_counts(server.db_path))


# ---------------------------------------------------------------------------------------------
# 3. Approval round trips


@dataclass
class RoundTrips:
    """Per round trip: ns from the approve POST and from the check to the waiter returning."""

    approve_to_return_ns: list[int] = field(default_factory=list)
    check_to_return_ns: list[int] = field(default_factory=list)
    check_effects: Counter[str] = field(default_factory=Counter)
    final_states: Counter[str] = field(default_factory=Counter)

    def ms(self, which: list[int], q: float) -> float:
        return percentile(sorted(which), q) / 1e6 if which else math.nan


async def round_trips(url: str, keys: BenchKeys, n: int) -> RoundTrips:
    """`n` sequential round trips: check, park the wait, approve as alice, wait returns."""
    from clearance.sdk.remote import RemoteGate

    out = RoundTrips()
    gate = RemoteGate(url, keys.agent)
    approver = httpx.AsyncClient(
        base_url=url, headers={"authorization": f"Bearer {keys.alice}"}, timeout=30.0
    )
    clock = time.perf_counter_ns
    try:
        # Warm both connections (and the server's key cache) before timing anything.
        await gate.check("payments.transfer", ALLOW_PARAMS, actor=ACTOR)
        await approver.get("/v1/approvals", params={"limit": 1})
        for _ in range(n):
            t_check = clock()
            result = await gate.check("payments.transfer", APPROVE_PARAMS, actor=ACTOR)
            out.check_effects[result.effect] += 1
            if result.approval_id is None:
                raise AssertionError(f"the check opened no approval: {result}")
            waiter = asyncio.create_task(gate.wait(result.approval_id, timeout=30))
            await asyncio.sleep(WAIT_PARK_S)
            t_approve = clock()
            response = await approver.post(
                f"/v1/approvals/{result.approval_id}/decisions",
                json={"decision": "approve", "comment": "benchmark"},
            )
            if response.status_code != 200:
                waiter.cancel()
                raise AssertionError(f"approving failed: {response.status_code} {response.text}")
            status = await waiter
            t_done = clock()
            out.final_states[status.state] += 1
            out.approve_to_return_ns.append(t_done - t_approve)
            out.check_to_return_ns.append(t_done - t_check)
    finally:
        await approver.aclose()
        await gate.aclose()
    return out


# ---------------------------------------------------------------------------------------------
# 4. Memory with many pending approvals, and the soak


def pending_from_metrics(url: str) -> int:
    """The `clearance_approvals{state="pending"}` gauge of the server's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30.0).text
    for line in text.splitlines():
        if line.startswith('clearance_approvals{state="pending"}'):
            return int(float(line.split()[-1]))
    raise RuntimeError("no pending-approvals gauge in /metrics")


@dataclass
class Exercise:
    """What exercising the server did and saw."""

    check_effects: Counter[str] = field(default_factory=Counter)
    listed: dict[str, int] = field(default_factory=dict)
    list_ms: dict[str, float] = field(default_factory=dict)
    wait_states: Counter[str] = field(default_factory=Counter)
    pending_before: int = 0
    pending_after: int = 0


async def exercise(
    url: str, keys: BenchKeys, checks: int, *, list_limit: int = LIST_LIMIT
) -> Exercise:
    """Checks (half allowed, half opening approvals), a list of up to `list_limit` pending
    approvals for an admin, a manager and the agent (each timed), and a few waits (on
    pending and on decided approvals)."""
    out = Exercise(pending_before=await asyncio.to_thread(pending_from_metrics, url))
    auth = {
        name: {"authorization": f"Bearer {getattr(keys, name)}"}
        for name in ("agent", "alice", "ivan")
    }
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        opened: list[str] = []

        async def one(i: int) -> None:
            params = ALLOW_PARAMS if i % 2 else {**APPROVE_PARAMS, "amount": 600 + i}
            response = await client.post(
                "/v1/checks",
                json={"action": "payments.transfer", "params": params, "actor": ACTOR},
                headers=auth["agent"],
            )
            response.raise_for_status()
            data = response.json()
            out.check_effects[data["effect"]] += 1
            if data.get("approval_id"):
                opened.append(data["approval_id"])

        for start in range(0, checks, 8):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 8, checks))))
        for who in ("ivan", "alice", "agent"):
            started = time.perf_counter()
            response = await client.get(
                "/v1/approvals",
                params={"state": "pending", "limit": list_limit},
                headers=auth[who],
            )
            out.list_ms[who] = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            out.listed[who] = len(response.json()["approvals"])
        for approval_id in opened[:5]:
            response = await client.get(
                f"/v1/approvals/{approval_id}/wait", params={"timeout": 0.2}, headers=auth["agent"]
            )
            response.raise_for_status()
            out.wait_states[response.json()["state"]] += 1
        for approval_id in opened[5:8]:
            decided = await client.post(
                f"/v1/approvals/{approval_id}/decisions",
                json={"decision": "approve"},
                headers=auth["alice"],
            )
            decided.raise_for_status()
            response = await client.get(
                f"/v1/approvals/{approval_id}/wait", params={"timeout": 5}, headers=auth["agent"]
            )
            response.raise_for_status()
            out.wait_states[response.json()["state"]] += 1
    out.pending_after = await asyncio.to_thread(pending_from_metrics, url)
    return out


@dataclass
class Soak:
    """RSS samples (seconds since start, MB) and the operations the soak made."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def first(self) -> float:
        return self.samples[0][1]

    @property
    def last(self) -> float:
        return self.samples[-1][1]

    @property
    def peak(self) -> float:
        return max(v for _, v in self.samples)

    @property
    def slope(self) -> float:
        return slope_per_minute(self.samples)

    @property
    def slope_second_half(self) -> float:
        return slope_per_minute(self.samples[len(self.samples) // 2 :])


def soak_interval(seconds: float) -> float:
    """Seconds between RSS samples: about 20 samples, 1 s to 10 s apart."""
    return min(10.0, max(1.0, seconds / 20))


async def soak(server: Server, keys: BenchKeys, seconds: float, workers: int = 4) -> Soak:
    """Steady mixed load for `seconds` while sampling the server's VmRSS.

    Each worker loops: three allowed checks, one check that opens an approval, then a
    decision on it (alice approves two in three, bob denies the third) and the agent's wait
    on the decided approval; every 25th loop a manager lists pending approvals.
    """
    out = Soak()
    rng = random.Random(SEED)
    auth = {
        name: {"authorization": f"Bearer {getattr(keys, name)}"}
        for name in ("agent", "alice", "bob")
    }
    stop = time.monotonic() + seconds
    interval = soak_interval(seconds)
    t0 = time.monotonic()

    async def sampler() -> None:
        while True:
            out.samples.append((time.monotonic() - t0, server.rss_mb()))
            if time.monotonic() >= stop:
                return
            await asyncio.sleep(min(interval, max(0.0, stop - time.monotonic())))

    async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as client:

        async def call(kind: str, method: str, path: str, who: str, **kw: Any) -> Any:
            response = await client.request(method, path, headers=auth[who], **kw)
            if response.status_code >= 400:
                out.errors[f"{kind} {response.status_code}"] += 1
                return None
            out.ops[kind] += 1
            return response.json()

        def check(params: dict[str, Any]) -> dict[str, Any]:
            return {"json": {"action": "payments.transfer", "params": params, "actor": ACTOR}}

        params_seq = itertools.count()

        async def worker() -> None:
            loops = 0
            while time.monotonic() < stop:
                loops += 1
                for _ in range(3):
                    await call(
                        "check (allow)", "POST", "/v1/checks", "agent", **check(ALLOW_PARAMS)
                    )
                # A unique reference: the same transfer asked again after a denial would be
                # refused at once (the example remembers denials for an hour).
                params = {
                    "amount": rng.randrange(500, 5001),
                    "destination_country": "US",
                    "reference": f"soak-{next(params_seq)}",
                }
                data = await call(
                    "check (approval)", "POST", "/v1/checks", "agent", **check(params)
                )
                if data and data.get("approval_id"):
                    path = f"/v1/approvals/{data['approval_id']}"
                    if loops % 3:
                        vote = {"decision": "approve"}
                        who, kind = "alice", "decision (approve)"
                    else:
                        vote = {"decision": "deny", "comment": "soak: denied"}
                        who, kind = "bob", "decision (deny)"
                    await call(kind, "POST", f"{path}/decisions", who, json=vote)
                    await call("wait", "GET", f"{path}/wait", "agent", params={"timeout": 5})
                if loops % 25 == 0:
                    pending = {"state": "pending", "limit": 100}
                    await call("list", "GET", "/v1/approvals", "alice", params=pending)

        await asyncio.gather(sampler(), *(worker() for _ in range(workers)))
    return out


# ---------------------------------------------------------------------------------------------
# The run


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    header = ("measure", "figure", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    fmt = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:<{widths[2]}}}  {{}}"
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def run(sizes: Sizes, *, loadgen: str = "auto", label: str = "full") -> int:
    """Run the four parts at `sizes`; print progress, then the table."""
    tool = loadgen if loadgen != "auto" else ("wrk" if wrk_path() else "httpx")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {label} run, "
        f"load average at start {load_average()}"
    )
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="clearance-bench-gateway-") as tmp:
        directory = Path(tmp)

        # 1
        print(f"\n(1) embedded audited allow, {sizes.embedded:,} checks …", flush=True)
        emb = run_embedded(directory, sizes.embedded, warmup=sizes.warmup, callers=sizes.callers)
        if set(emb.effects) != {"allow"} or emb.audited_allow != emb.checks_made:
            raise AssertionError(
                f"not every check was allowed and audited: {emb.effects}, "
                f"{emb.audited_allow} audited of {emb.checks_made}"
            )
        share = emb.check.median_us - emb.evaluate.median_us
        print(
            f"    {emb.checks_made:,} checks, all allowed, all {emb.audited_allow:,} audited; "
            f"audit + SDK ≈ {share:.0f} µs of the {emb.check.median_us:.0f} µs median"
        )
        rows += [
            (
                "(1) gate.check, audited allow, 1 caller",
                f"median {emb.check.median_us:.1f} µs, p99 {emb.check.p99_us:.1f} µs, "
                f"mean {emb.check.mean_us:.1f} µs",
                f"median < {TARGET_CHECK_US:g} µs",
                _verdict(emb.check.median_us < TARGET_CHECK_US),
            ),
            (
                "    gateway.check (no SDK layer)",
                f"median {emb.gateway_check.median_us:.1f} µs, "
                f"p99 {emb.gateway_check.p99_us:.1f} µs",
                "",
                "",
            ),
            (
                "    engine.evaluate alone",
                f"median {emb.evaluate.median_us:.1f} µs, p99 {emb.evaluate.p99_us:.1f} µs",
                f"median < {TARGET_EVALUATE_US:g} µs",
                _verdict(emb.evaluate.median_us < TARGET_EVALUATE_US),
            ),
            (
                "    raw sqlite3: the 5 statements of 1 audit commit",
                f"median {emb.floor.median_us:.1f} µs, p99 {emb.floor.p99_us:.1f} µs",
                "(machine floor)",
                "",
            ),
            (
                "    audit + SDK share of the median",
                f"{share:.1f} µs ({100 * share / emb.check.median_us:.0f}%)",
                "",
                "",
            ),
            (
                f"(1) gate.check, {emb.callers} concurrent callers",
                f"mean {emb.concurrent_us:.1f} µs per check (wall / {emb.concurrent_checks:,})",
                "",
                "",
            ),
        ]

        # 2 and 3
        db_a = directory / "server-a.db"
        keys_a, _ = prepare_database(db_a)
        print(
            f"\n(2) HTTP throughput with {tool}, {sizes.connections} connections, "
            f"{sizes.http_seconds:g} s an endpoint after {sizes.http_warmup:g} s warm-up …",
            flush=True,
        )
        with running(db_a, directory / "server-a.log") as server:
            thr = measure_throughput(
                server,
                keys_a.agent,
                seconds=sizes.http_seconds,
                warmup=sizes.http_warmup,
                connections=sizes.connections,
                tool=tool,
                directory=directory,
            )
            bad = thr.livez.status_errors + thr.checks.status_errors
            if bad or set(thr.audited) != {"allow"} or thr.audited["allow"] < thr.checks.requests:
                raise AssertionError(
                    f"throughput run not clean: {bad} error answers, audit {dict(thr.audited)} "
                    f"for {thr.checks.requests} checks\n{server.tail()}"
                )
            rss_a = server.rss_mb()
            print(
                f"    /livez {thr.livez.requests:,} requests; /v1/checks {thr.checks.requests:,} "
                f"(all 200, {thr.audited['allow']:,} allow entries audited, "
                f"{thr.checks.socket_errors + thr.livez.socket_errors} socket errors); "
                f"server RSS {rss_a:.0f} MB"
            )
            print(
                "    caveat: 2 cores shared by the server (1 Python process), the load "
                "generator and anything else running"
            )
            print(f"\n(3) approval round trips, {sizes.round_trips:,} …", flush=True)
            trips = asyncio.run(round_trips(server.url, keys_a, sizes.round_trips))
        if trips.final_states != Counter({"approved": sizes.round_trips}):
            raise AssertionError(f"round trips did not all end approved: {trips.final_states}")
        print(
            f"    all {sizes.round_trips:,} approved; the bench pauses {WAIT_PARK_S * 1000:g} ms "
            "between parking the wait and approving (included in check → return)"
        )
        rows += [
            (
                f"(2) GET /livez ({tool}, ceiling)",
                f"{thr.livez.rps:,.0f} req/s, p99 {thr.livez.p99_ms:.1f} ms",
                "",
                "",
            ),
            (
                f"(2) POST /v1/checks allow ({tool})",
                f"{thr.checks.rps:,.0f} req/s, p99 {thr.checks.p99_ms:.1f} ms",
                "",
                "",
            ),
            (
                "(2) checks / livez",
                f"{100 * thr.ratio:.0f}%",
                f"≥ {100 * TARGET_HTTP_RATIO:.0f}% of the ceiling",
                _verdict(thr.ratio >= TARGET_HTTP_RATIO),
            ),
        ]
        for name, samples in (
            ("approve POST → waiter returns", trips.approve_to_return_ns),
            ("check → waiter returns", trips.check_to_return_ns),
        ):
            p99 = trips.ms(samples, 0.99)
            rows.append(
                (
                    f"(3) round trip, {name}",
                    f"p50 {trips.ms(samples, 0.5):.1f} ms, p99 {p99:.1f} ms",
                    f"p99 < {TARGET_ROUND_TRIP_P99_MS:g} ms",
                    _verdict(p99 < TARGET_ROUND_TRIP_P99_MS),
                )
            )

        # 4
        db_b = directory / "server-b.db"
        print(f"\n(4) memory: inserting {sizes.pending:,} pending approvals …", flush=True)
        keys_b, insert_s = prepare_database(db_b, pending=sizes.pending)
        print(
            f"    bulk insert (rows + 2 audit entries each, as Gateway.check builds them, "
            f"batches of {INSERT_BATCH:,}): {insert_s:.1f} s, "
            f"{db_b.stat().st_size / 1e6:.0f} MB database"
        )
        with running(db_b, directory / "server-b.log") as server:
            rss_started = server.rss_mb()
            ex = asyncio.run(exercise(server.url, keys_b, sizes.exercise_checks))
            if ex.pending_before != sizes.pending:
                raise AssertionError(f"{ex.pending_before} pending seen, {sizes.pending} made")
            rss_exercised = server.rss_mb()
            print(
                f"    server started at {rss_started:.0f} MB; exercised ({sizes.exercise_checks} "
                f"checks {dict(ex.check_effects)}, lists {ex.listed}, waits "
                f"{dict(ex.wait_states)}): {rss_exercised:.0f} MB; "
                f"{ex.pending_after:,} pending after"
            )
            print(
                "    GET /v1/approvals?state=pending&limit=500 took "
                + ", ".join(f"{who} {ms:,.0f} ms" for who, ms in ex.list_ms.items())
            )
            soaked: Soak | None = None
            if sizes.soak_seconds > 0:
                print(f"    soak {sizes.soak_seconds:g} s of mixed load …", flush=True)
                soaked = asyncio.run(soak(server, keys_b, sizes.soak_seconds))
                print(
                    f"    ops {dict(soaked.ops)}; errors {dict(soaked.errors) or 'none'}; "
                    f"{len(soaked.samples)} RSS samples every "
                    f"{soak_interval(sizes.soak_seconds):g} s: "
                    + " ".join(f"{v:.0f}" for _, v in soaked.samples)
                )
        rows.append(
            (
                f"(4) server RSS, {sizes.pending:,} pending, exercised",
                f"{rss_exercised:.0f} MB (at start {rss_started:.0f} MB)",
                f"< {TARGET_RSS_MB:g} MB",
                _verdict(rss_exercised < TARGET_RSS_MB),
            )
        )
        rows.append(
            (
                f"    list {LIST_LIMIT} pending (admin / manager / agent)",
                " / ".join(f"{ms:,.0f}" for ms in ex.list_ms.values()) + " ms",
                "",
                "",
            )
        )
        if soaked is not None:
            rows.append(
                (
                    f"(4) soak {sizes.soak_seconds:g} s, RSS first / last / max",
                    f"{soaked.first:.0f} / {soaked.last:.0f} / {soaked.peak:.0f} MB",
                    f"< {TARGET_RSS_MB:g} MB",
                    _verdict(soaked.peak < TARGET_RSS_MB),
                )
            )
            rows.append(
                (
                    "    RSS slope, whole soak / second half",
                    f"{soaked.slope:+.2f} / {soaked.slope_second_half:+.2f} MB/min",
                    f"flat (≤ {TARGET_SLOPE_MB_MIN:g} MB/min, 2nd half)",
                    _verdict(soaked.slope_second_half <= TARGET_SLOPE_MB_MIN),
                )
            )

    print(
        f"\nGateway benchmark ({label} run; SQLite; load generator {tool}; "
        f"load average at end {load_average()})"
    )
    print(_table(rows))
    print(
        "caveat: one shared 2-core machine runs the server, the load generator and this "
        "process; figures vary with the load average."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a fast run (about a minute)")
    parser.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="SECONDS",
        help="soak duration (default 60 s, 10 s with --quick; DESIGN.md's is 3600)",
    )
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "httpx"), default="auto", help="load generator"
    )
    parser.add_argument("--loadgen-spec", help=argparse.SUPPRESS)  # the httpx subprocess
    # `python -m bench gateway --quick` passes the benchmark's name along: ignore it.
    args, _ = parser.parse_known_args(list(argv) if argv is not None else sys.argv[1:])
    if args.loadgen_spec:
        print(json.dumps(asyncio.run(_httpx_load(json.loads(args.loadgen_spec)))))
        return 0
    sizes = QUICK if args.quick else FULL
    if args.soak is not None:
        sizes = dataclasses.replace(sizes, soak_seconds=args.soak)
    return run(sizes, loadgen=args.loadgen, label="quick" if args.quick else "full")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
