"""The HTTP API of the controls: emergency overrides, their reviews, and standing grants.

- `POST /v1/overrides` — a person with the emergency role releases a pending approval
  (`approval_id`) or a call not yet requested (`action`, `params`, `actor`, …) with a reason.
- `GET /v1/overrides[?review_state=open]` · `POST /v1/overrides/{id}/review`.
- `POST /v1/approvals/{id}/always` — "approve always": an approve vote and a standing grant.
- `GET /v1/grants[?live=true]` · `DELETE /v1/grants/{id}[?reason=…]`.

Agent keys can do none of this: every route needs a person's key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import grants
from .. import override as ovr
from ..audit.entry import AuditDraft
from ..gateway import Gateway
from ..policy import Request as PolicyRequest
from ..policy.schema import parse_duration
from .api import ERRORS, may_see, vote_proof
from .auth import Principal, authenticate
from .errors import HTTPProblem
from .schemas import ApprovalOut, JsonObject, approval_out

Caller = Annotated[Principal, Depends(authenticate)]
router = APIRouter(prefix="/v1", responses=ERRORS, tags=["controls"])
OVERSIGHT_ROLES = {"admin", "auditor"}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OverrideIn(_In):
    reason: str = Field(max_length=4000, description="Why this cannot wait (required)")
    approval_id: str | None = Field(default=None, max_length=64)
    action: str | None = Field(default=None, max_length=255)
    params: JsonObject = {}
    actor: dict[str, str] = Field(
        default={}, description="Exactly as the agent will send it (user and agent)"
    )
    context: JsonObject = {}
    labels: list[str] = []
    idempotency_key: str | None = Field(default=None, max_length=255)


class OverrideOut(BaseModel):
    override: dict[str, Any]
    approval: ApprovalOut
    binding_hash: str


class OverrideList(BaseModel):
    overrides: list[dict[str, Any]]


class ReviewIn(_In):
    verdict: Literal["justified", "flagged"]
    comment: str | None = Field(default=None, max_length=4000)


class AlwaysIn(_In):
    comment: str | None = Field(default=None, max_length=4000)
    totp: str | None = Field(default=None, max_length=16, description="For an mfa stage")
    ttl: str | int | None = Field(
        default=None, description="How long the grant lasts (e.g. 7d); capped by the rule"
    )

    @field_validator("ttl")
    @classmethod
    def _duration(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_duration(v)
        return v


class AlwaysOut(BaseModel):
    approval: ApprovalOut
    grant: dict[str, Any] | None


class GrantList(BaseModel):
    grants: list[dict[str, Any]]


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _person(caller: Principal, what: str) -> str:
    if caller.kind != "person":
        raise HTTPProblem(403, "forbidden", f"an agent key cannot {what}; use a person's key")
    return caller.subject


def _roles(gateway: Gateway, person: str) -> set[str]:
    found = gateway.policy.directory.get(person)
    return set(found.roles) if found else set()


def _oversees_overrides(gateway: Gateway, person: str) -> bool:
    settings = ovr.settings_of(gateway)
    reviewers = settings.review_by if settings else ()
    return bool(_roles(gateway, person) & OVERSIGHT_ROLES) or person in reviewers


@router.post("/overrides", response_model=OverrideOut, status_code=201, summary="Break glass")
async def create_override(body: OverrideIn, request: Request, caller: Caller) -> OverrideOut:
    """Release a pending approval, or a call not yet requested, at once (emergency role and a
    reason required; rate limited; security alerted; a review request opens)."""
    person = _person(caller, "override")
    gateway = _gateway(request)
    policy_request = None
    if body.approval_id is None and body.action is not None:
        policy_request = PolicyRequest(
            action=body.action,
            params=body.params,
            actor=dict(body.actor),
            context=body.context,
            labels=tuple(body.labels),
        )
    result = await ovr.override(
        gateway,
        person=person,
        reason=body.reason,
        approval_id=body.approval_id,
        request=policy_request,
        channel="api",
        idempotency_key=body.idempotency_key,
    )
    return OverrideOut(
        override=result.override.to_json(),
        approval=approval_out(result.approval, gateway.policy.directory),
        binding_hash=result.approval.approval.binding_hash,
    )


@router.get("/overrides", response_model=OverrideList, summary="List overrides")
async def list_overrides(
    request: Request,
    caller: Caller,
    review_state: Annotated[str | None, Query(pattern="^(open|justified|flagged)$")] = None,
) -> OverrideList:
    """Reviewers, admins and auditors see every override; others only their own."""
    person = _person(caller, "list overrides")
    gateway = _gateway(request)
    found = await ovr.list_overrides(gateway.db, review_state=review_state)
    if not _oversees_overrides(gateway, person):
        found = [o for o in found if o.person == person]
    return OverrideList(overrides=[o.to_json() for o in found])


@router.post("/overrides/{override_id}/review", summary="Review an override")
async def review_override(
    override_id: str, body: ReviewIn, request: Request, caller: Caller
) -> dict[str, Any]:
    """Mark an override justified or flagged: a reviewer other than the overrider, once."""
    person = _person(caller, "review an override")
    gateway = _gateway(request)
    done = await ovr.review(
        gateway, override_id, person=person, verdict=body.verdict, comment=body.comment
    )
    return done.to_json()


@router.post("/approvals/{approval_id}/always", response_model=AlwaysOut, summary="Approve always")
async def approve_always(
    approval_id: str, body: AlwaysIn, request: Request, caller: Caller
) -> AlwaysOut:
    """Approve this request and grant the same scope for later requests (where the rule
    allows it; the lifetime is capped by the rule's max_ttl)."""
    person = _person(caller, "decide an approval")
    gateway = _gateway(request)
    stored = await gateway.approvals.get(approval_id)
    if not may_see(gateway, caller, stored):
        raise HTTPProblem(404, "not_found", f"no approval with id {approval_id!r}")
    decided, grant = await grants.approve_always(
        gateway.approvals,
        gateway.policy,
        approval_id,
        person=person,
        comment=body.comment,
        channel="api",
        ttl_s=parse_duration(body.ttl) if body.ttl is not None else None,
        proof=vote_proof(request, totp=body.totp),
    )
    return AlwaysOut(
        approval=approval_out(decided, gateway.policy.directory),
        grant=grant.to_json(gateway.clock()) if grant else None,
    )


@router.get("/grants", response_model=GrantList, summary="List standing grants")
async def list_grants(
    request: Request, caller: Caller, live: Annotated[bool, Query()] = False
) -> GrantList:
    """Admins and auditors see every grant; others the grants they made."""
    person = _person(caller, "list grants")
    gateway = _gateway(request)
    mine = None if _roles(gateway, person) & OVERSIGHT_ROLES else person
    now = gateway.clock()
    found = await grants.list_grants(gateway.db, now=now, live_only=live, grantor=mine)
    return GrantList(grants=[g.to_json(now) for g in found])


@router.delete("/grants/{grant_id}", summary="Revoke a standing grant")
async def revoke_grant(
    grant_id: str,
    request: Request,
    caller: Caller,
    reason: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, Any]:
    """End a grant at once. Its grantor or an admin may; the revocation is audited."""
    person = _person(caller, "revoke a grant")
    gateway = _gateway(request)
    now = gateway.clock()
    grant = await grants.get(gateway.db, grant_id)
    if grant.grantor != person and "admin" not in _roles(gateway, person):
        await gateway.writer.append(
            AuditDraft(
                kind="grant.revoke_refused",
                ts=now,
                approver=person,
                channel="api",
                approval_id=grant.approval_id,
                data={"grant_id": grant_id, "reason": "neither its grantor nor an admin"},
            )
        )
        raise HTTPProblem(403, "forbidden", "only the grant's grantor or an admin can revoke it")
    done = await grants.revoke(
        gateway.db, gateway.writer, grant_id, by=person, reason=reason, now=now
    )
    return done.to_json(now)
