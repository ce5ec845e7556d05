"""One tool call through Clearance, written once for every integration.

An adapter turns its framework's tool call into a `ToolCall`, then: `ask` (the policy's
answer, opening a pending approval when people must decide), `settle` (wait for them),
`run_cleared` (claim the exact approved call once, run it, report what happened). Every
refusal becomes a `Refusal` whose text a model can read; nothing here imports a framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..sdk.base import BaseGate
from ..sdk.errors import AlreadyExecuted, ClearanceError, GatewayError, GatewayUnavailable
from ..sdk.types import ApprovalStatus, CheckResult

T = TypeVar("T")
log = logging.getLogger("clearance.integrations")

#: How often a waiting adapter wakes to re-read the approval (and report progress) when the
#: gate's own wait did not return earlier. Decisions made in this process return at once.
DEFAULT_POLL_S = 5.0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A framework's tool call, as Clearance sees it."""

    action: str
    params: dict[str, Any]
    actor: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None


class Refusal(Exception):
    """The call must not run. `str(refusal)` is written for the model that made the call."""

    def __init__(self, message: str, *, approval_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.approval_id = approval_id


class StillPending(Refusal):
    """The wait ended before people decided: the request is still open in Clearance."""


def actor_of(values: Mapping[str, object | None]) -> dict[str, str]:
    """An actor mapping with the empty entries dropped and every value a string."""
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


async def ask(gate: BaseGate, call: ToolCall) -> CheckResult:
    """The policy's answer. Raises `Refusal` for deny and block, and when Clearance cannot
    answer (unreachable, or it refused the request): fail closed."""
    try:
        result = await gate.check(
            call.action,
            call.params,
            actor=call.actor,
            idempotency_key=call.idempotency_key,
        )
    except GatewayUnavailable as exc:
        raise Refusal(
            f"Clearance could not be reached, so {call.action} did not run: {exc}"
        ) from exc
    except GatewayError as exc:
        raise Refusal(
            f"Clearance refused the request for {call.action} ({exc.code}): {exc.message}"
        ) from exc
    if result.effect == "allow":
        return result
    if result.effect == "approve" and result.approval_id is not None:
        state = str(result.raw.get("state", "pending"))
        if state in ("pending", "approved"):
            return result
        # Asked again (same idempotency key) after people decided: say what they decided.
        try:
            status = await gate.get(result.approval_id)
        except ClearanceError:
            raise Refusal(
                _state_text(call.action, state, result.reasons), approval_id=result.approval_id
            ) from None
        approved_or_refuse(call, status)
        return result
    verb = "blocked" if result.effect == "block" else "denied"
    raise Refusal(f"Clearance {verb} {call.action}: {_reasons(result.reasons)}")


def is_pending(result: CheckResult) -> bool:
    return result.effect == "approve" and result.raw.get("state", "pending") == "pending"


async def settle(
    gate: BaseGate,
    call: ToolCall,
    approval_id: str,
    *,
    timeout: float | None = None,
    poll: float = DEFAULT_POLL_S,
    on_wait: Callable[[float, ApprovalStatus], Awaitable[None]] | None = None,
    withdraw_on_cancel: bool = False,
) -> ApprovalStatus:
    """Wait until people decide. Returns the approved status; raises `Refusal` for a denial,
    an expiry, a cancellation, or when `timeout` seconds pass first (the request then stays
    pending in Clearance). `on_wait(elapsed, status)` is called after each `poll` seconds.

    With `withdraw_on_cancel`, a caller that gives up (this task is cancelled: an MCP client
    cancelled the call) withdraws the request, so nobody is asked to approve a call that can
    no longer run."""
    try:
        return await _settle(gate, call, approval_id, timeout, poll, on_wait)
    except asyncio.CancelledError:
        if withdraw_on_cancel:
            task = asyncio.ensure_future(
                gate.cancel(approval_id, f"the caller cancelled {call.action}")
            )
            _withdrawals.add(task)  # a task nobody holds may be collected before it runs
            task.add_done_callback(_withdrawn)
            with contextlib.suppress(BaseException):  # cancelled again while it runs: fine
                await asyncio.shield(task)
        raise


_withdrawals: set[asyncio.Task[Any]] = set()


def _withdrawn(task: asyncio.Task[Any]) -> None:
    _withdrawals.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not withdraw a cancelled call's request: %s", task.exception())


async def _settle(
    gate: BaseGate,
    call: ToolCall,
    approval_id: str,
    timeout: float | None,
    poll: float,
    on_wait: Callable[[float, ApprovalStatus], Awaitable[None]] | None,
) -> ApprovalStatus:
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        step = poll if timeout is None else max(0.0, min(poll, timeout - elapsed))
        try:
            status = await gate.wait(approval_id, timeout=step)
        except ClearanceError as exc:
            raise Refusal(
                f"Clearance could not tell whether {call.action} was approved, so it did not "
                f"run: {exc}",
                approval_id=approval_id,
            ) from exc
        if status.is_final:
            return approved_or_refuse(call, status)
        elapsed = time.monotonic() - started
        if timeout is not None and elapsed >= timeout:
            raise StillPending(
                f"No decision on {call.action} within {timeout:g}s; the request {approval_id} "
                "is still pending in Clearance and the action did not run. Ask again later.",
                approval_id=approval_id,
            )
        if on_wait is not None:
            await on_wait(elapsed, status)


def approved_or_refuse(call: ToolCall, status: ApprovalStatus) -> ApprovalStatus:
    """`status` when it is approved, else the `Refusal` that says what people decided."""
    if status.state == "approved":
        return status
    reasons = (status.decided_reason,) if status.decided_reason else status.reasons
    raise Refusal(_state_text(call.action, status.state, reasons), approval_id=status.id)


async def run_cleared(
    gate: BaseGate,
    call: ToolCall,
    approval_id: str | None,
    body: Callable[[], Awaitable[T]],
    outcome: Callable[[T], tuple[bool, str]],
    *,
    decision_id: str | None = None,
) -> T:
    """Run `body` for a cleared call. For an approved request: claim it first (only the
    exact call approved, and only once), then report the outcome to the audit trail. For a
    call the policy allowed outright, report the outcome against the check's `decision_id`."""
    if approval_id is None:
        if decision_id is None:
            return await body()
        try:
            allowed = await body()
        except BaseException as exc:
            await report_allowed(gate, call, decision_id, False, f"{type(exc).__name__}: {exc}")
            raise
        succeeded, text = outcome(allowed)
        await report_allowed(gate, call, decision_id, succeeded, text)
        return allowed
    await claim(gate, call, approval_id)
    try:
        value = await body()
    except BaseException as exc:
        await report(gate, approval_id, False, f"{type(exc).__name__}: {exc}")
        raise
    succeeded, text = outcome(value)
    await report(gate, approval_id, succeeded, text)
    return value


async def claim(gate: BaseGate, call: ToolCall, approval_id: str) -> None:
    """Claim the approved call: only the exact call approved, and only once."""
    try:
        await gate.claim(approval_id, call.action, call.params, call.actor)
    except AlreadyExecuted as exc:
        raise Refusal(
            f"The approval {approval_id} for {call.action} was already used once; "
            "the action did not run again.",
            approval_id=approval_id,
        ) from exc
    except ClearanceError as exc:
        raise Refusal(
            f"Clearance did not release {call.action}, so it did not run: {exc}",
            approval_id=approval_id,
        ) from exc


async def report(gate: BaseGate, approval_id: str, succeeded: bool, text: str) -> None:
    """Record what the call did. The action already ran: failing to record it must not turn
    its result into an error (its release is in the audit trail either way)."""
    try:
        await gate.report_result(approval_id, succeeded=succeeded, result=text)
    except ClearanceError:
        log.warning("could not report the result of approval %s", approval_id, exc_info=True)


async def report_allowed(
    gate: BaseGate, call: ToolCall, decision_id: str, succeeded: bool, text: str
) -> None:
    """As `report`, for a call the policy allowed without an approval."""
    try:
        await gate.report_allowed_result(
            decision_id, call.action, call.params, call.actor, succeeded=succeeded, result=text
        )
    except ClearanceError:
        log.warning("could not report the result of check %s", decision_id, exc_info=True)


def _state_text(action: str, state: str, reasons: tuple[str, ...] | list[str]) -> str:
    if state == "denied":
        head = f"An approver denied {action}"
    elif state == "expired":
        head = f"Nobody approved {action} in time"
    elif state == "cancelled":
        head = f"The request for {action} was cancelled"
    else:
        head = f"{action} is {state}"
    return f"{head}: {_reasons(reasons)}" if reasons else f"{head}."


def _reasons(reasons: tuple[str, ...] | list[str]) -> str:
    return "; ".join(reasons) if reasons else "no reason given"
