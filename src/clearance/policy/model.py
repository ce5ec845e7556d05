"""The policy as data: people, rules, approval plans, and the decision an evaluation returns.

Everything here is immutable and free of I/O. The loader (`load.py`) builds these objects
from YAML; the engine (`engine.py`) reads them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Effect(enum.StrEnum):
    """What a rule (or the policy's default) says about an action."""

    ALLOW = "allow"
    APPROVE = "approve"
    DENY = "deny"
    BLOCK = "block"

    @property
    def strength(self) -> int:
        """Block beats deny beats approve beats allow."""
        return _STRENGTH[self]


_STRENGTH = {Effect.ALLOW: 0, Effect.APPROVE: 1, Effect.DENY: 2, Effect.BLOCK: 3}


class OnError(enum.StrEnum):
    """What a rule does when its condition fails to evaluate at run time."""

    DENY = "deny"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Location:
    """Where something was written: file, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Requirement:
    """`required` distinct people out of `approvers` (person ids and `group:` references)."""

    approvers: tuple[str, ...]
    required: int = 1


#: `require_context:` as data: ((fact, allowed values), …), sorted by fact.
ContextRequirement = tuple[tuple[str, tuple[str, ...]], ...]


class Pick(enum.StrEnum):
    """Whom a stage pages first: everyone, or `required` people chosen per request."""

    ALL = "all"
    ROUND_ROBIN = "round_robin"  # rotate through the group, request after request
    LEAST_LOADED = "least_loaded"  # those with the fewest pending requests waiting on them


class OnTimeout(enum.StrEnum):
    """What a stage's deadline does: expire the request (deny), or escalate and wait again."""

    DENY = "deny"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class Routing:
    """Reminders, escalation and load balancing of one stage (see clearance.approvals.escalation).

    - `remind_after_s`: every period while the stage is open, re-notify who has not voted;
    - `escalate_after_s`: each period without the stage being met fires the next level: first,
      when `pick` paged only a few, the rest of the group; then each entry of `escalate_to` in
      turn. Escalated people join every requirement of the stage; `required` is unchanged;
    - `on_timeout`: at the deadline, `deny` (the request expires) or `escalate` (the next level
      fires and the deadline moves by `escalate_after_s`, else by the plan's timeout);
    - `escalate_to`: the people of each level (resolved from the directory when loaded).
    """

    remind_after_s: int | None = None
    escalate_after_s: int | None = None
    escalate_to: tuple[tuple[str, ...], ...] = ()
    on_timeout: OnTimeout = OnTimeout.DENY
    pick: Pick = Pick.ALL

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.remind_after_s is not None:
            out["remind_after_s"] = self.remind_after_s
        if self.escalate_after_s is not None:
            out["escalate_after_s"] = self.escalate_after_s
        if self.escalate_to:
            out["escalate_to"] = [list(level) for level in self.escalate_to]
        if self.on_timeout is not OnTimeout.DENY:
            out["on_timeout"] = self.on_timeout.value
        if self.pick is not Pick.ALL:
            out["pick"] = self.pick.value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Routing:
        remind = data.get("remind_after_s")
        escalate = data.get("escalate_after_s")
        return cls(
            remind_after_s=int(remind) if remind is not None else None,
            escalate_after_s=int(escalate) if escalate is not None else None,
            escalate_to=tuple(tuple(map(str, level)) for level in data.get("escalate_to", ())),
            on_timeout=OnTimeout(data.get("on_timeout", "deny")),
            pick=Pick(data.get("pick", "all")),
        )


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of an approval plan: every requirement in it is met in parallel.

    `mfa` (totp | webauthn | any) makes every vote on the stage need a fresh second factor;
    `require_context` lists facts about the approver (`approver_geo`) and the values allowed."""

    name: str
    requirements: tuple[Requirement, ...]
    mfa: str | None = None
    require_context: ContextRequirement = ()
    routing: Routing | None = None  # reminders, escalation, pick


@dataclass(frozen=True, slots=True)
class ApprovalPlan:
    """Stages run in sequence; the request expires after `timeout_s` seconds."""

    stages: tuple[Stage, ...]
    timeout_s: int | None = None


@dataclass(frozen=True, slots=True)
class AllowAlways:
    """`allow_always:` on an approve rule: an approver may turn an approval into a standing
    grant, valid at most `max_ttl_s`, pinned to the request's values of the `scope` fields
    (`actor.<field>`, `params.<name>`). See clearance.grants."""

    max_ttl_s: int
    scope: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OverrideSettings:
    """`controls.override:` break-glass. `alert` and `review_by` are resolved person ids;
    at most `rate_limit` overrides per person in any `rate_window_s` seconds."""

    role: str
    alert: tuple[str, ...]
    review_by: tuple[str, ...]
    rate_limit: int
    rate_window_s: int


@dataclass(frozen=True, slots=True)
class Controls:
    """`controls:` the policy's break-glass and remembered-denial settings (both off when
    absent): `Policy.settings["controls"]`."""

    override: OverrideSettings | None = None
    remember_denials_s: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy rule, as written."""

    id: str
    actions: tuple[str, ...]
    effect: Effect
    description: str = ""
    when: str | None = None
    approval: ApprovalPlan | None = None
    alert: tuple[str, ...] = ()
    on_error: OnError = OnError.DENY
    redact: tuple[str, ...] = ()
    location: Location | None = None
    when_location: Location | None = None
    allow_always: AllowAlways | None = None

    reason: str = ""

    def __post_init__(self) -> None:
        # The plain-language reason shown to people, built once: the description, else the
        # condition, else the actions.
        if not self.reason:
            text = self.description or self.when or f"matches {', '.join(self.actions)}"
            object.__setattr__(self, "reason", f"{self.id}: {text}")


DEFAULT_TIMEOUT_S = 3600


# ---------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True, slots=True)
class ResolvedRequirement:
    """A requirement with groups expanded to the people who may satisfy it. `reserve` holds
    the rest of the group when the stage's `pick` paged only a few (they join on escalation)."""

    approvers: tuple[str, ...]
    required: int
    reserve: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"approvers": list(self.approvers), "required": self.required}
        if self.reserve:
            out["reserve"] = list(self.reserve)
        return out


@dataclass(frozen=True, slots=True)
class ResolvedStage:
    name: str
    requirements: tuple[ResolvedRequirement, ...]
    mfa: str | None = None
    require_context: ContextRequirement = ()
    routing: Routing | None = None

    def to_json(self) -> dict[str, Any]:
        if len(self.requirements) == 1:
            out = {"name": self.name, **self.requirements[0].to_json()}
        else:
            out = {"name": self.name, "all_of": [r.to_json() for r in self.requirements]}
        if self.mfa:  # written only when set: older stored plans read back unchanged
            out["mfa"] = self.mfa
        if self.require_context:
            out["require_context"] = {k: list(v) for k, v in self.require_context}
        if self.routing is not None and (routing := self.routing.to_json()):
            out["routing"] = routing
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedStage:
        reqs = data.get("all_of") or [data]
        context = data.get("require_context") or {}
        return cls(
            name=str(data["name"]),
            requirements=tuple(
                ResolvedRequirement(
                    tuple(r["approvers"]), int(r["required"]), tuple(r.get("reserve", ()))
                )
                for r in reqs
            ),
            routing=Routing.from_json(data["routing"]) if data.get("routing") else None,
            mfa=data.get("mfa") or None,
            require_context=tuple(sorted((str(k), tuple(v)) for k, v in context.items())),
        )


@dataclass(frozen=True, slots=True)
class ResolvedPlan:
    """The people who must approve this particular request, stage by stage."""

    stages: tuple[ResolvedStage, ...]
    timeout_s: int

    def to_json(self) -> dict[str, Any]:
        return {"stages": [s.to_json() for s in self.stages], "timeout_s": self.timeout_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedPlan:
        return cls(
            stages=tuple(ResolvedStage.from_json(s) for s in data["stages"]),
            timeout_s=int(data["timeout_s"]),
        )


@dataclass(slots=True)
class Decision:
    """What the policy says about one request. `to_json()` is the documented wire format.

    Treat it as read-only. It is not `frozen` only because a frozen dataclass costs twice as
    much to build, and one is built on every check (the hot path).
    """

    effect: Effect
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_version: str
    decision_id: str
    approval: ResolvedPlan | None = None
    alert: tuple[str, ...] = ()
    redact: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "effect": self.effect.value,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "approval": self.approval.to_json() if self.approval else None,
            "policy_version": self.policy_version,
            "decision_id": self.decision_id,
        }
        if self.alert:
            out["alert"] = list(self.alert)
        if self.errors:
            out["errors"] = list(self.errors)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        approval = data.get("approval")
        return cls(
            effect=Effect(data["effect"]),
            rules=tuple(data.get("rules", ())),
            reasons=tuple(data.get("reasons", ())),
            policy_version=str(data.get("policy_version", "")),
            decision_id=str(data.get("decision_id", "")),
            approval=ResolvedPlan.from_json(approval) if approval else None,
            alert=tuple(data.get("alert", ())),
            errors=tuple(data.get("errors", ())),
        )


@dataclass(frozen=True, slots=True)
class Request:
    """What an agent asks to do. `risk` is filled by the gateway's risk signals."""

    action: str
    params: dict[str, Any] = field(default_factory=dict)
    actor: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    risk: dict[str, Any] | None = None

    @property
    def requester(self) -> str | None:
        return self.actor.get("user") or None

    def with_risk(self, risk: dict[str, Any] | None) -> Request:
        """This request with its `risk` map (as `dataclasses.replace`, at a quarter of the
        cost: it runs on every check with risk signals)."""
        return Request(self.action, self.params, self.actor, self.context, self.labels, risk)


# The `risk` variable when nothing is known: every signal at rest (see clearance.risk). A rule
# may read any of these keys without failing, whether or not risk signals are configured.
DEFAULT_RISK: dict[str, Any] = {
    "off_hours": False,
    "velocity_1m": 0,
    "velocity_1h": 0,
    "velocity_24h": 0,
    "agent_velocity_1m": 0,
    "agent_velocity_1h": 0,
    "agent_velocity_24h": 0,
    "amount_24h": 0.0,
    "amount_anomaly": 0.0,
    "new_geo": False,
    "new_device": False,
    "new_payee": False,
    "patterns": [],
    "score": 0,
    "reasons": [],
}


def with_default_risk(risk: dict[str, Any] | None) -> dict[str, Any]:
    """`risk` with every missing signal at rest (for tests and `clearance check --risk`)."""
    return {**DEFAULT_RISK, **(risk or {})}
