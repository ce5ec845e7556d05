"""The gateway on SQLite and on PostgreSQL: one code path, the same guarantees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from clearance.approvals.service import ApprovalError
from clearance.audit.export import verify_store
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app

from ..conftest import auth
from ..fixtures import ENTERPRISE, make_keys

TRANSFER = Request(
    "payments.transfer", {"amount": 2000, "destination_country": "US"}, {"user": "carol"}
)


@pytest.fixture
async def gw(db_url: str) -> Gateway:
    gateway = Gateway.open(ENTERPRISE, database_url=db_url)
    yield gateway  # type: ignore[misc]
    await gateway.aclose()


async def test_check_decide_and_wait(gw: Gateway) -> None:
    """Create, wait, approve, release and report work the same on both databases."""
    result = await gw.check(TRANSFER, idempotency_key="same")
    again = await gw.check(TRANSFER, idempotency_key="same")
    assert result.approval is not None and again.approval is not None
    approval_id = result.approval.approval.id
    assert again.approval.approval.id == approval_id
    waiter = asyncio.create_task(gw.approvals.wait(approval_id, 10))
    await asyncio.sleep(0.05)
    await gw.approvals.decide(approval_id, person="bob", decision="approve")
    assert (await asyncio.wait_for(waiter, 5)).approval.state == "approved"
    await gw.approvals.release(approval_id, result.approval.approval.binding_hash)
    done = await gw.approvals.report_result(approval_id, "succeeded", "ok")
    assert done.approval.execution_state == "succeeded"
    report = verify_store(gw.db)
    assert report.ok and report.entries_checked >= 6


async def test_racing_approvers_produce_exactly_one_outcome(gw: Gateway) -> None:
    """Alice approves while Bob denies, concurrently: one wins, the other is refused."""
    approval_id = (await gw.check(TRANSFER)).approval.approval.id  # type: ignore[union-attr]
    outcomes = await asyncio.gather(
        gw.approvals.decide(approval_id, person="alice", decision="approve"),
        gw.approvals.decide(approval_id, person="bob", decision="deny", comment="no"),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, ApprovalError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code == "already_decided"
    final = await gw.approvals.get(approval_id)
    assert final.approval.state == winners[0].approval.state
    assert len(final.approval.votes) == 1


async def test_racing_gateways_on_one_database(db_url: str) -> None:
    """Two gateways (as two server instances) deciding one approval: exactly one outcome."""
    one = Gateway.open(ENTERPRISE, database_url=db_url, chain_id="one")
    two = Gateway.open(ENTERPRISE, database_url=db_url, chain_id="two")
    try:
        approval_id = (await one.check(TRANSFER)).approval.approval.id  # type: ignore[union-attr]
        outcomes = await asyncio.gather(
            one.approvals.decide(approval_id, person="alice", decision="approve"),
            two.approvals.decide(approval_id, person="bob", decision="deny", comment="no"),
            return_exceptions=True,
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1, outcomes
        assert verify_store(one.db).ok
    finally:
        await one.aclose()
        await two.aclose()


async def test_unreachable_database_fails_closed_with_503(pg_url: str, tmp_path: Path) -> None:
    """With PostgreSQL gone, a check answers 503 with a reason and nothing is half-written."""
    gateway = Gateway.open(ENTERPRISE, database_url=pg_url)
    keys = make_keys(gateway)
    app = create_app(gateway, scheduler=False, inbox=False)
    name = make_url(pg_url).database
    admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            ok = await client.post(
                "/v1/checks",
                json={
                    "action": "payments.transfer",
                    "params": {"amount": 10, "destination_country": "US"},
                },
                headers=auth(keys.agent),
            )
            assert ok.status_code == 200
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            for params in (
                {"amount": 10, "destination_country": "US"},
                {"amount": 2000, "destination_country": "US"},
            ):
                down = await client.post(
                    "/v1/checks",
                    json={"action": "payments.transfer", "params": params},
                    headers=auth(keys.agent),
                )
                assert down.status_code == 503, down.text
                assert down.json()["error"] == "store_unavailable"
            health = await client.get("/healthz")
            assert health.status_code == 503
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert verify_store(gateway.db).ok
            with psycopg.connect(make_url(pg_url).render_as_string(hide_password=False)) as conn:
                rows = conn.execute("SELECT count(*) FROM approvals").fetchone()
                assert rows is not None and rows[0] == 0
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
        await gateway.aclose()
