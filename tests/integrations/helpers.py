"""Shared helpers of the integration tests: the policy, the upstream server, an approver."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clearance.sdk.local import LocalGate

HERE = Path(__file__).resolve().parent
POLICY = HERE / "policy.yaml"
UPSTREAM = HERE / "upstream_server.py"


async def decide_next(
    gate: LocalGate, decision: str, *, person: str = "alice", comment: str | None = None
) -> str:
    """Wait until one approval is pending, then decide it as `person`; returns its id."""
    for _ in range(500):
        pending = await gate.gateway.approvals.list(state="pending")
        if pending:
            approval_id = pending[0].approval.id
            await gate.decide(approval_id, person=person, decision=decision, comment=comment)
            return approval_id
        await asyncio.sleep(0.01)
    raise AssertionError("no approval became pending")
