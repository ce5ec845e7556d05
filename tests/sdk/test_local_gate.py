"""The embedded gate: require_approval, guard (at most once), errors, sync use."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clearance import (
    ActionBlocked,
    AlreadyExecuted,
    ApprovalDenied,
    ApprovalExpired,
    Gate,
)
from clearance.sdk.local import LocalGate

from ..fixtures import ENTERPRISE

CAROL = {"user": "carol", "agent": "billing-bot"}


@pytest.fixture
async def gate(tmp_path: Path) -> LocalGate:
    g = Gate.local(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/c.db")
    yield g  # type: ignore[misc]
    await g.aclose()


async def approve_when_pending(gate: LocalGate, person: str = "alice") -> str:
    """Wait until an approval is pending, then approve it as `person`."""
    for _ in range(200):
        pending = await gate.gateway.approvals.list(state="pending")
        if pending:
            approval_id = pending[0].approval.id
            await gate.decide(approval_id, person=person, decision="approve", comment="fine")
            return approval_id
        await asyncio.sleep(0.01)
    raise AssertionError("no approval appeared")


async def test_allowed_without_a_human(gate: LocalGate) -> None:
    """An action the policy allows returns at once, without an approval id."""
    approval = await gate.require_approval(
        "payments.transfer", {"amount": 100, "destination_country": "US"}, actor=CAROL
    )
    assert approval.effect == "allow" and approval.id is None


async def test_waits_for_a_human_and_returns_who_approved(gate: LocalGate) -> None:
    """require_approval waits (no polling) until a manager approves, then returns."""
    waiting = asyncio.create_task(
        gate.require_approval(
            "payments.transfer", {"amount": 2000, "destination_country": "US"}, actor=CAROL
        )
    )
    approval_id = await approve_when_pending(gate)
    approval = await asyncio.wait_for(waiting, 5)
    assert approval.id == approval_id and approval.approvers == ("alice",)


async def test_denials_blocks_and_expiry_raise_with_reasons(gate: LocalGate) -> None:
    """Policy deny, block, human deny and a timed-out wait raise with readable reasons."""
    with pytest.raises(ApprovalDenied, match="default is deny"):
        await gate.require_approval("hr.fire_everyone", actor=CAROL)
    with pytest.raises(ActionBlocked, match="Suspicious"):
        await gate.require_approval(
            "payments.transfer",
            {"amount": 1, "destination_country": "US"},
            actor=CAROL,
            context={"suspicious": True},
        )
    waiting = asyncio.create_task(
        gate.require_approval(
            "payments.transfer", {"amount": 2000, "destination_country": "US"}, actor=CAROL
        )
    )
    for _ in range(200):
        pending = await gate.gateway.approvals.list(state="pending")
        if pending:
            break
        await asyncio.sleep(0.01)
    await gate.decide(pending[0].approval.id, person="bob", decision="deny", comment="not today")
    with pytest.raises(ApprovalDenied, match="not today") as info:
        await waiting
    assert info.value.approval_id == pending[0].approval.id
    with pytest.raises(ApprovalExpired, match="still pending"):
        await gate.require_approval(
            "payments.transfer",
            {"amount": 2500, "destination_country": "US"},
            actor=CAROL,
            timeout=0.05,
        )


async def test_guard_runs_the_body_once_and_reports_the_result(gate: LocalGate) -> None:
    """A guarded async function runs after approval, once, and its result is audited."""
    calls: list[int] = []

    @gate.guard("payments.transfer", actor=CAROL, idempotency_key=lambda **kw: "order-7")
    async def transfer(amount: int, destination_country: str) -> str:
        calls.append(amount)
        return f"sent {amount}"

    task = asyncio.create_task(transfer(amount=2000, destination_country="US"))
    approval_id = await approve_when_pending(gate)
    assert await asyncio.wait_for(task, 5) == "sent 2000"
    assert calls == [2000]
    stored = await gate.gateway.approvals.get(approval_id)
    assert stored.approval.execution_state == "succeeded"
    assert stored.approval.execution_result == "sent 2000"
    # A retry after a crash (same idempotency key) finds the used approval and does not run.
    with pytest.raises(AlreadyExecuted):
        await transfer(amount=2000, destination_country="US")
    assert calls == [2000]


async def test_guard_reports_a_failure(gate: LocalGate) -> None:
    """When the guarded body raises, the failure is recorded and the error propagates."""

    @gate.guard("payments.transfer", actor=CAROL)
    async def transfer(amount: int, destination_country: str) -> None:
        raise RuntimeError("bank offline")

    task = asyncio.create_task(transfer(2000, "US"))
    approval_id = await approve_when_pending(gate)
    with pytest.raises(RuntimeError, match="bank offline"):
        await task
    stored = await gate.gateway.approvals.get(approval_id)
    assert stored.approval.execution_state == "failed"
    assert "bank offline" in (stored.approval.execution_result or "")


async def test_guard_refuses_without_running(gate: LocalGate) -> None:
    """A denied guarded call never runs its body."""
    ran = []

    @gate.guard("data.write", actor=CAROL)
    async def write(classification: str) -> None:
        ran.append(classification)

    with pytest.raises(ApprovalDenied, match="read-only"):
        await write("general")
    assert ran == []


def test_sync_guard_on_a_plain_function(tmp_path: Path) -> None:
    """A plain (sync) function can be guarded; allowed calls run directly."""
    gate = Gate.local(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/s.db")

    @gate.guard("payments.transfer", actor=CAROL)
    def transfer(amount: int, destination_country: str) -> str:
        return "ok"

    try:
        assert transfer(100, "US") == "ok"
        with pytest.raises(ApprovalDenied):
            gate.require_approval_sync("hr.fire_everyone", actor=CAROL)
    finally:
        gate.close()


async def test_approval_releases_only_the_exact_call(gate: LocalGate) -> None:
    """An approval for one amount cannot be used to release another amount."""
    from clearance.sdk.errors import GatewayError

    task = asyncio.create_task(
        gate.require_approval(
            "payments.transfer", {"amount": 2000, "destination_country": "US"}, actor=CAROL
        )
    )
    approval_id = await approve_when_pending(gate)
    await task
    with pytest.raises(GatewayError, match="binding_mismatch"):
        await gate._release(
            approval_id, "payments.transfer", {"amount": 9000, "destination_country": "US"}, CAROL
        )
