"""The embedded gate: the whole gateway in this process (policy, SQLite store, audit)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..approvals.service import ApprovalError
from ..gateway import Gateway
from ..policy import Request
from ..server.schemas import approval_out
from ..store.errors import StoreUnavailable
from .base import BaseGate
from .errors import GatewayError, GatewayUnavailable


class LocalGate(BaseGate):
    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    @classmethod
    def open(
        cls,
        config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        database_url: str | None = None,
    ) -> LocalGate:
        return cls(Gateway.open(config, database_url=database_url))

    async def _check(
        self,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        context: dict[str, Any],
        labels: list[str],
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        with _translated():
            result = await self.gateway.check(
                Request(action, params, actor, context, tuple(labels)),
                idempotency_key=idempotency_key,
                channel="sdk",
            )
        return result.to_json()

    async def _get(self, approval_id: str) -> dict[str, Any]:
        with _translated():
            stored = await self.gateway.approvals.get(approval_id)
        return approval_out(stored, self.gateway.policy.directory).model_dump()

    async def _wait(self, approval_id: str, timeout: float) -> dict[str, Any]:
        with _translated():
            stored = await self.gateway.approvals.wait(approval_id, timeout)
        return approval_out(stored, self.gateway.policy.directory).model_dump()

    async def _release(
        self, approval_id: str, action: str, params: dict[str, Any], actor: dict[str, str]
    ) -> dict[str, Any]:
        with _translated():
            stored = await self.gateway.release(approval_id, action, params, actor)
        return approval_out(stored, self.gateway.policy.directory).model_dump()

    async def _report(self, approval_id: str, state: str, result: str | None) -> dict[str, Any]:
        with _translated():
            stored = await self.gateway.approvals.report_result(approval_id, state, result)
        return approval_out(stored, self.gateway.policy.directory).model_dump()

    async def _cancel(self, approval_id: str, reason: str) -> dict[str, Any]:
        with _translated():
            stored = await self.gateway.approvals.cancel(approval_id, reason)
        return approval_out(stored, self.gateway.policy.directory).model_dump()

    async def _report_check(
        self,
        decision_id: str,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        state: str,
        result: str | None,
    ) -> dict[str, Any]:
        with _translated():
            return await self.gateway.report_check_result(
                decision_id=decision_id,
                request=Request(action=action, params=params, actor=actor),
                state=state,
                result=result,
                channel="sdk",
            )

    async def decide(
        self, approval_id: str, *, person: str, decision: str, comment: str | None = None
    ) -> dict[str, Any]:
        """Record an approver's vote directly (embedded use, tests and scripts)."""
        with _translated():
            stored = await self.gateway.approvals.decide(
                approval_id, person=person, decision=decision, comment=comment, channel="sdk"
            )
        return approval_out(stored, self.gateway.policy.directory).model_dump()

    async def aclose(self) -> None:
        await self.gateway.aclose()


class _translated:
    """Translate the gateway's errors into the SDK's at the boundary."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, ApprovalError):
            raise GatewayError(exc.status, exc.code, exc.message) from exc
        if isinstance(exc, StoreUnavailable):
            raise GatewayUnavailable(f"the audit store is unavailable: {exc}") from exc
