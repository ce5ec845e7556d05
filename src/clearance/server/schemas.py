"""The HTTP API's bodies, as pydantic models: they are what /openapi.json documents."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..approvals.records import StoredApproval
from ..channels.deliveries import Delivery
from ..directory import Directory

_T = TypeVar("_T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def finite_json(value: _T) -> _T:
    """Refuse NaN and infinite numbers anywhere inside (Python's JSON reads `NaN`,
    `Infinity` and `1e400`; none can be hashed into an audit entry or compared by a policy)."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


#: A JSON object from a caller (parameters, context): every number in it finite.
JsonObject = Annotated[dict[str, Any], AfterValidator(finite_json)]


class CheckIn(_In):
    action: str = Field(min_length=1, max_length=255, examples=["payments.transfer"])
    params: JsonObject = Field(default_factory=dict, examples=[{"amount": 2000}])
    actor: dict[str, str] = Field(default_factory=dict, examples=[{"user": "carol"}])
    context: JsonObject = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class StageOut(BaseModel):
    name: str
    approvers: list[str] | None = None  # with `pick`: the people paged
    required: int | None = None
    reserve: list[str] | None = None  # with `pick`: the rest of the group, paged on escalation
    all_of: list[dict[str, Any]] | None = None


class PlanOut(BaseModel):
    stages: list[StageOut]
    timeout_s: int


class DecisionOut(BaseModel):
    effect: Literal["allow", "deny", "approve", "block"]
    rules: list[str]
    reasons: list[str]
    approval: PlanOut | None = None
    policy_version: str
    decision_id: str
    alert: list[str] | None = None
    errors: list[str] | None = None
    approval_id: str | None = None
    state: str | None = None
    expires_at: str | None = None
    delegations: list[list[str]] | None = None  # [person away, who stands in]
    grant_id: str | None = None  # allowed by this standing grant
    remembered_denial: str | None = None  # denied as this earlier request was
    released_by_override: bool | None = None  # an emergency override approved it ahead


class VoteOut(BaseModel):
    person: str
    name: str
    decision: Literal["approve", "deny"]
    comment: str | None
    channel: str
    stage: int
    at: str
    on_behalf_of: str | None = None  # a delegate's vote: whose seat it filled


class StageProgressOut(BaseModel):
    name: str
    requirements: list[dict[str, Any]]
    # Step-up (clearance.identity.mfa): votes here need this second factor / approver context.
    mfa: str | None = None
    require_context: dict[str, list[str]] | None = None


class DeliveryOut(BaseModel):
    person: str
    channel: str
    stage: int
    status: Literal["sent", "failed"]
    error: str | None
    at: str


class ApprovalOut(BaseModel):
    id: str
    state: Literal["pending", "approved", "denied", "expired", "cancelled"]
    action: str
    params: dict[str, Any]
    actor: dict[str, Any]
    agent: str | None
    requester: str | None
    rules: list[str]
    reasons: list[str]
    stage_index: int
    stages: list[StageProgressOut]
    votes: list[VoteOut]
    created_at: str
    expires_at: str
    decided_at: str | None
    decided_reason: str | None
    released_at: str | None
    execution_state: str | None
    execution_result: str | None
    policy_version: str
    summary: str
    deliveries: list[DeliveryOut] | None = None
    warnings: list[str] = []
    # A denial, for the agent and the model behind it: who, why, and not to retry as is.
    denial: dict[str, Any] | None = None
    # "Approve always" is possible here (clearance.grants): its scope and longest lifetime.
    grant_offer: dict[str, Any] | None = None
    # Reminders and escalations that fired, and the delegates in force ("bob for alice").
    routing: list[dict[str, Any]] = []
    delegations: list[str] = []


class ApprovalList(BaseModel):
    approvals: list[ApprovalOut]


class DecisionIn(_In):
    decision: Literal["approve", "deny"]
    comment: str | None = Field(default=None, max_length=4000)
    totp: str | None = Field(
        default=None,
        max_length=16,
        description="A current authenticator code, for a stage that requires `mfa: totp` "
        "(single-use; never stored or audited)",
    )


class ReleaseIn(_In):
    action: str = Field(min_length=1, max_length=255)
    params: JsonObject = Field(default_factory=dict)
    actor: dict[str, str] = Field(default_factory=dict)


class ResultIn(_In):
    state: Literal["succeeded", "failed"]
    result: str | None = Field(default=None, max_length=100_000)


class CheckResultIn(_In):
    """What happened when an allowed action (no approval) ran."""

    decision_id: str = Field(pattern=r"^dec_[0-9A-Za-z_-]{1,64}$")
    action: str = Field(min_length=1, max_length=255)
    params: JsonObject = {}
    actor: dict[str, str] = {}
    state: Literal["succeeded", "failed"]
    result: str | None = Field(default=None, max_length=100_000)


class CheckResultOut(BaseModel):
    decision_id: str
    state: str
    recorded_at: datetime
    seq: int


class CancelIn(_In):
    reason: str = Field(min_length=1, max_length=4000)


class ErrorOut(BaseModel):
    error: str
    message: str


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    chains: list[dict[str, Any]]
    problems: list[dict[str, Any]]


class ReloadOut(BaseModel):
    ok: bool
    policy_version: str | None = None
    problems: str | None = None


def _offer_shown(stored: StoredApproval) -> dict[str, Any] | None:
    """The "approve always" offer as people see it (its lookup hash stays inside)."""
    offer = stored.decision.get("grant_offer")
    return {k: v for k, v in offer.items() if k != "scope_hash"} if offer else None


def approval_out(
    stored: StoredApproval, directory: Directory, deliveries: list[Delivery] | None = None
) -> ApprovalOut:
    from ..approvals import workflow
    from ..denials import agent_feedback

    a = stored.approval
    stages = []
    for i, stage in enumerate(a.plan.stages):
        reqs = []
        for progress in a.stage_progress(i):
            reqs.append(
                {
                    "approvers": list(progress.approvers),
                    "required": progress.required,
                    "counted": list(progress.counted),
                    "needed": progress.needed,
                }
            )
        context = {k: list(v) for k, v in stage.require_context} or None
        stages.append(
            StageProgressOut(
                name=stage.name, requirements=reqs, mfa=stage.mfa, require_context=context
            )
        )
    return ApprovalOut(
        id=a.id,
        state=a.state.value,
        action=a.action,
        params=a.params,
        actor=a.actor,
        agent=stored.agent,
        requester=a.requester,
        rules=list(stored.rules),
        reasons=list(stored.reasons),
        stage_index=a.stage_index,
        stages=stages,
        votes=[
            VoteOut(
                person=v.person,
                name=directory.display_name(v.person),
                decision=v.decision.value,
                comment=v.comment,
                channel=v.channel,
                stage=v.stage_index,
                at=v.at.isoformat(),
                on_behalf_of=v.on_behalf_of,
            )
            for v in a.votes
        ],
        routing=[e.to_json() for e in a.routing_log],
        delegations=[f"{delegate} for {delegator}" for delegator, delegate in a.delegations],
        created_at=a.created_at.isoformat(),
        expires_at=a.expires_at.isoformat(),
        decided_at=a.decided_at.isoformat() if a.decided_at else None,
        decided_reason=a.decided_reason,
        released_at=a.released_at.isoformat() if a.released_at else None,
        execution_state=a.execution_state.value if a.execution_state else None,
        execution_result=a.execution_result,
        policy_version=stored.policy_version,
        summary=workflow.summary(a),
        denial=agent_feedback(stored),
        grant_offer=_offer_shown(stored) if a.state.value == "pending" else None,
        deliveries=None
        if deliveries is None
        else [
            DeliveryOut(
                person=d.person,
                channel=d.channel,
                stage=d.stage_index,
                status=d.status,
                error=d.last_error,
                at=d.updated_at.isoformat(),
            )
            for d in deliveries
        ],
        warnings=_warnings(stored, deliveries or []),
    )


def _warnings(stored: StoredApproval, deliveries: list[Delivery]) -> list[str]:
    """Tell the agent (and the page) when nobody in the current stage could be reached."""
    a = stored.approval
    if a.state.value != "pending" or not deliveries:
        return []
    stage = [d for d in deliveries if d.stage_index == a.stage_index]
    people = set(a.open_voters())
    failed = {d.person for d in stage if d.status == "failed"}
    sent = {d.person for d in stage if d.status == "sent"}
    if people and people <= failed and not sent & people:
        name = a.plan.stages[a.stage_index].name
        return [
            f"no approver of stage '{name}' could be reached on any channel; "
            "they can still decide in the web inbox"
        ]
    return []
