"""The remote gate over HTTP: same behaviour, fail closed, and no server imports."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from clearance import ApprovalDenied, GatewayUnavailable
from clearance.gateway import Gateway
from clearance.sdk.remote import RemoteGate
from clearance.server.app import create_app

from ..fixtures import Keys


async def test_remote_require_approval_round_trip(gateway: Gateway, keys: Keys) -> None:
    """Through HTTP, require_approval waits on the long poll and returns the decision."""
    app = create_app(gateway, scheduler=False, inbox=False)
    gate = RemoteGate("http://test", keys.agent, transport=httpx.ASGITransport(app=app))
    person = RemoteGate("http://test", keys.alice, transport=httpx.ASGITransport(app=app))
    try:
        task = asyncio.create_task(
            gate.require_approval(
                "payments.transfer",
                {"amount": 2000, "destination_country": "US"},
                actor={"user": "carol"},
            )
        )
        for _ in range(200):
            listed = await person._http().get("/v1/approvals?state=pending")
            if listed.json()["approvals"]:
                break
            await asyncio.sleep(0.01)
        approval_id = listed.json()["approvals"][0]["id"]
        await person._http().post(
            f"/v1/approvals/{approval_id}/decisions", json={"decision": "approve"}
        )
        approval = await asyncio.wait_for(task, 5)
        assert approval.id == approval_id and approval.approvers == ("alice",)
        with pytest.raises(ApprovalDenied):
            await gate.require_approval("hr.fire_everyone", actor={"user": "carol"})
    finally:
        await gate.aclose()
        await person.aclose()


async def test_unreachable_gateway_fails_closed() -> None:
    """No gateway: the call raises GatewayUnavailable instead of letting the action run."""
    gate = RemoteGate("http://127.0.0.1:1", "clr_x_y", retry_for=0.2)
    ran = []

    @gate.guard("payments.transfer")
    async def transfer(amount: int) -> None:
        ran.append(amount)

    with pytest.raises(GatewayUnavailable):
        await transfer(5)
    assert ran == []
    await gate.aclose()


def test_remote_client_imports_no_server_dependency() -> None:
    """Gate.remote needs httpx only: no SQLAlchemy, FastAPI, CEL or aiosqlite is imported."""
    code = (
        "import sys; from clearance import Gate; g = Gate.remote('http://x', 'clr_a_b'); "
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'starlette', 'aiosqlite', 'asyncpg', "
        "'cel_expr_python', 'uvicorn', 'alembic') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
