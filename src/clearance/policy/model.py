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


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of an approval plan: every requirement in it is met in parallel."""

    name: str
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True, slots=True)
class ApprovalPlan:
    """Stages run in sequence; the request expires after `timeout_s` seconds."""

    stages: tuple[Stage, ...]
    timeout_s: int | None = None


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
    """A requirement with groups expanded to the people who may satisfy it."""

    approvers: tuple[str, ...]
    required: int

    def to_json(self) -> dict[str, Any]:
        return {"approvers": list(self.approvers), "required": self.required}


@dataclass(frozen=True, slots=True)
class ResolvedStage:
    name: str
    requirements: tuple[ResolvedRequirement, ...]

    def to_json(self) -> dict[str, Any]:
        if len(self.requirements) == 1:
            return {"name": self.name, **self.requirements[0].to_json()}
        return {"name": self.name, "all_of": [r.to_json() for r in self.requirements]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResolvedStage:
        reqs = data.get("all_of") or [data]
        return cls(
            name=str(data["name"]),
            requirements=tuple(
                ResolvedRequirement(tuple(r["approvers"]), int(r["required"])) for r in reqs
            ),
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
