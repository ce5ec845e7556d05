"""The shape of a policy file, checked by pydantic. Unknown keys are errors (typos hide bugs).

These models describe the YAML as written; `load.py` turns them into the immutable model and
adds the checks that need the whole file (duplicate ids, unknown groups, CEL).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def error_text(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error, without the "Value error, " prefix pydantic puts
    before a validator's own ValueError (the policy loader, policy tests, `risk:`)."""
    return str(err["msg"]).removeprefix("Value error, ")


def parse_duration(value: Any) -> int:
    """`90`, `"90s"`, `"30m"`, `"4h"`, `"2d"`, `"1w"` → seconds. No upper cap."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '4h'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m[1]) * _UNITS[m[2]]
    else:
        raise ValueError(f"{value!r} is not a duration; write seconds or e.g. 30m, 4h, 2d")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonIn(_Strict):
    id: str = Field(min_length=1)
    name: str | None = None
    email: str | None = None
    groups: list[str] = []
    roles: list[str] = []
    channels: dict[str, str | int] = {}
    manager: str | None = None
    timezone: str | None = None


class GroupIn(_Strict):
    description: str = ""


class DirectoryIn(_Strict):
    people: list[dict[str, Any]] = []  # each checked as a PersonIn, so one bad entry hides none
    groups: dict[str, GroupIn | None] = {}


class RequirementIn(_Strict):
    approvers: list[str] = Field(min_length=1)
    required: int = 1

    @field_validator("required")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("required must be at least 1")
        return v


#: Second factors a rule or stage may require (`mfa:`): see clearance.identity.mfa.
MFA_METHODS = ("totp", "webauthn", "any")
#: Facts `require_context:` may name, each checked against the approver's session.
CONTEXT_KEYS = ("approver_geo",)


class RoutingIn(_Strict):
    """Reminders, escalation and load balancing, on an approval (for every stage) or a stage
    (which overrides it): see `clearance.policy.model.Routing`."""

    remind_after: int | str | None = None
    escalate_after: int | str | None = None
    escalate_to: list[str] | None = None  # one person or group: a level each, in order
    on_timeout: Literal["deny", "escalate"] | None = None
    pick: Literal["all", "round_robin", "least_loaded"] | None = None

    @field_validator("remind_after", "escalate_after")
    @classmethod
    def _routing_duration(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("escalate_to", mode="before")
    @classmethod
    def _one_or_many_levels(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class StageIn(RoutingIn):
    name: str = Field(min_length=1)
    approvers: list[str] | None = None
    required: int | None = None
    all_of: list[RequirementIn] | None = None
    mfa: Literal["totp", "webauthn", "any"] | None = None
    require_context: dict[str, list[str]] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> StageIn:
        if self.all_of is not None and (self.approvers is not None or self.required is not None):
            raise ValueError("a stage has either approvers/required or all_of, not both")
        if self.all_of is None and not self.approvers:
            raise ValueError("a stage needs approvers (or all_of)")
        if self.all_of is not None and not self.all_of:
            raise ValueError("all_of needs at least one requirement")
        if self.required is not None and self.required < 1:
            raise ValueError("required must be at least 1")
        return self


class ApprovalIn(RoutingIn):
    stages: list[StageIn] | None = None
    approvers: list[str] | None = None
    required: int | None = None
    timeout: int | str | None = None

    @field_validator("timeout")
    @classmethod
    def _duration(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _one_form(self) -> ApprovalIn:
        if self.stages is not None and (self.approvers is not None or self.required is not None):
            raise ValueError("write either stages or approvers/required, not both")
        if self.stages is None and not self.approvers:
            raise ValueError("an approval needs stages (or approvers)")
        if self.stages is not None and not self.stages:
            raise ValueError("stages needs at least one stage")
        if self.required is not None and self.required < 1:
            raise ValueError("required must be at least 1")
        return self


_SCOPE_FIELD = re.compile(
    r"^(actor\.[A-Za-z_][A-Za-z0-9_]*|params\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$"
)


class AllowAlwaysIn(_Strict):
    """`allow_always:` on an approve rule: approvers may answer "approve always" (see
    clearance.grants). `scope` names the request fields a grant is pinned to."""

    max_ttl: int | str
    scope: list[str] = Field(min_length=1)

    @field_validator("max_ttl")
    @classmethod
    def _duration(cls, v: int | str) -> int | str:
        parse_duration(v)
        return v

    @field_validator("scope")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for entry in v:
            if not _SCOPE_FIELD.match(entry):
                raise ValueError(
                    f"a scope entry is actor.<field> or params.<name> "
                    f"(e.g. actor.agent, params.payee_id), not {entry!r}"
                )
        if len(set(v)) != len(v):
            raise ValueError("scope lists a field twice")
        return v


class RuleIn(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str = ""
    actions: list[str] = Field(min_length=1)
    when: str | None = None
    effect: Literal["allow", "deny", "approve", "block"]
    approval: ApprovalIn | None = None
    alert: list[str] = []
    on_error: Literal["deny", "skip"] = "deny"
    redact: list[str] = []
    allow_always: AllowAlwaysIn | None = None
    mfa: Literal["totp", "webauthn", "any"] | None = None  # for every stage of the rule
    require_context: dict[str, list[str]] | None = None

    @field_validator("actions", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("redact")
    @classmethod
    def _params_paths(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path.startswith("params.") or len(path) <= len("params."):
                raise ValueError(f"redact names parameters like params.card_number, not {path!r}")
        return v


class PoliciesIn(_Strict):
    default: Literal["allow", "deny", "approve", "block"] | None = None
    rules: list[dict[str, Any]] = []  # each checked as a RuleIn, so one bad rule hides none


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")


def parse_rate(value: str) -> tuple[int, int]:
    """`"3/24h"` → (3, 86400): at most 3 in any 24 hours."""
    m = _RATE.match(value) if isinstance(value, str) else None
    if m is None or int(m[1]) < 1:
        raise ValueError(f"{value!r} is not a rate; write e.g. 3/24h (at most 3 per 24 hours)")
    return int(m[1]), parse_duration(m[2])


class OverrideIn(_Strict):
    """`controls.override:` who may break glass, who hears of it, who reviews it, how often."""

    role: str = Field(default="emergency", min_length=1)
    alert: list[str] = []  # default: the reviewers
    review_by: list[str] = Field(min_length=1)
    rate_limit: str = "3/24h"

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_rate(v)
        return v


class ControlsIn(_Strict):
    override: OverrideIn | None = None
    remember_denials: int | str | None = None  # a duration: deny identical requests at once

    @field_validator("remember_denials")
    @classmethod
    def _duration(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_duration(v)
        return v


class PolicyFileIn(_Strict):
    """One policy file. `server` and `channels` are read by the server's own settings."""

    version: Literal[1] = 1
    directory: DirectoryIn = DirectoryIn()
    policies: PoliciesIn = PoliciesIn()
    server: dict[str, Any] | None = None
    channels: dict[str, Any] | None = None
    risk: dict[str, Any] | None = None  # checked by clearance.risk.settings
    controls: ControlsIn | None = None  # break-glass overrides, remembered denials
