"""`claim` and `cancel` on both gates, and adapters withdrawing a request their caller gave up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from clearance import AlreadyExecuted, Gate
from clearance.gateway import Gateway
from clearance.integrations._calls import ToolCall, settle
from clearance.sdk.base import BaseGate
from clearance.sdk.errors import GatewayError
from clearance.sdk.local import LocalGate
from clearance.sdk.remote import RemoteGate
from clearance.server.app import create_app

from ..fixtures import ENTERPRISE, Keys

CAROL = {"user": "carol", "agent": "billing-bot"}
TRANSFER = {"amount": 2000, "destination_country": "US"}


@pytest.fixture(params=["local", "remote"])
async def gates(
    request: pytest.FixtureRequest, tmp_path: Path, gateway: Gateway, keys: Keys
) -> AsyncIterator[tuple[BaseGate, LocalGate]]:
    """(the gate under test, an embedded gate on the same store for deciding)."""
    if request.param == "local":
        local = Gate.local(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/own.db")
        yield local, local
        await local.aclose()
        return
    app = create_app(gateway, scheduler=False, inbox=False)
    remote = RemoteGate("http://test", keys.agent, transport=httpx.ASGITransport(app=app))
    yield remote, LocalGate(gateway)
    await remote.aclose()


async def _pending(gate: BaseGate) -> str:
    result = await gate.check("payments.transfer", TRANSFER, actor=CAROL)
    assert result.effect == "approve" and result.approval_id is not None
    return result.approval_id


async def test_claim_runs_an_approval_once(gates: tuple[BaseGate, LocalGate]) -> None:
    """A claim with the approved call succeeds once; a second raises AlreadyExecuted."""
    gate, decider = gates
    approval_id = await _pending(gate)
    await decider.decide(approval_id, person="alice", decision="approve")
    status = await gate.claim(approval_id, "payments.transfer", TRANSFER, CAROL)
    assert status.state == "approved" and status.released
    with pytest.raises(AlreadyExecuted):
        await gate.claim(approval_id, "payments.transfer", TRANSFER, CAROL)


async def test_claim_of_a_different_call_is_refused(gates: tuple[BaseGate, LocalGate]) -> None:
    """An approval for $2,000 cannot be claimed for $20,000."""
    gate, decider = gates
    approval_id = await _pending(gate)
    await decider.decide(approval_id, person="alice", decision="approve")
    with pytest.raises(GatewayError):
        await gate.claim(approval_id, "payments.transfer", {**TRANSFER, "amount": 20000}, CAROL)


async def test_cancel_withdraws_a_pending_request(gates: tuple[BaseGate, LocalGate]) -> None:
    """A withdrawn request is cancelled, with the reason; an empty reason is refused."""
    gate, _ = gates
    approval_id = await _pending(gate)
    with pytest.raises(ValueError, match="reason"):
        await gate.cancel(approval_id, "  ")
    status = await gate.cancel(approval_id, "the user closed the chat")
    assert status.state == "cancelled"
    assert "the user closed the chat" in (status.decided_reason or "")


@pytest.mark.parametrize("withdraw", [True, False])
async def test_a_cancelled_wait_withdraws_only_when_asked(tmp_path: Path, withdraw: bool) -> None:
    """An adapter whose caller gives up withdraws the request (MCP), or leaves it pending."""
    gate = Gate.local(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/c.db")
    try:
        approval_id = await _pending(gate)
        call = ToolCall("payments.transfer", TRANSFER, CAROL, "call-1")
        waiting = asyncio.create_task(
            settle(gate, call, approval_id, poll=0.05, withdraw_on_cancel=withdraw)
        )
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(100):
            state = (await gate.get(approval_id)).state
            if state != "pending" or not withdraw:
                break
            await asyncio.sleep(0.01)
        assert state == ("cancelled" if withdraw else "pending")
    finally:
        await gate.aclose()
