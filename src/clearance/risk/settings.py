"""The `risk:` section of the policy file, checked by pydantic. A missing section = defaults.

Every key is optional; unknown keys are errors (a typo must not silently disable a signal)::

    risk:
      enabled: true                            # false: every check gets the neutral map
      time_zone: Europe/Berlin                 # the organisation's (IANA name); default UTC
      business_hours: {start: "09:00", end: "18:00"}   # start inclusive, end exclusive
      working_days: [mon, tue, wed, thu, fri]
      holidays: [2026-12-24, 2026-12-25]       # whole days off, in the local calendar
      time_zones: {carol: America/New_York, billing-bot: Asia/Tokyo}  # person or agent;
                                               # wins over a person's directory `timezone`
      velocity_limits: {1m: 5, 1h: 60, 24h: 500}   # more requests than this → velocity
      agent_velocity_limits: {1m: 30, 1h: 600, 24h: 5000}
      amount_param: amount                     # params.<this> is the request's amount
      amount_24h_limit: 10000                  # a 24 h total above this fires (default: off)
      anomaly: {min_history: 10, history_size: 50, threshold: 3.5}
      payee_params: [payee_id]                 # params naming whom a request pays
      retention_days: 90                       # how long a country / device / payee stays known
      patterns:
        payee_bank_change:
          days: 30
          change_actions: [procurement.change_supplier_terms]
          changes_param: changes               # a list of what the request changes …
          changed_item: bank_details           # … containing this
          change_payee_params: [supplier_id, payee_id]
          payment_actions: ["*"]               # globs; requests naming a payee
        denial_burst: {count: 5, minutes: 10}
      weights: {off_hours: 10, velocity: 25, amount_24h: 20, amount_anomaly: 30,
                new_geo: 20, new_device: 20, new_payee: 15,
                payee_bank_change: 80, denial_burst: 50}
      score_cap: 100
      cache_rows: 100000                       # risk rows kept in memory (0: none), about
                                               # 650 bytes each; above the store's row count,
                                               # a check never reads

Times may be written quoted (`"18:00"`); an unquoted `18:00`, which YAML 1.1 reads as the
base-60 number 1080, is understood as the same time of day (and `9:00:00` as 09:00). A bare
hour (`start: 9`) is refused: YAML reads it as nine minutes past midnight.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from datetime import date, time
from functools import cached_property
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..policy.schema import error_text

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEEKDAYS",
    "AnomalySettings",
    "BusinessHours",
    "DenialBurst",
    "PatternSettings",
    "PayeeBankChange",
    "RiskSettings",
    "RiskSettingsError",
    "VelocityLimits",
    "load_risk_settings",
]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: What each signal adds to `risk.score` when it fires (then capped at `score_cap`). A
#: payee-bank-change alone reaches 80, the enterprise example's blocking threshold; the
#: softer signals need company: e.g. new country + new device + unusual amount + off hours.
DEFAULT_WEIGHTS: dict[str, int] = {
    "off_hours": 10,
    "velocity": 25,
    "amount_24h": 20,
    "amount_anomaly": 30,
    "new_geo": 20,
    "new_device": 20,
    "new_payee": 15,
    "payee_bank_change": 80,
    "denial_burst": 50,
}


#: Rows of `risk_state` kept in memory by default (`risk.cache_rows`; see `store.RowCache`):
#: about 650 bytes each (measured with tracemalloc on the risk benchmark's 312,617 rows: 200
#: MB; a person's counters for an action about 1 KB, a country, device or payee 150 bytes),
#: so at most about 65 MB.
DEFAULT_CACHE_ROWS = 100_000


class RiskSettingsError(ValueError):
    """The `risk:` section is not valid; the message lists every problem, and `problems`
    holds each one as (its path under `risk:`, its message), for a loader to place."""

    def __init__(
        self, message: str, problems: list[tuple[tuple[str | int, ...], str]] | None = None
    ) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [((), message)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def _time_of_day(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a time of day is written like '09:00'")
    if isinstance(value, int):  # YAML 1.1 base-60: 18:00 → 1080, 9:00:00 → 32400
        if 0 < value < 24:  # a bare hour, which YAML would read as minutes after midnight
            raise ValueError(f"write the time of day with its minutes, quoted: '{value:02d}:00'")
        if 0 <= value < 24 * 60:
            return time(value // 60, value % 60)
        if 3600 <= value < 24 * 3600:  # H:MM:SS (from 1:00:00): 24:00 (1440) is no time
            return time(value // 3600, value // 60 % 60, value % 60)
        raise ValueError(f"{value} is not a time of day; write it quoted, like '18:00'")
    if isinstance(value, str) and (m := _HHMM.match(value)):
        hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    return value  # pydantic's own parsing (and error) for anything else


class BusinessHours(_Strict):
    """Local business hours: `start` ≤ t < `end` is in hours (so 18:00 itself is not)."""

    start: time = time(9, 0)
    end: time = time(18, 0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return _time_of_day(v)

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHours:
        if self.start >= self.end:
            raise ValueError(
                "business_hours.start must be before end (overnight hours are not supported)"
            )
        return self


class VelocityLimits(_Strict):
    """The most requests of one action allowed in each window before `velocity` fires."""

    per_minute: int = Field(5, alias="1m", ge=0)
    per_hour: int = Field(60, alias="1h", ge=0)
    per_day: int = Field(500, alias="24h", ge=0)


class AnomalySettings(_Strict):
    """The amount anomaly: robust z-score against the last `history_size` amounts.

    Silent (0) until `min_history` past amounts exist; fires at `threshold` and above.
    """

    min_history: int = Field(10, ge=2)
    history_size: int = Field(50, ge=2, le=1000)
    threshold: float = Field(3.5, gt=0)

    @model_validator(mode="after")
    def _sizes(self) -> AnomalySettings:
        if self.history_size < self.min_history:
            raise ValueError("anomaly.history_size must be at least anomaly.min_history")
        return self


#: Actions whose roles (`PayeeBankChange.roles`) are remembered.
_ROLES_KEPT = 10_000


class PayeeBankChange(_Strict):
    """A payment to a payee whose bank details were changed less than `days` ago.

    A change is a request for one of `change_actions` whose `params.<changes_param>` (a list,
    or a single string) contains `changed_item`; the payee is the first of
    `change_payee_params` present in its params. A payment is a request for one of
    `payment_actions` naming a payee in one of the top-level `payee_params`.
    """

    days: float = Field(30, gt=0, le=3650)
    change_actions: tuple[str, ...] = ("procurement.change_supplier_terms",)
    changes_param: str = "changes"
    changed_item: str = "bank_details"
    change_payee_params: tuple[str, ...] = ("supplier_id", "payee_id")
    payment_actions: tuple[str, ...] = ("*",)

    @cached_property
    def _change_re(self) -> re.Pattern[str]:
        return _globs(self.change_actions)

    @cached_property
    def _payment_re(self) -> re.Pattern[str]:
        return _globs(self.payment_actions)

    def is_change_action(self, action: str) -> bool:
        return self._change_re.match(action) is not None

    def is_payment_action(self, action: str) -> bool:
        return self._payment_re.match(action) is not None

    def roles(self, action: str) -> tuple[bool, bool]:
        """(`is_change_action`, `is_payment_action`) of `action`, remembered for the first
        `_ROLES_KEPT` actions (a policy has a few dozen; the bound is for callers that send
        arbitrary names)."""
        known = self._roles
        found = known.get(action)
        if found is None:
            found = (self.is_change_action(action), self.is_payment_action(action))
            if len(known) < _ROLES_KEPT:
                known[action] = found
        return found

    @cached_property
    def _roles(self) -> dict[str, tuple[bool, bool]]:
        return {}


class DenialBurst(_Strict):
    """An agent with at least `count` denied (or blocked) requests in the last `minutes`."""

    count: int = Field(5, ge=1, le=1000)
    minutes: float = Field(10, gt=0, le=525_600)


class PatternSettings(_Strict):
    payee_bank_change: PayeeBankChange = PayeeBankChange()
    denial_burst: DenialBurst = DenialBurst()


def check_zone(name: str) -> str:
    """`name` when it is an IANA time zone; ValueError saying so otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Berlin"
        ) from None
    return name


class RiskSettings(_Strict):
    """Everything the risk signals can be tuned with; see the module docstring."""

    enabled: bool = True
    time_zone: str = "UTC"
    business_hours: BusinessHours = BusinessHours()
    working_days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    holidays: frozenset[date] = frozenset()
    time_zones: dict[str, str] = {}
    velocity_limits: VelocityLimits = VelocityLimits()
    agent_velocity_limits: VelocityLimits = VelocityLimits.model_validate(
        {"1m": 30, "1h": 600, "24h": 5000}
    )
    amount_param: str = "amount"
    amount_24h_limit: float | None = Field(None, gt=0)
    anomaly: AnomalySettings = AnomalySettings()
    payee_params: tuple[str, ...] = ("payee_id",)
    retention_days: float = Field(90, ge=1, le=3650)
    patterns: PatternSettings = PatternSettings()
    weights: dict[str, float] = {}
    score_cap: int = Field(100, ge=0, le=100)
    cache_rows: int = Field(DEFAULT_CACHE_ROWS, ge=0, le=100_000_000)

    @field_validator("time_zone")
    @classmethod
    def _check_zone(cls, v: str) -> str:
        return check_zone(v)

    @field_validator("time_zones")
    @classmethod
    def _check_zones(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v.values():
            check_zone(name)
        return v

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(
                f"unknown signal {', '.join(unknown)}; weights are for "
                f"{', '.join(sorted(DEFAULT_WEIGHTS))}"
            )
        for name, weight in v.items():
            if weight < 0:
                raise ValueError(f"the weight of {name} must not be negative")
        return v

    @cached_property
    def effective_weights(self) -> dict[str, float]:
        """The defaults, overridden by `weights`."""
        return {**DEFAULT_WEIGHTS, **self.weights}

    @cached_property
    def working_weekdays(self) -> frozenset[int]:
        """`working_days` as `date.weekday()` numbers (Monday is 0)."""
        return frozenset(WEEKDAYS.index(d) for d in self.working_days)

    def zone_for(self, name: str) -> ZoneInfo:
        """The ZoneInfo of an IANA name (cached by zoneinfo itself)."""
        return ZoneInfo(name)


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for action globs, with the policy engine's semantics (fnmatch)."""
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def load_risk_settings(section: Mapping[str, Any] | RiskSettings | None) -> RiskSettings:
    """The settings from a policy file's `risk:` section (None or missing: the defaults).

    Raises RiskSettingsError naming every problem as `risk.<path>: <message>`.
    """
    if isinstance(section, RiskSettings):
        return section
    if section is None:
        return RiskSettings()
    if not isinstance(section, Mapping):
        raise RiskSettingsError("risk: must be a mapping of settings")
    try:
        return RiskSettings.model_validate(dict(section))
    except ValidationError as exc:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for err in exc.errors():
            path = tuple(p for p in err["loc"] if isinstance(p, str | int))
            where = ".".join(str(p) for p in ("risk", *path))
            problems.append((path, f"{where}: {error_text(err)}"))
        raise RiskSettingsError("; ".join(m for _, m in problems), problems) from None
