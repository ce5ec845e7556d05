"""Policy tests: data files of requests and the decisions they must get — our `opa test`.

```yaml
policy: clearance.yaml            # optional; relative to this file (else --config is used)
tests:
  - name: a large transfer needs a manager and a finance director
    action: payments.transfer
    params: {amount: 7200, destination_country: US}
    actor: {user: carol}
    expect:
      effect: approve
      rules: [payments-large]                       # optional: the deciding rules, any order
      stages:                                       # optional: the resolved approvers
        - {name: manager, approvers: [alice, bob], required: 1}
        - {name: finance-director, approvers: [dana, erin], required: 1}
      reason_contains: finance director             # optional
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from .engine import Engine
from .load import Policy, PolicyError, Problem
from .model import Effect, Location, Request, with_default_risk
from .schema import error_text
from .yamlpos import YamlSyntaxError, parse


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectIn(_Strict):
    effect: Literal["allow", "deny", "approve", "block"]
    rules: list[str] | None = None
    stages: list[dict[str, Any]] | None = None
    alert: list[str] | None = None
    reason_contains: str | None = None


class RiskIn(_Strict):
    """A `risk` map given to a policy test or `clearance check --risk`: the signals
    by name and type (a misspelt one is an error, not a signal at rest); the rest at rest."""

    off_hours: StrictBool = False
    velocity_1m: NonNegativeInt = 0
    velocity_1h: NonNegativeInt = 0
    velocity_24h: NonNegativeInt = 0
    agent_velocity_1m: NonNegativeInt = 0
    agent_velocity_1h: NonNegativeInt = 0
    agent_velocity_24h: NonNegativeInt = 0
    amount_24h: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    amount_anomaly: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    new_geo: StrictBool = False
    new_device: StrictBool = False
    new_payee: StrictBool = False
    patterns: list[StrictStr] = []
    score: Annotated[StrictInt, Field(ge=0, le=100)] = 0
    reasons: list[StrictStr] = []

    def risk(self) -> dict[str, Any]:
        """The whole `risk` map a policy sees."""
        return with_default_risk(self.model_dump(exclude_unset=True))


def risk_map(value: dict[str, Any]) -> dict[str, Any]:
    """`value` checked as a `RiskIn`; ValueError naming each problem."""
    try:
        return RiskIn.model_validate(value).risk()
    except ValidationError as exc:
        problems = (_problem_text(err, "risk", "unknown signal") for err in exc.errors())
        raise ValueError("; ".join(problems)) from None


def _problem_text(err: Any, whole: str, unknown: str) -> str:
    """`path: message` for one pydantic error (`whole` when at the top; `unknown` for a key
    that is not allowed there)."""
    where = ".".join(str(p) for p in err["loc"]) or whole
    return f"{where}: {unknown if err['type'] == 'extra_forbidden' else error_text(err)}"


class CaseIn(_Strict):
    name: str = Field(min_length=1)
    action: str = Field(min_length=1)
    params: dict[str, Any] = {}
    actor: dict[str, str] = {}
    context: dict[str, Any] = {}
    labels: list[str] = []
    risk: RiskIn | None = None
    expect: ExpectIn


class SuiteIn(_Strict):
    policy: str | list[str] | None = None
    tests: list[CaseIn] = Field(min_length=1)


@dataclass(frozen=True)
class Case:
    file: str
    location: Location
    spec: CaseIn


@dataclass(frozen=True)
class Suite:
    file: str
    policy_files: tuple[str, ...]
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    passed: bool
    effect: str
    failures: tuple[str, ...]


def load_suite(path: str | Path) -> Suite:
    """Read one test file; raise `PolicyError` with file:line on any problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem("file", f"cannot read: {exc}", Location(name, 1, 1))]) from None
    try:
        doc = parse(text, name)
    except YamlSyntaxError as exc:
        raise PolicyError([Problem("yaml", exc.message, exc.location)]) from None
    try:
        suite = SuiteIn.model_validate(doc.data)
    except ValidationError as exc:
        problems = [
            Problem(
                "test_file", _problem_text(err, "file", "unknown key"), doc.where_key(err["loc"])
            )
            for err in exc.errors()
        ]
        raise PolicyError(problems) from None
    base = Path(path).parent
    policy = suite.policy
    files = [policy] if isinstance(policy, str) else (policy or [])
    return Suite(
        file=name,
        policy_files=tuple(str(base / f) for f in files),
        cases=tuple(
            Case(name, doc.where(("tests", i)), spec) for i, spec in enumerate(suite.tests)
        ),
    )


def run_case(engine: Engine, case: Case) -> CaseResult:
    spec = case.spec
    decision = engine.evaluate(
        Request(
            action=spec.action,
            params=dict(spec.params),
            actor=dict(spec.actor),
            context=dict(spec.context),
            labels=tuple(spec.labels),
            risk=spec.risk.risk() if spec.risk is not None else None,
        ),
        decision_id="dec_test",
    )
    want = spec.expect
    failures: list[str] = []
    if decision.effect is not Effect(want.effect):
        why = "; ".join(decision.reasons)
        failures.append(f"effect: want {want.effect}, got {decision.effect} ({why})")
    if want.rules is not None and sorted(want.rules) != sorted(decision.rules):
        failures.append(f"rules: want {sorted(want.rules)}, got {sorted(decision.rules)}")
    if want.stages is not None:
        got = decision.approval.to_json()["stages"] if decision.approval else []
        if _normal_stages(want.stages) != _normal_stages(got) or _routing_differs(want.stages, got):
            failures.append(f"stages: want {want.stages}, got {got}")
    if want.alert is not None and sorted(want.alert) != sorted(decision.alert):
        failures.append(f"alert: want {sorted(want.alert)}, got {sorted(decision.alert)}")
    if want.reason_contains is not None and not any(
        want.reason_contains.lower() in r.lower() for r in decision.reasons
    ):
        failures.append(
            f"reasons: none contains {want.reason_contains!r}: {list(decision.reasons)}"
        )
    return CaseResult(case, not failures, decision.effect.value, tuple(failures))


def run_suite(policy: Policy, suite: Suite) -> list[CaseResult]:
    engine = Engine(policy)
    return [run_case(engine, case) for case in suite.cases]


def _routing_differs(want: Sequence[dict[str, Any]], got: Sequence[dict[str, Any]]) -> bool:
    """A stage's `routing` (reminders, escalation, pick) is compared only where the test
    names it, as the decision writes it: remind_after_s, escalate_after_s, escalate_to
    (people per level), on_timeout, pick."""
    return any(
        "routing" in w and (w["routing"] or {}) != g.get("routing", {})
        for w, g in zip(want, got, strict=False)
    )


def _normal_stages(stages: Sequence[dict[str, Any]]) -> list[Any]:
    out = []
    for stage in stages:
        reqs = stage.get("all_of") or [stage]
        out.append(
            (
                stage.get("name"),
                sorted((sorted(r.get("approvers", [])), int(r.get("required", 1))) for r in reqs),
            )
        )
    return out
