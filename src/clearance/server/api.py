"""The HTTP API (`/v1/...`): thin translations between JSON and the gateway."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ..approvals.records import StoredApproval
from ..audit.export import entry_as_dict, export_overrides, iter_entries, verify_store
from ..canonical import canonical_json
from ..channels import deliveries
from ..gateway import Gateway
from ..identity import mfa
from ..policy import Request as PolicyRequest
from ..store.reads import read
from .auth import Principal, authenticate
from .errors import HTTPProblem
from .schemas import (
    ApprovalList,
    ApprovalOut,
    CancelIn,
    CheckIn,
    CheckResultIn,
    CheckResultOut,
    DecisionIn,
    DecisionOut,
    ErrorOut,
    ReleaseIn,
    ReloadOut,
    ResultIn,
    VerifyOut,
    approval_out,
)
from .timeparse import parse_time

Caller = Annotated[Principal, Depends(authenticate)]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 503)
}
router = APIRouter(prefix="/v1", responses=ERRORS)

ADMIN_ROLES = {"admin"}
AUDIT_ROLES = {"admin", "auditor"}


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _roles(gateway: Gateway, caller: Principal) -> set[str]:
    if caller.kind != "person":
        return set()
    person = gateway.policy.directory.get(caller.subject)
    return set(person.roles) if person else set()


def _require_person(caller: Principal, what: str) -> None:
    if caller.kind != "person":
        raise HTTPProblem(403, "forbidden", f"an agent key cannot {what}; use a person's key")


def _require_agent(caller: Principal, what: str) -> None:
    if caller.kind != "agent":
        raise HTTPProblem(403, "forbidden", f"only an agent key can {what}")


def vote_proof(
    request: Request, *, totp: str | None = None, session_id: str | None = None
) -> mfa.VoteProof:
    """What a vote brings for a step-up stage: a code, the inbox session, and the approver's
    location from the trusted header (`server.geo_header`), when one is configured."""
    gateway = _gateway(request)
    try:
        geo = mfa.header_geo(request.headers, gateway.approvals.mfa_settings())
    except mfa.MfaError:
        geo = None  # misconfigured: the vote's own check refuses it with the reason
    return mfa.VoteProof(totp=(totp or "").strip() or None, session_id=session_id, geo=geo)


def may_see(gateway: Gateway, caller: Principal, stored: StoredApproval) -> bool:
    a = stored.approval
    if caller.kind == "agent":
        return stored.agent == caller.subject
    if _roles(gateway, caller) & AUDIT_ROLES:
        return True
    who = caller.subject
    involved = {p for s in a.plan.stages for r in s.requirements for p in r.approvers}
    involved.update(delegate for _, delegate in a.delegations)  # they stand in for approvers
    return who == a.requester or who in involved or any(v.person == who for v in a.votes)


async def _visible(gateway: Gateway, caller: Principal, approval_id: str) -> StoredApproval:
    stored = await gateway.approvals.get(approval_id)
    if not may_see(gateway, caller, stored):
        # The same answer as for an unknown id: existence is not revealed.
        raise HTTPProblem(404, "not_found", f"no approval with id {approval_id!r}")
    return stored


@router.post("/checks", response_model=DecisionOut, summary="Evaluate an action")
async def create_check(body: CheckIn, request: Request, caller: Caller) -> dict[str, Any]:
    """Evaluate the policy. When the effect is `approve`, a pending approval is created (the
    same `idempotency_key` returns the same approval, never a second one)."""
    _require_agent(caller, "request a check")
    gateway = _gateway(request)
    actor = dict(body.actor)
    if actor.get("agent", caller.subject) != caller.subject:
        raise HTTPProblem(403, "forbidden", "actor.agent must be the agent this key belongs to")
    actor["agent"] = caller.subject
    started = time.perf_counter()
    result = await gateway.check(
        PolicyRequest(
            action=body.action,
            params=body.params,
            actor=actor,
            context=body.context,
            labels=tuple(body.labels),
        ),
        idempotency_key=body.idempotency_key,
        agent=caller.subject,
    )
    request.app.state.metrics.observe_check(result.decision.effect.value, started)
    return result.to_json()


@router.post(
    "/checks/{decision_id}/result",
    response_model=CheckResultOut,
    status_code=201,
    summary="Report the outcome of an allowed action",
)
async def report_check_result(
    decision_id: str, body: CheckResultIn, request: Request, caller: Caller
) -> dict[str, Any]:
    """What happened when an action the policy allowed (without an approval) ran: one audit
    entry naming the check's decision id, next to the check's own. Approved actions report
    on `/approvals/{id}/result`."""
    _require_agent(caller, "report a result")
    if body.decision_id != decision_id:
        raise HTTPProblem(422, "invalid_request", "decision_id in the body and the path differ")
    actor = dict(body.actor)
    if actor.get("agent", caller.subject) != caller.subject:
        raise HTTPProblem(403, "forbidden", "actor.agent must be the agent this key belongs to")
    actor["agent"] = caller.subject
    gateway = _gateway(request)
    return await gateway.report_check_result(
        decision_id=decision_id,
        request=PolicyRequest(action=body.action, params=body.params, actor=actor),
        state=body.state,
        result=body.result,
    )


@router.get("/approvals", response_model=ApprovalList, summary="List approvals")
async def list_approvals(
    request: Request,
    caller: Caller,
    state: Annotated[
        str | None, Query(pattern="^(pending|approved|denied|expired|cancelled)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ApprovalList:
    """Approvals the caller may see: an agent its own; a person the ones they are part of."""
    gateway = _gateway(request)
    agent = caller.subject if caller.kind == "agent" else None
    found = await gateway.approvals.list(state=state, agent=agent, limit=limit)
    directory = gateway.policy.directory
    return ApprovalList(
        approvals=[approval_out(s, directory) for s in found if may_see(gateway, caller, s)]
    )


@router.get("/approvals/{approval_id}", response_model=ApprovalOut, summary="Read an approval")
async def get_approval(approval_id: str, request: Request, caller: Caller) -> ApprovalOut:
    gateway = _gateway(request)
    stored = await _visible(gateway, caller, approval_id)
    sent = await read(gateway.db, lambda c: deliveries.for_approval(c, approval_id))
    return approval_out(stored, gateway.policy.directory, sent)


@router.get(
    "/approvals/{approval_id}/wait", response_model=ApprovalOut, summary="Wait for a decision"
)
async def wait_approval(
    approval_id: str,
    request: Request,
    caller: Caller,
    timeout: Annotated[float, Query(ge=0, le=300)] = 30,
) -> ApprovalOut:
    """Long poll: answers as soon as the approval is decided, or after `timeout` seconds
    with its current (pending) state."""
    gateway = _gateway(request)
    await _visible(gateway, caller, approval_id)
    stored = await gateway.approvals.wait(approval_id, timeout)
    return approval_out(stored, gateway.policy.directory)


@router.post(
    "/approvals/{approval_id}/decisions", response_model=ApprovalOut, summary="Approve or deny"
)
async def decide(
    approval_id: str, body: DecisionIn, request: Request, caller: Caller
) -> ApprovalOut:
    """An approver's vote. Agent keys can never decide. A denial needs a reason."""
    _require_person(caller, "decide an approval")
    gateway = _gateway(request)
    await _visible(gateway, caller, approval_id)
    stored = await gateway.approvals.decide(
        approval_id,
        person=caller.subject,
        decision=body.decision,
        comment=body.comment,
        channel="api",
        proof=vote_proof(request, totp=body.totp),
    )
    return approval_out(stored, gateway.policy.directory)


@router.post(
    "/approvals/{approval_id}/release",
    response_model=ApprovalOut,
    summary="Claim the approved call (once)",
)
async def release(approval_id: str, body: ReleaseIn, request: Request, caller: Caller) -> Any:
    """The agent is about to run the approved action: only the exact call that was approved
    (same action, params and actor) is released, and only once."""
    _require_agent(caller, "release an approved action")
    gateway = _gateway(request)
    await _visible(gateway, caller, approval_id)
    actor = dict(body.actor)
    actor.setdefault("agent", caller.subject)
    stored = await gateway.release(approval_id, body.action, body.params, actor)
    return approval_out(stored, gateway.policy.directory)


@router.post(
    "/approvals/{approval_id}/result", response_model=ApprovalOut, summary="Report the outcome"
)
async def report_result(
    approval_id: str, body: ResultIn, request: Request, caller: Caller
) -> ApprovalOut:
    """What happened when the approved action ran (recorded once, in the audit trail)."""
    _require_agent(caller, "report a result")
    gateway = _gateway(request)
    await _visible(gateway, caller, approval_id)
    stored = await gateway.approvals.report_result(approval_id, body.state, body.result)
    return approval_out(stored, gateway.policy.directory)


@router.post(
    "/approvals/{approval_id}/cancel", response_model=ApprovalOut, summary="Withdraw a request"
)
async def cancel(approval_id: str, body: CancelIn, request: Request, caller: Caller) -> Any:
    _require_agent(caller, "cancel its request")
    gateway = _gateway(request)
    await _visible(gateway, caller, approval_id)
    stored = await gateway.approvals.cancel(approval_id, body.reason, by=caller.subject)
    return approval_out(stored, gateway.policy.directory)


@router.get("/audit", summary="Export the audit trail (JSON lines)")
async def audit(
    request: Request,
    caller: Caller,
    since: str | None = None,
    until: str | None = None,
    section: Annotated[str, Query(pattern="^(all|overrides)$")] = "all",
) -> StreamingResponse:
    """Every audit entry, oldest first, one JSON object per line; `section=overrides`: the
    emergency overrides, their reviews and refused attempts (as `clearance audit export
    --section overrides`). Admins and auditors only."""
    gateway = _gateway(request)
    if not _roles(gateway, caller) & AUDIT_ROLES:
        raise HTTPProblem(
            403, "forbidden", "reading the audit trail needs the admin or auditor role"
        )
    start, end = parse_time(since, "since"), parse_time(until, "until")
    if section == "overrides":
        buffer = io.StringIO()
        await anyio.to_thread.run_sync(
            lambda: export_overrides(gateway.db, buffer, since=start, until=end)
        )
        return StreamingResponse(iter([buffer.getvalue()]), media_type="application/x-ndjson")

    def lines() -> Iterator[str]:
        for entry in iter_entries(gateway.db, since=start, until=end):
            yield canonical_json(entry_as_dict(entry)) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/audit/verify", response_model=VerifyOut, summary="Verify the audit chain")
async def audit_verify(request: Request, caller: Caller) -> VerifyOut:
    gateway = _gateway(request)
    if not _roles(gateway, caller) & AUDIT_ROLES:
        raise HTTPProblem(
            403, "forbidden", "verifying the audit trail needs the admin or auditor role"
        )
    report = await anyio.to_thread.run_sync(verify_store, gateway.db)
    return VerifyOut(
        ok=report.ok,
        entries=report.entries_checked,
        chains=[
            {"chain_id": c.chain_id, "entries": c.entries, "last_seq": c.last_seq}
            for c in report.chains
        ],
        problems=[
            {"chain_id": p.chain_id, "seq": p.seq, "message": p.reason} for p in report.problems
        ],
    )


@router.post("/admin/reload", response_model=ReloadOut, summary="Reload the policy")
async def reload(request: Request, caller: Caller) -> ReloadOut:
    """Load the policy files again; a bad file is rejected and the running policy stays."""
    gateway = _gateway(request)
    if not _roles(gateway, caller) & ADMIN_ROLES:
        raise HTTPProblem(403, "forbidden", "reloading the policy needs the admin role")
    ok, detail = await gateway.reload(by=caller.subject)
    if ok:
        return ReloadOut(ok=True, policy_version=detail)
    return ReloadOut(ok=False, policy_version=gateway.engine.version, problems=detail)
