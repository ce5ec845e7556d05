"""Operating the risk signals: pruning (gateway, CLI, server), `clearance risk show`, metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from clearance.cli import app as cli
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.risk.tables import risk_state
from clearance.server import app as server_app
from clearance.server.app import create_app
from clearance.server.metrics import Metrics
from clearance.store.database import Database
from clearance.testing import FrozenClock

POLICY = """
policies:
  default: deny
  rules:
    - id: new-place
      actions: [pay]
      when: risk.new_geo
      effect: deny
    - id: ok
      actions: [pay, look]
      effect: allow
risk:
  retention_days: 30
"""
LONG_AGO = datetime(2020, 3, 2, 9, 0, tzinfo=UTC)


def rows(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(risk_state)).scalar_one())


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "risk.yaml"
    path.write_text(POLICY)
    return path


def pay(user: str, geo: str) -> Request:
    return Request("pay", {"amount": 10}, {"user": user, "agent": "bot"}, {"geo": geo})


def look(user: str, geo: str) -> Request:
    """Allowed from anywhere: it makes the country known (a denied request does not)."""
    return Request("look", {}, {"user": user, "agent": "bot"}, {"geo": geo})


async def test_the_gateway_prunes_only_what_expired(policy: Path, db_url: str) -> None:
    """Rows past their retention go; a subject seen since keeps its rows, and the signals
    read the same before and after (a pruned country is new again, as it was already)."""
    clock = FrozenClock(LONG_AGO)
    gateway = Gateway.open(policy, database_url=db_url, clock=clock)
    try:
        assert (await gateway.check(pay("old", "US"))).decision.effect.value == "deny"
        assert (await gateway.check(pay("old", "US"))).decision.effect.value == "deny"
        assert (await gateway.check(look("old", "US"))).decision.effect.value == "allow"
        assert (await gateway.check(pay("old", "US"))).decision.effect.value == "allow"
        clock.advance(days=31)
        assert (await gateway.check(pay("recent", "FR"))).decision.effect.value == "deny"
        assert (await gateway.check(look("recent", "FR"))).decision.effect.value == "allow"
        await gateway.fold_risk()  # the rows are written behind the checks
        before = rows(gateway.db)
        assert before > 0
        pruned = await gateway.prune_risk()
        # old's counters and sighting, and the agent's first counters, expired; recent's stay
        assert pruned is not None and pruned > 0
        assert rows(gateway.db) == before - pruned
        assert (await gateway.prune_risk()) == 0  # nothing more has expired
        assert (await gateway.check(pay("recent", "FR"))).decision.effect.value == "allow"
        assert (await gateway.check(pay("old", "US"))).decision.effect.value == "deny"
    finally:
        await gateway.aclose()


async def test_a_policy_without_risk_prunes_nothing(tmp_path: Path, db_url: str) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(POLICY.replace("risk:\n  retention_days: 30\n", ""))
    gateway = Gateway.open(path, database_url=db_url)
    try:
        assert await gateway.prune_risk() is None
    finally:
        await gateway.aclose()


def test_the_cli_prunes_and_says_how_many(policy: Path, tmp_path: Path) -> None:
    """`clearance risk prune` deletes rows written long ago (by a clock in 2020) and says so;
    on a policy with no risk section it fails with a plain message."""
    url = f"sqlite:///{tmp_path}/c.db"

    async def old_checks() -> int:
        gateway = Gateway.open(policy, database_url=url, clock=FrozenClock(LONG_AGO))
        try:
            await gateway.check(pay("old", "US"))
            await gateway.check(pay("other", "DE"))
            await gateway.fold_risk()  # the rows are written behind the checks
            return rows(gateway.db)
        finally:
            await gateway.aclose()

    written = asyncio.run(old_checks())
    assert written > 0
    runner = CliRunner()
    result = runner.invoke(cli, ["risk", "prune", "--config", str(policy), "--database-url", url])
    assert result.exit_code == 0, result.output
    assert f"Pruned {written:,} expired risk rows." in result.output
    result = runner.invoke(cli, ["risk", "prune", "--config", str(policy), "--database-url", url])
    assert result.exit_code == 0 and "Pruned 0 expired risk rows." in result.output
    plain = tmp_path / "plain.yaml"
    plain.write_text(POLICY.replace("risk:\n  retention_days: 30\n", ""))
    result = runner.invoke(cli, ["risk", "prune", "--config", str(plain), "--database-url", url])
    assert result.exit_code == 1
    assert "no risk: section" in result.output


def fail_once_then_count(
    monkeypatch: pytest.MonkeyPatch, gateway: Gateway, name: str
) -> list[int | None]:
    """Make `gateway.<name>()` fail its first call (the database is down), then record what
    each later call returns; the list it returns fills as the calls come (None: failed)."""
    calls: list[int | None] = []
    real = getattr(gateway, name)

    async def counted() -> int | None:
        if not calls:
            calls.append(None)
            raise RuntimeError("the database is down")
        found = await real()
        calls.append(found)
        return found

    monkeypatch.setattr(gateway, name, counted)
    return calls


async def test_the_server_prunes_in_the_background(
    policy: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's housekeeping task prunes soon after the start and keeps going after a
    failed round (the database may be down for a while)."""
    monkeypatch.setattr(server_app, "RISK_PRUNE_FIRST_S", 0.0)
    monkeypatch.setattr(server_app, "RISK_PRUNE_EVERY_S", 0.01)
    gateway = Gateway.open(policy, database_url=db_url, clock=FrozenClock(LONG_AGO))
    calls = fail_once_then_count(monkeypatch, gateway, "prune_risk")
    try:
        await gateway.check(pay("old", "US"))
        await gateway.fold_risk()  # the rows are written behind the checks
        assert rows(gateway.db) > 0
        gateway.clock.advance(days=400)  # type: ignore[attr-defined]
        metrics = Metrics()
        state = SimpleNamespace(gateway=gateway, metrics=metrics)
        task = asyncio.create_task(server_app._risk_prune_loop(SimpleNamespace(state=state)))  # type: ignore[arg-type]
        for _ in range(500):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert calls[0] is None and calls[1] is not None and calls[1] > 0
        assert rows(gateway.db) == 0
        assert f"clearance_risk_pruned_rows_total {float(calls[1])}" in metrics.render().decode()
    finally:
        await gateway.aclose()


async def test_pruning_while_checks_are_written(policy: Path, tmp_path: Path) -> None:
    """On SQLite, a prune running beside a busy writer waits for the write lock instead of
    failing (a read transaction may not upgrade to a write once another has committed)."""
    clock = FrozenClock(LONG_AGO)
    gateway = Gateway.open(policy, database_url=f"sqlite:///{tmp_path}/busy.db", clock=clock)
    try:
        for i in range(300):
            await gateway.check(pay(f"old-{i}", "US"))
        clock.advance(days=400)
        await gateway.fold_risk()  # the rows are written behind the checks
        before = rows(gateway.db)

        async def checks() -> None:
            for i in range(300):
                await gateway.check(pay(f"new-{i % 7}", "FR"))
                await asyncio.sleep(0)

        pruned, _ = await asyncio.gather(gateway.prune_risk(), checks())
        assert pruned is not None and pruned > 0
        assert (await gateway.prune_risk()) == 0
        assert rows(gateway.db) < before
    finally:
        await gateway.aclose()


def test_risk_show_tells_what_is_known_about_a_subject(policy: Path, tmp_path: Path) -> None:
    """`clearance risk show` lists a person's requests per window and what they are known
    for, a payee's bank-details change and an agent's denials; JSON and tables agree."""
    url = f"sqlite:///{tmp_path}/show.db"
    policy.write_text(
        POLICY.replace(
            "    - id: ok\n",
            "    - id: no-refunds\n      actions: [refund]\n      effect: deny\n    - id: ok\n",
        ).replace(
            "actions: [pay, look]\n      effect: allow",
            "actions: [pay, look, change_terms]\n      effect: allow",
        )
        + "  patterns:\n    payee_bank_change:\n      change_actions: [change_terms]\n"
    )

    async def checks() -> None:
        gateway = Gateway.open(policy, database_url=url)
        try:
            for amount in (120, 80):
                if amount == 80:  # the country is known once a request from it is allowed
                    await gateway.check(look("alice", "us"))
                await gateway.check(
                    Request(
                        "pay",
                        {"amount": amount, "payee_id": "acme"},
                        {"user": "alice", "agent": "bot"},
                        {"geo": "us", "device_id": "laptop-7"},
                    )
                )
            await gateway.check(
                Request(
                    "change_terms",
                    {"supplier_id": "acme", "changes": ["bank_details"]},
                    {"user": "bob", "agent": "bot"},
                )
            )
            denied = await gateway.check(Request("refund", {}, {"user": "bob", "agent": "bot"}))
            assert denied.decision.effect.value == "deny"
        finally:
            await gateway.aclose()

    asyncio.run(checks())
    runner = CliRunner()

    def show(subject: str, *extra: str) -> str:
        args = ["risk", "show", subject, "--config", str(policy), "--database-url", url, *extra]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        return result.output

    import json

    alice = json.loads(show("alice", "--json"))
    assert alice["subject"] == "alice"
    # The first payment came from a new country and was denied: counted, its amount not kept.
    assert [(r["action"], r["as"], r["last_hour"], r["amount_24h"]) for r in alice["requests"]] == [
        ("look", "requester", 1, 0.0),
        ("pay", "requester", 2, 80.0),
    ]
    assert sorted((k["kind"], k["value"]) for k in alice["known"]) == [
        ("country", "US"),
        ("device", "laptop-7"),
        ("payee", "acme"),
    ]
    assert alice["bank_details_changed"] is None and alice["recent_denials"] == []
    acme = json.loads(show("acme", "--json"))
    assert acme["bank_details_changed"] is not None and acme["requests"] == []
    bot = json.loads(show("bot", "--json"))
    assert {(r["action"], r["as"]) for r in bot["requests"]} == {
        ("look", "agent"),
        ("pay", "agent"),
        ("change_terms", "agent"),
        ("refund", "agent"),
    }
    assert len(bot["recent_denials"]) == 2  # alice's first payment and bob's refund
    table = show("alice")
    assert "What the risk signals know about alice" in table
    assert "pay" in table and "laptop-7" in table and "US" in table
    assert "Bank details changed" in show("acme")
    assert "Recent denied or blocked requests: 2" in show("bot")
    assert "Nothing is stored about zed" in show("zed")


async def test_pruning_forgets_only_the_deleted_rows_from_the_cache(
    policy: Path, db_url: str
) -> None:
    """An expired row leaves the row cache with the store (it still holds old amounts); the
    rows of subjects seen since stay cached, so pruning causes no burst of store reads."""
    from clearance.risk.store import ACTOR_ACTION

    clock = FrozenClock(LONG_AGO)
    gateway = Gateway.open(policy, database_url=db_url, clock=clock)
    try:
        await gateway.check(pay("old", "US"))
        clock.advance(days=31)
        await gateway.check(pay("recent", "US"))
        old, recent = (ACTOR_ACTION, "old", "pay"), (ACTOR_ACTION, "recent", "pay")
        cache = gateway.risk.cache
        assert set(cache.get_many([old, recent])) == {old, recent}
        assert (await gateway.prune_risk() or 0) > 0
        kept = cache.get_many([old, recent])
        # old's row is gone with its amounts: not kept, or kept as absent (old's rows were
        # all read at once, so the cache knows that it has no other)
        assert kept.get(old, (0, None))[1] is None
        assert kept[recent][1] is not None
    finally:
        await gateway.aclose()


async def test_metrics_show_the_risk_cache(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/metrics shows how many risk rows are in memory and how often lookups found them
    there (to size the cache), and the checks counted but not yet folded; with no risk
    section there is nothing about risk."""
    monkeypatch.setattr("clearance.risk.journal.FOLD_INTERVAL_S", 3600.0)  # no fold by time
    import httpx

    gateway = Gateway.open(policy, database_url=f"sqlite:///{tmp_path}/m.db")
    try:
        app = create_app(gateway, scheduler=False, inbox=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            await gateway.check(pay("alice", "US"))
            await gateway.check(pay("alice", "US"))
            text = (await client.get("/metrics")).text
        cache = gateway.risk.cache
        assert cache.hits > 0 and cache.misses > 0
        assert f"clearance_risk_cache_rows {float(len(cache))}" in text
        assert f"clearance_risk_cache_whole {float(cache.whole)}" in text
        assert f'clearance_risk_cache_lookups_total{{result="hit"}} {float(cache.hits)}' in text
        assert f'clearance_risk_cache_lookups_total{{result="miss"}} {float(cache.misses)}' in text
        assert "clearance_risk_unfolded_checks 2.0" in text  # counted, not yet stored
        await gateway.fold_risk()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            text = (await client.get("/metrics")).text
        assert "clearance_risk_unfolded_checks 0.0" in text
        assert "clearance_risk_folded_checks_total 2.0" in text
    finally:
        await gateway.aclose()
    plain = tmp_path / "plain.yaml"
    plain.write_text(POLICY.replace("risk:\n  retention_days: 30\n", ""))
    gateway = Gateway.open(plain, database_url=f"sqlite:///{tmp_path}/p.db")
    try:
        app = create_app(gateway, scheduler=False, inbox=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            text = (await client.get("/metrics")).text
        assert "clearance_risk_cache" not in text
        assert "clearance_risk_pruned_rows_total 0.0" in text
    finally:
        await gateway.aclose()


async def test_the_server_folds_in_the_background(
    policy: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's fold task stores the checks no later check came to fold, and another
    process's left behind; a failed round does not stop it."""
    monkeypatch.setattr(server_app, "RISK_FOLD_EVERY_S", 0.01)
    clock = FrozenClock(LONG_AGO)
    other = Gateway.open(policy, database_url=db_url, clock=clock, chain_id="other")
    await other.check(pay("bob", "US"))  # then it stops without folding
    await other.writer.aclose()
    await other.db.aclose()
    gateway = Gateway.open(policy, database_url=db_url, clock=clock)
    calls = fail_once_then_count(monkeypatch, gateway, "fold_risk")
    try:
        state = SimpleNamespace(gateway=gateway, metrics=Metrics())
        task = asyncio.create_task(server_app._risk_fold_loop(SimpleNamespace(state=state)))  # type: ignore[arg-type]
        for _ in range(500):
            if rows(gateway.db) > 0 and len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert calls[0] is None and sum(c or 0 for c in calls) == 1  # bob's check, once
        assert rows(gateway.db) > 0
    finally:
        await gateway.aclose()


async def test_a_policy_reload_keeps_the_unfolded_checks(
    policy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload replaces the risk engine; the checks the old one had not folded still count,
    and the rows it kept stay kept (a check after the reload reads nothing), unless the new
    policy sizes the cache differently."""
    monkeypatch.setattr("clearance.risk.journal.FOLD_INTERVAL_S", 3600.0)  # no fold by time
    gateway = Gateway.open(policy, database_url=f"sqlite:///{tmp_path}/r.db")
    try:
        await gateway.check(look("carol", "US"))
        for _ in range(3):
            await gateway.check(pay("carol", "US"))
        before = gateway.risk
        kept = len(before.cache)
        ok, _ = await gateway.reload(by="test")
        assert ok and gateway.risk is not before and gateway.risk.journal.pending == 4
        assert kept and len(gateway.risk.cache) == kept and len(before.cache) == 0
        misses = gateway.risk.cache.misses
        result = await gateway.check(pay("carol", "US"))
        assert result.decision.effect.value == "allow"
        assert gateway.risk.cache.misses == misses  # from the rows kept: no read
        with gateway.db.connect() as conn:
            risk = gateway.risk.assess(conn, pay("carol", "US"), gateway.clock())
        assert risk["velocity_1h"] == 5
        policy.write_text(POLICY + "  cache_rows: 50\n")  # another size: a cache of its own
        ok, _ = await gateway.reload(by="test")
        assert ok and gateway.risk.cache.size == 50 and len(gateway.risk.cache) == 0
        assert (await gateway.check(pay("carol", "US"))).decision.effect.value == "allow"
        with gateway.db.connect() as conn:
            risk = gateway.risk.assess(conn, pay("carol", "US"), gateway.clock())
        assert risk["velocity_1h"] == 6  # five paid, and this one
    finally:
        await gateway.aclose()
