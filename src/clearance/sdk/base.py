"""What every gate does, written once over five primitives that local and remote implement."""

from __future__ import annotations

import abc
import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from .errors import (
    ActionBlocked,
    AlreadyExecuted,
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalExpired,
    ClearanceError,
    GatewayError,
)
from .syncrun import SyncRunner
from .types import Approval, ApprovalStatus, CheckResult

P = ParamSpec("P")
log = logging.getLogger("clearance.sdk")
R = TypeVar("R")
RESULT_LIMIT = 4000


class BaseGate(abc.ABC):
    """The SDK's interface. Use `Gate.local(...)` or `Gate.remote(...)` to get one."""

    def __init__(self) -> None:
        self._runner: SyncRunner | None = None

    # -- primitives ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def _check(
        self,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        context: dict[str, Any],
        labels: list[str],
        idempotency_key: str | None,
    ) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _get(self, approval_id: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _wait(self, approval_id: str, timeout: float) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _release(
        self, approval_id: str, action: str, params: dict[str, Any], actor: dict[str, str]
    ) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _report(self, approval_id: str, state: str, result: str | None) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _cancel(self, approval_id: str, reason: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _report_check(
        self,
        decision_id: str,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        state: str,
        result: str | None,
    ) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections. The gate cannot be used afterwards."""

    # -- the interface -------------------------------------------------------------------------
    async def check(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        actor: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
        labels: Sequence[str] = (),
        idempotency_key: str | None = None,
    ) -> CheckResult:
        """Ask the policy. Opens a pending approval when the effect is `approve`."""
        data = await self._check(
            action,
            dict(params or {}),
            dict(actor or {}),
            dict(context or {}),
            list(labels),
            idempotency_key,
        )
        return CheckResult.from_json(data)

    async def get(self, approval_id: str) -> ApprovalStatus:
        return ApprovalStatus.from_json(await self._get(approval_id))

    async def wait(self, approval_id: str, timeout: float | None = None) -> ApprovalStatus:
        """Wait (without polling) until the approval is decided, or `timeout` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 30.0 if deadline is None else min(30.0, deadline - time.monotonic())
            status = ApprovalStatus.from_json(await self._wait(approval_id, max(0.0, remaining)))
            if status.is_final or (deadline is not None and time.monotonic() >= deadline):
                return status

    async def require_approval(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        actor: Mapping[str, str] | None = None,
        context: Mapping[str, Any] | None = None,
        labels: Sequence[str] = (),
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Approval:
        """Check, and when a human must decide, wait for them.

        Returns the go-ahead; raises `ApprovalDenied`, `ActionBlocked` or `ApprovalExpired`
        (with the reasons) otherwise. `timeout` bounds the wait; when it passes first the
        request stays pending and `ApprovalExpired` is raised for this call.
        """
        result = await self.check(
            action,
            params,
            actor=actor,
            context=context,
            labels=labels,
            idempotency_key=idempotency_key,
        )
        if result.effect == "allow":
            return Approval(action, "allow", result.decision_id, result.reasons)
        if result.effect == "block":
            raise ActionBlocked(
                "blocked by policy", reasons=result.reasons, decision_id=result.decision_id
            )
        if result.effect != "approve" or result.approval_id is None:
            raise ApprovalDenied(
                "denied by policy", reasons=result.reasons, decision_id=result.decision_id
            )
        status = await self.wait(result.approval_id, timeout)
        return _outcome(status, result)

    async def report_result(
        self, approval_id: str, *, succeeded: bool, result: Any = None
    ) -> ApprovalStatus:
        """Record what happened when the approved action ran."""
        text = None if result is None else str(result)[:RESULT_LIMIT]
        data = await self._report(approval_id, "succeeded" if succeeded else "failed", text)
        return ApprovalStatus.from_json(data)

    async def report_allowed_result(
        self,
        decision_id: str,
        action: str,
        params: Mapping[str, Any],
        actor: Mapping[str, str] | None = None,
        *,
        succeeded: bool,
        result: Any = None,
    ) -> None:
        """Record what happened when an action the policy allowed (no approval) ran, so
        the audit trail shows it next to the check."""
        text = None if result is None else str(result)[:RESULT_LIMIT]
        state = "succeeded" if succeeded else "failed"
        await self._report_check(decision_id, action, dict(params), dict(actor or {}), state, text)

    def guard(
        self,
        action: str,
        *,
        actor: Mapping[str, str] | None = None,
        params: Callable[..., Mapping[str, Any]] | None = None,
        idempotency_key: Callable[..., str | None] | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function so it runs only when the policy (and people) say so, at most
        once per approved request. Works on `async def` and plain functions.

        The check's params are the call's bound arguments (or `params(*args, **kwargs)`).
        With `idempotency_key(*args, **kwargs)`, a retried call — even after a crash and
        restart — finds its earlier approval instead of asking again, and an approval that
        was already used raises `AlreadyExecuted` instead of running twice.
        """

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            signature = inspect.signature(fn)

            async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                if params is not None:
                    call_params = dict(params(*args, **kwargs))
                else:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    call_params = {
                        k: v for k, v in bound.arguments.items() if k not in ("self", "cls")
                    }
                key = idempotency_key(*args, **kwargs) if idempotency_key else None
                who = dict(actor or {})
                approval = await self.require_approval(
                    action, call_params, actor=who, idempotency_key=key, timeout=timeout
                )
                if approval.id is not None:
                    await self.claim(approval.id, action, call_params, who)
                try:
                    value = fn(*args, **kwargs)
                    if inspect.isawaitable(value):
                        value = await value
                except BaseException as exc:
                    if approval.id is not None:
                        await self.report_result(approval.id, succeeded=False, result=repr(exc))
                    else:
                        await self._report_allowed(approval, action, call_params, who, exc)
                    raise
                if approval.id is not None:
                    await self.report_result(approval.id, succeeded=True, result=value)
                else:
                    await self._report_allowed(approval, action, call_params, who, value)
                return value

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    return await guarded(*args, **kwargs)

                return cast(Callable[P, R], async_wrapper)

            @functools.wraps(fn)
            def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return self._sync(guarded(*args, **kwargs))

            return cast(Callable[P, R], sync_wrapper)

        return decorate

    async def claim(
        self,
        approval_id: str,
        action: str,
        params: Mapping[str, Any],
        actor: Mapping[str, str] | None = None,
    ) -> ApprovalStatus:
        """Claim an approved request for the one call about to run (`guard` does this).

        The gateway checks that `action`, `params` and `actor` are exactly what was approved
        and marks the approval used; a second claim raises `AlreadyExecuted`, so an approved
        action runs at most once even when a caller retries after a crash.
        """
        try:
            data = await self._release(approval_id, action, dict(params), dict(actor or {}))
        except GatewayError as exc:
            if exc.code == "already_released":
                raise AlreadyExecuted(
                    "this approval was already used once; not running again",
                    reasons=(exc.message,),
                    approval_id=approval_id,
                ) from None
            raise
        return ApprovalStatus.from_json(data)

    async def _report_allowed(
        self,
        approval: Approval,
        action: str,
        params: dict[str, Any],
        actor: dict[str, str],
        outcome: Any,
    ) -> None:
        """`guard` on an allowed call: record what it did. The action has already run, so a
        gateway that cannot take the report is logged, not raised (the check is audited)."""
        failed = isinstance(outcome, BaseException)
        try:
            await self.report_allowed_result(
                approval.decision_id,
                action,
                params,
                actor,
                succeeded=not failed,
                result=repr(outcome) if failed else outcome,
            )
        except ClearanceError:
            log.warning("could not report the result of check %s", approval.decision_id)

    async def cancel(self, approval_id: str, reason: str) -> ApprovalStatus:
        """Withdraw a pending request this agent no longer needs (the call that asked is
        gone): approvers stop being asked, and the audit trail says why."""
        if not reason or not reason.strip():
            raise ValueError("say why the request is withdrawn (reason)")
        return ApprovalStatus.from_json(await self._cancel(approval_id, reason))

    # -- for callers that are not async --------------------------------------------------------
    def _sync(self, coro: Awaitable[R]) -> R:
        if self._runner is None:
            self._runner = SyncRunner()
        return self._runner.run(coro)

    def check_sync(
        self, action: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> CheckResult:
        return self._sync(self.check(action, params, **kw))

    def require_approval_sync(
        self, action: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> Approval:
        return self._sync(self.require_approval(action, params, **kw))

    def close(self) -> None:
        """Close a gate used from synchronous code."""
        if self._runner is not None:
            self._runner.run(self.aclose())
            self._runner.stop()
            self._runner = None
        else:
            asyncio.run(self.aclose())


def _outcome(status: ApprovalStatus, result: CheckResult) -> Approval:
    reason = (status.decided_reason,) if status.decided_reason else ()
    if status.state == "approved":
        return Approval(
            status.action,
            "approve",
            result.decision_id,
            result.reasons,
            status.id,
            status.approvers,
        )
    if status.state == "denied":
        raise ApprovalDenied(
            "denied by an approver",
            reasons=reason or result.reasons,
            approval_id=status.id,
            decision_id=result.decision_id,
        )
    if status.state == "cancelled":
        raise ApprovalCancelled("the request was cancelled", reasons=reason, approval_id=status.id)
    if status.state == "expired":
        raise ApprovalExpired(
            "nobody decided in time", reasons=result.reasons, approval_id=status.id
        )
    raise ApprovalExpired(
        "stopped waiting before anyone decided (the request is still pending)",
        reasons=result.reasons,
        approval_id=status.id,
    )
