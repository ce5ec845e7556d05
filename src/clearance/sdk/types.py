"""The SDK's result types: plain data, the same for local and remote gates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The policy's answer to a check, and the approval it opened when it says `approve`."""

    effect: str
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    decision_id: str
    policy_version: str
    approval_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            effect=str(data["effect"]),
            rules=tuple(data.get("rules", ())),
            reasons=tuple(data.get("reasons", ())),
            decision_id=str(data.get("decision_id", "")),
            policy_version=str(data.get("policy_version", "")),
            approval_id=data.get("approval_id"),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class ApprovalStatus:
    """Where an approval stands (the API's approval object, as data)."""

    id: str
    state: str
    action: str
    reasons: tuple[str, ...]
    decided_reason: str | None
    approvers: tuple[str, ...]
    released: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_final(self) -> bool:
        return self.state != "pending"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApprovalStatus:
        return cls(
            id=str(data["id"]),
            state=str(data["state"]),
            action=str(data.get("action", "")),
            reasons=tuple(data.get("reasons", ())),
            decided_reason=data.get("decided_reason"),
            approvers=tuple(
                v["person"] for v in data.get("votes", ()) if v.get("decision") == "approve"
            ),
            released=data.get("released_at") is not None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Approval:
    """What `require_approval` returns: the go-ahead, and who gave it.

    `id` is None when the policy allowed the action without a human.
    """

    action: str
    effect: str
    decision_id: str
    reasons: tuple[str, ...]
    id: str | None = None
    approvers: tuple[str, ...] = ()
