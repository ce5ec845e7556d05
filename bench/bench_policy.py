"""Policy engine benchmark: µs per decision, measured against the targets in DESIGN.md.

Three cases, each timed per call with `time.perf_counter_ns` after a warm-up, with a fixed
random seed:

(a) the enterprise example (`examples/enterprise/clearance.yaml`) over a realistic mix of its
    actions — target ≤ 10 µs median;
(b) a synthetic policy of 10,000 rules over 1,000 actions, 200 people in 20 groups, generated
    in memory — load + compile time, then warm decisions (every action group used once
    before timing) — target ≤ 25 µs median;
(c) the same 12 rules written for Clearance (allow/deny) and for Cedar (permit/forbid, run by
    `cedarpy` with pre-parsed `PolicySet` and `Entities` handles), timed in the same run on the
    same requests, with every timed decision checked for the same allow/deny outcome — target:
    Clearance ≥ 5× faster than cedarpy.

Run: `python -m bench policy` (100,000 decisions a case) or
`python -m bench.bench_policy --quick` (10,000). The case builders are importable, so the
smoke test (`tests/bench/test_bench_policy.py`) runs them with a tiny N.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from clearance.policy import Decision, Effect, Engine, Request, load_policy, load_policy_text

ROOT = Path(__file__).resolve().parents[1]
ENTERPRISE = ROOT / "examples" / "enterprise" / "clearance.yaml"
SEED = 20_240_611
FULL_N = 100_000
QUICK_N = 10_000
POOL = 4_096  # distinct requests a case; the timed loop cycles through them
WARMUP = 2_000  # untimed calls before each timed run
CHUNK = 1_000  # (c) alternates engines every CHUNK requests, so both see the same noise

TARGET_A_US = 10.0
TARGET_B_US = 25.0
TARGET_C_RATIO = 5.0


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True, slots=True)
class Stats:
    """Per-call latency of one timed run, in microseconds."""

    n: int
    median_us: float
    p99_us: float
    mean_us: float

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> Stats:
        ordered = sorted(samples_ns)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        return cls(
            n=len(ordered),
            median_us=statistics.median(ordered) / 1000,
            p99_us=p99 / 1000,
            mean_us=statistics.fmean(ordered) / 1000,
        )

    def __str__(self) -> str:
        return f"median {self.median_us:7.2f} µs   p99 {self.p99_us:7.2f} µs   (n={self.n:,})"


def time_calls(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    n: int,
    project: Callable[[Any], Any],
    *,
    start: int = 0,
) -> tuple[list[int], list[Any]]:
    """Call `fn` on `n` items (cycling from `start`), timing each call on its own.

    Returns the per-call times in ns and `project(result)` of each call; `project` runs
    outside the timed window, so keeping outcomes costs the timed call nothing.
    """
    clock = time.perf_counter_ns
    times = [0] * n
    outs: list[Any] = [None] * n
    size = len(items)
    for i in range(n):
        item = items[(start + i) % size]
        t0 = clock()
        result = fn(item)
        t1 = clock()
        times[i] = t1 - t0
        outs[i] = project(result)
    return times, outs


def warm_up(fn: Callable[[Any], Any], items: Sequence[Any], n: int = WARMUP) -> None:
    for i in range(n):
        fn(items[i % len(items)])


def timer_overhead_us() -> float:
    """Median cost of one empty timed window: included in (not subtracted from) every figure."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        t0 = clock()
        t1 = clock()
        samples.append(t1 - t0)
    return statistics.median(samples) / 1000


def _timed_run(
    fn: Callable[[Any], Any], items: Sequence[Any], n: int, project: Callable[[Any], Any]
) -> tuple[Stats, list[Any]]:
    warm_up(fn, items)
    gc.collect()
    times, outs = time_calls(fn, items, n, project)
    return Stats.of(times), outs


def _effect(decision: Decision) -> Effect:
    return decision.effect


# ---------------------------------------------------------------------------------------------
# (a) The enterprise example, over a realistic mix of its actions


@dataclass
class EngineCase:
    """A loaded policy, its engine, and a pool of requests to time it on."""

    name: str
    engine: Engine
    requests: list[Request]
    setup_s: dict[str, float] = field(default_factory=dict)


def evaluation_errors(case: EngineCase) -> list[Decision]:
    """Decisions over the case's distinct requests that hit a condition error or failed closed.

    A benchmark whose requests made conditions fail would time the slow path, not the engine.
    """
    decisions = (case.engine.evaluate(r) for r in case.requests)
    return [d for d in decisions if d.errors]


_COUNTRIES = ["US"] * 15 + ["GB", "DE", "MX", "IN", "SG"]
_CLASSES = ["general"] * 10 + ["personal_financial"] * 5 + ["medical"] * 2 + ["system_config"] * 2
_CLASSES += ["public"]  # no rule names it: the default applies
_CATEGORIES = ["customer_response"] * 5 + [
    "contract_modification",
    "pricing_change",
    "partnership",
    "media",
    "newsletter",  # no rule: default deny
]
_REQUESTERS = ["carol"] * 12 + ["alice", "bob", "dana", "ken", "nora", "ivan", "zoe"]
_AGENTS = ["billing-bot", "support-bot", "data-agent", "procurement-bot", "comms-agent"]
# (action, weight): the traffic an enterprise gateway sees, by share of requests
_ENTERPRISE_MIX = [
    ("payments.transfer", 28),
    ("accounts.close", 2),
    ("accounts.change_owner", 1),
    ("data.read", 16),
    ("data.write", 7),
    ("data.export", 8),
    ("comms.send", 16),
    ("procurement.purchase_order", 10),
    ("procurement.add_vendor", 3),
    ("procurement.change_supplier_terms", 4),
    ("shell.exec", 3),  # named by no rule: only the `*` rule applies, then the default
    ("files.delete", 2),
]


def _enterprise_params(rng: random.Random, action: str) -> dict[str, Any]:
    if action == "payments.transfer":
        return {
            "amount": round(math.exp(rng.uniform(math.log(5), math.log(60_000))), 2),
            "currency": "USD",
            "destination_country": rng.choice(_COUNTRIES),
            "payee_id": f"p-{rng.randrange(1000)}",
            "account_number": f"{rng.randrange(10**9):09d}",
        }
    if action.startswith("accounts."):
        return {"account_id": f"acct-{rng.randrange(10_000)}"}
    if action.startswith("data."):
        params: dict[str, Any] = {
            "classification": rng.choice(_CLASSES),
            "table": rng.choice(["customers", "orders", "claims", "config"]),
        }
        if action == "data.export":
            params["rows"] = rng.choice([10, 200, 900, 5_000, 250_000])
            if rng.random() < 0.1:
                params["bulk"] = True
        return params
    if action == "comms.send":
        return {
            "category": rng.choice(_CATEGORIES),
            "to": f"someone{rng.randrange(500)}@partner.example",
        }
    if action == "procurement.purchase_order":
        return {"amount": rng.randrange(100, 40_000), "vendor_id": f"v-{rng.randrange(300)}"}
    if action == "procurement.add_vendor":
        return {"vendor_name": f"Vendor {rng.randrange(300)}"}
    if action == "procurement.change_supplier_terms":
        changes = rng.choice([["payment_terms"], ["bank_details"], ["payment_terms", "sla"]])
        return {"vendor_id": f"v-{rng.randrange(300)}", "changes": changes, "iban": "DE89…"}
    return {"path": f"/tmp/f{rng.randrange(100)}"}


def enterprise_requests(rng: random.Random, n: int) -> list[Request]:
    """`n` requests in the mix of `_ENTERPRISE_MIX`, with plausible arguments and risk."""
    actions = [a for a, _ in _ENTERPRISE_MIX]
    weights = [w for _, w in _ENTERPRISE_MIX]
    out = []
    for action in rng.choices(actions, weights, k=n):
        context: dict[str, Any] = {"ip": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"}
        if rng.random() < 0.01:
            context["suspicious"] = True
        score = _risk_score(rng)
        out.append(
            Request(
                action=action,
                params=_enterprise_params(rng, action),
                actor={"user": rng.choice(_REQUESTERS), "agent": rng.choice(_AGENTS)},
                context=context,
                labels=("pii",) if rng.random() < 0.2 else (),
                risk={"score": score, "reasons": []},
            )
        )
    return out


def build_enterprise_case(n_requests: int = POOL, seed: int = SEED) -> EngineCase:
    started = time.perf_counter()
    policy = load_policy(ENTERPRISE)
    loaded = time.perf_counter()
    engine = Engine(policy)
    return EngineCase(
        name="enterprise",
        engine=engine,
        requests=enterprise_requests(random.Random(seed), n_requests),
        setup_s={"load": loaded - started, "index": time.perf_counter() - loaded},
    )


# ---------------------------------------------------------------------------------------------
# (b) A synthetic policy: 10,000 rules over 1,000 actions


@dataclass(frozen=True)
class SyntheticShape:
    rules: int = 10_000
    services: int = 100
    ops_per_service: int = 10  # services × ops = actions
    globs_per_service: int = 2
    people: int = 200
    groups: int = 20

    @property
    def actions(self) -> list[str]:
        return [f"svc{s}.op{o}" for s in range(self.services) for o in range(self.ops_per_service)]


_REGIONS = [f"r{i}" for i in range(10)]
_TIERS = ["gold", "silver", "bronze"]
_LABELS = ["pii", "finance", "hr", "secret"]
_GEOS = ["US", "US", "US", "DE", "FR", "JP", "BR"]


def _stages(rng: random.Random, shape: SyntheticShape) -> str:
    first, second = rng.sample(range(shape.groups), 2)
    return (
        "{stages: ["
        f"{{name: s1, approvers: [group:team{first}], required: 1}}, "
        f"{{name: s2, approvers: [group:team{second}], required: 2}}"
        "], timeout: 4h}"
    )


def _synthetic_rule(
    rng: random.Random, rid: str, action: str, k: int, shape: SyntheticShape
) -> str:
    """One rule for `action`; `k` picks the kind, so every action gets a spread of them."""
    n = rng.randrange(100, 100_000)
    region = rng.choice(_REGIONS)
    head = f"  - {{id: {rid}, actions: [{action}], "
    kind = k % 10
    if kind == 0:
        when, effect = f"params.amount > {n} && params.region == '{region}'", "allow"
    elif kind == 1:
        when, effect = f"params.amount <= {n} && params.tier == 'gold'", "allow"
    elif kind == 2:
        other = rng.choice(_REGIONS)
        when, effect = (
            f"params.region in ['{region}', '{other}'] && params.tier != 'bronze'",
            "allow",
        )
    elif kind == 3:
        when, effect = f"actor.agent == 'agent{rng.randrange(20)}'", "deny"
    elif kind == 4:
        when = f"params.amount > {n} && has(params.urgent) && params.urgent == true"
        return f'{head}when: "{when}", effect: approve, approval: {_stages(rng, shape)}}}\n'
    elif kind == 5:
        when, effect = f"risk.score >= {rng.randrange(60, 95)}", "deny"
    elif kind == 6:
        when, effect = f"'{rng.choice(_LABELS)}' in labels && params.amount > {n}", "deny"
    elif kind == 7:
        when, effect = f"context.geo != 'US' && params.amount > {n}", "deny"
    elif kind == 8:
        when, effect = f"params.tier == 'bronze' || params.amount < {n // 10}", "allow"
    else:
        return f"{head}effect: allow}}\n"  # unconditional
    return f'{head}when: "{when}", effect: {effect}}}\n'


def synthetic_policy_yaml(shape: SyntheticShape = SyntheticShape(), seed: int = SEED) -> str:
    """The YAML text of a generated policy: `shape.rules` rules over `shape.actions`."""
    rng = random.Random(seed)
    lines = ["version: 1\n", "directory:\n", "  people:\n"]
    for i in range(shape.people):
        groups = {f"team{i % shape.groups}"}
        if rng.random() < 0.3:
            groups.add(f"team{rng.randrange(shape.groups)}")
        lines.append(
            f"    - {{id: p{i}, name: Person {i}, email: p{i}@example.com, "
            f"groups: [{', '.join(sorted(groups))}]}}\n"
        )
    lines += ["policies:\n", "  default: deny\n", "  rules:\n"]
    count = 0
    lines.append(
        "  - {id: any-risky, actions: ['*'], when: 'risk.score >= 90', effect: block, "
        "alert: [group:team0]}\n"
    )
    count += 1
    for s in range(shape.services):
        for g in range(shape.globs_per_service):
            rid = f"svc{s}-glob{g}"
            if g % 2 == 0:
                lines.append(
                    f"  - {{id: {rid}, actions: ['svc{s}.*'], when: \"'secret' in labels\", "
                    f"effect: approve, approval: {_stages(rng, shape)}}}\n"
                )
            else:
                lines.append(
                    f"  - {{id: {rid}, actions: ['svc{s}.*'], "
                    f"when: \"params.region == '{rng.choice(_REGIONS)}' && params.amount > "
                    f'{rng.randrange(50_000, 100_000)}", effect: deny}}\n'
                )
            count += 1
    actions = shape.actions
    i = 0
    while count < shape.rules:
        action = actions[i % len(actions)]
        lines.append(_synthetic_rule(rng, f"r{i}", action, i // len(actions) + i, shape))
        count += 1
        i += 1
    return "".join(lines)


def _risk_score(rng: random.Random) -> int:
    """Mostly low; one request in fifty looks suspicious."""
    return rng.randrange(80, 100) if rng.random() < 0.02 else rng.randrange(0, 60)


def synthetic_requests(rng: random.Random, actions: Sequence[str], n: int) -> list[Request]:
    out = []
    for _ in range(n):
        params: dict[str, Any] = {
            "amount": rng.randrange(1, 100_000),
            "region": rng.choice(_REGIONS),
            "tier": rng.choice(_TIERS),
        }
        if rng.random() < 0.3:
            params["urgent"] = rng.random() < 0.5
        labels = tuple(label for label in _LABELS if rng.random() < 0.1)
        out.append(
            Request(
                action=rng.choice(actions),
                params=params,
                actor={"user": f"p{rng.randrange(200)}", "agent": f"agent{rng.randrange(20)}"},
                context={"geo": rng.choice(_GEOS)},
                labels=labels,
                risk={"score": _risk_score(rng), "reasons": []},
            )
        )
    return out


def build_synthetic_case(
    n_requests: int = POOL, seed: int = SEED, shape: SyntheticShape = SyntheticShape()
) -> EngineCase:
    """Generate, load and index the synthetic policy; time each phase (seconds)."""
    t0 = time.perf_counter()
    text = synthetic_policy_yaml(shape, seed)
    t1 = time.perf_counter()
    policy = load_policy_text(text, "synthetic.yaml")
    t2 = time.perf_counter()
    engine = Engine(policy)
    t3 = time.perf_counter()
    rng = random.Random(seed + 1)
    case = EngineCase(
        name="synthetic",
        engine=engine,
        requests=synthetic_requests(rng, shape.actions, n_requests),
        setup_s={"generate": t1 - t0, "load": t2 - t1, "index": t3 - t2},
    )
    if len(policy.rules) != shape.rules:
        raise RuntimeError(f"generated {len(policy.rules)} rules, wanted {shape.rules}")
    return case


def warm_every_action(case: EngineCase, actions: Sequence[str]) -> float:
    """Use every action group once (built and cached on first use); return the seconds taken."""
    template = case.requests[0]
    started = time.perf_counter()
    for action in actions:
        case.engine.evaluate(
            Request(action, template.params, template.actor, template.context, (), template.risk)
        )
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# (c) The same 12 rules in Clearance and in Cedar


_GROUPS_C = {
    "managers": ["alice", "bob"],
    "finance": ["dana", "erin", "bob"],
    "analysts": ["fay", "gus", "hal"],
    "clinicians": ["grace", "ian"],
    "admins": ["ivan", "jon"],
    "contractors": ["kim", "lou", "gus"],
}
_USERS_C = sorted({u for members in _GROUPS_C.values() for u in members} | {"carol", "zed"})
_SANCTIONED = ["KP", "IR", "SY", "CU"]


def _in_group(group: str) -> str:
    members = ", ".join(f"'{m}'" for m in _GROUPS_C[group])
    return f"actor.user in [{members}]"


# (id, clearance actions, clearance condition, effect, cedar policy). Clearance has no
# directory-group test inside CEL, so a group is written as the list of its members; Cedar
# tests `principal in Group::"…"` through its entity hierarchy. Both say the same thing.
_SANC = ", ".join(f"'{c}'" for c in _SANCTIONED)
_SANC_CEDAR = ", ".join(f'"{c}"' for c in _SANCTIONED)
RULES_12: list[tuple[str, list[str], str | None, str, str]] = [
    (
        "pay-small-domestic",
        ["payments.transfer"],
        "params.amount < 500 && params.country == 'US'",
        "allow",
        'permit(principal, action == Action::"payments.transfer", resource)\n'
        '  when { context.amount < 500 && context.country == "US" };',
    ),
    (
        "pay-managers",
        ["payments.transfer"],
        f"{_in_group('managers')} && params.amount <= 5000",
        "allow",
        'permit(principal in Group::"managers", action == Action::"payments.transfer", resource)\n'
        "  when { context.amount <= 5000 };",
    ),
    (
        "pay-finance",
        ["payments.transfer"],
        f"{_in_group('finance')} && params.amount <= 50000",
        "allow",
        'permit(principal in Group::"finance", action == Action::"payments.transfer", resource)\n'
        "  when { context.amount <= 50000 };",
    ),
    (
        "pay-sanctioned",
        ["payments.transfer"],
        f"params.country in [{_SANC}]",
        "deny",
        'forbid(principal, action == Action::"payments.transfer", resource)\n'
        f"  when {{ [{_SANC_CEDAR}].contains(context.country) }};",
    ),
    (
        "pay-huge",
        ["payments.transfer"],
        "params.amount > 100000",
        "deny",
        'forbid(principal, action == Action::"payments.transfer", resource)\n'
        "  when { context.amount > 100000 };",
    ),
    (
        "data-general",
        ["data.read", "data.export"],
        "params.classification == 'general'",
        "allow",
        'permit(principal, action in [Action::"data.read", Action::"data.export"], resource)\n'
        '  when { context.classification == "general" };',
    ),
    (
        "data-financial-analysts",
        ["data.read"],
        f"params.classification == 'personal_financial' && {_in_group('analysts')}",
        "allow",
        'permit(principal in Group::"analysts", action == Action::"data.read", resource)\n'
        '  when { context.classification == "personal_financial" };',
    ),
    (
        "data-medical-clinicians",
        ["data.read", "data.write"],
        f"params.classification == 'medical' && {_in_group('clinicians')}",
        "allow",
        'permit(principal in Group::"clinicians", '
        'action in [Action::"data.read", Action::"data.write"], resource)\n'
        '  when { context.classification == "medical" };',
    ),
    (
        "data-no-medical-export",
        ["data.export"],
        "params.classification == 'medical'",
        "deny",
        'forbid(principal, action == Action::"data.export", resource)\n'
        '  when { context.classification == "medical" };',
    ),
    (
        "data-write-admins",
        ["data.write"],
        f"{_in_group('admins')} && params.classification != 'medical'",
        "allow",
        'permit(principal in Group::"admins", action == Action::"data.write", resource)\n'
        '  when { context.classification != "medical" };',
    ),
    (
        "suspicious",
        ["*"],
        "risk.score >= 80",
        "deny",
        "forbid(principal, action, resource)\n  when { context.risk >= 80 };",
    ),
    (
        "contractors-read-only",
        ["data.write", "data.export"],
        _in_group("contractors"),
        "deny",
        'forbid(principal in Group::"contractors", '
        'action in [Action::"data.write", Action::"data.export"], resource);',
    ),
]

CEDAR_SCHEMA = """
entity Group;
entity User in [Group];
entity Resource;
action "payments.transfer" appliesTo {
  principal: [User], resource: [Resource],
  context: { amount: Long, country: String, risk: Long }
};
action "data.read", "data.write", "data.export" appliesTo {
  principal: [User], resource: [Resource],
  context: { classification: String, risk: Long }
};
action "comms.send" appliesTo {
  principal: [User], resource: [Resource],
  context: { category: String, risk: Long }
};
"""


def comparison_policy_yaml() -> str:
    lines = ["version: 1\n", "directory:\n", "  people:\n"]
    for user in _USERS_C:
        groups = [g for g, members in _GROUPS_C.items() if user in members]
        lines.append(f"    - {{id: {user}, groups: [{', '.join(groups)}]}}\n")
    lines += ["policies:\n", "  default: deny\n", "  rules:\n"]
    for rid, actions, when, effect, _ in RULES_12:
        quoted = ", ".join(f"'{a}'" for a in actions)
        cond = f', when: "{when}"' if when else ""
        lines.append(f"  - {{id: {rid}, actions: [{quoted}]{cond}, effect: {effect}}}\n")
    return "".join(lines)


def comparison_policy_cedar() -> str:
    return "\n\n".join(f'@id("{rid}")\n{cedar}' for rid, _, _, _, cedar in RULES_12) + "\n"


def comparison_entities_json() -> str:
    entities: list[dict[str, Any]] = [
        {"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in _GROUPS_C
    ]
    entities.append({"uid": {"type": "Resource", "id": "gateway"}, "attrs": {}, "parents": []})
    for user in _USERS_C:
        parents = [{"type": "Group", "id": g} for g, m in _GROUPS_C.items() if user in m]
        entities.append({"uid": {"type": "User", "id": user}, "attrs": {}, "parents": parents})
    return json.dumps(entities)


@dataclass
class ComparisonCase:
    """One policy in two languages, and the same requests phrased for each engine."""

    engine: Engine
    policies: Any  # cedarpy.PolicySet
    entities: Any  # cedarpy.Entities
    clearance_requests: list[Request]
    cedar_requests: list[dict[str, Any]]

    def clearance_allows(self, request: Request) -> bool:
        return self.engine.evaluate(request).effect is Effect.ALLOW

    def cedar_allows(self, request: dict[str, Any]) -> bool:
        return bool(cedarpy.is_authorized(request, self.policies, self.entities).allowed)


def comparison_requests(rng: random.Random, n: int) -> tuple[list[Request], list[dict[str, Any]]]:
    clearance: list[Request] = []
    cedar: list[dict[str, Any]] = []
    countries = ["US"] * 6 + ["GB", "DE", "KP", "IR", "MX"]
    classes = ["general", "general", "personal_financial", "medical", "system_config"]
    for _ in range(n):
        user = rng.choice(_USERS_C)
        risk = rng.randrange(80, 100) if rng.random() < 0.05 else rng.randrange(0, 80)
        roll = rng.random()
        if roll < 0.45:
            action = "payments.transfer"
            amount = rng.choice(
                [rng.randrange(1, 500), rng.randrange(500, 5001), rng.randrange(5001, 200_000)]
            )
            params: dict[str, Any] = {"amount": amount, "country": rng.choice(countries)}
        elif roll < 0.9:
            action = rng.choice(["data.read", "data.write", "data.export"])
            params = {"classification": rng.choice(classes)}
        else:
            action = "comms.send"  # no rule permits it: both engines deny by default
            params = {"category": rng.choice(["media", "customer_response"])}
        clearance.append(
            Request(action, params, {"user": user}, {}, (), {"score": risk, "reasons": []})
        )
        cedar.append(
            {
                "principal": f'User::"{user}"',
                "action": f'Action::"{action}"',
                "resource": 'Resource::"gateway"',
                "context": {**params, "risk": risk},
            }
        )
    return clearance, cedar


def build_comparison_case(n_requests: int = POOL, seed: int = SEED) -> ComparisonCase:
    engine = Engine(load_policy_text(comparison_policy_yaml(), "twelve.yaml"))
    cedar_text = comparison_policy_cedar()
    schema = cedarpy.Schema.from_str(CEDAR_SCHEMA)
    validation = cedarpy.validate_policies(cedar_text, schema)
    if not validation.validation_passed:
        raise RuntimeError(f"Cedar policies do not validate: {validation.errors}")
    policies = cedarpy.PolicySet.from_str(cedar_text)
    entities = cedarpy.Entities.from_json_str(comparison_entities_json(), schema)
    clearance, cedar = comparison_requests(random.Random(seed + 2), n_requests)
    return ComparisonCase(engine, policies, entities, clearance, cedar)


def check_agreement(case: ComparisonCase) -> list[int]:
    """Indexes of the requests on which the two engines disagree (empty when they agree)."""
    return [
        i
        for i, (ours, theirs) in enumerate(
            zip(case.clearance_requests, case.cedar_requests, strict=True)
        )
        if case.clearance_allows(ours) != case.cedar_allows(theirs)
    ]


def time_comparison(case: ComparisonCase, n: int) -> tuple[Stats, Stats, Stats, int]:
    """Time both engines on the same `n` requests, alternating every CHUNK requests.

    Returns (Clearance, cedarpy, cedarpy with its context pre-serialized, agreements): every
    timed decision of the three is compared, and a disagreement raises.
    """
    engine = case.engine
    policies, entities = case.policies, case.entities
    is_authorized = cedarpy.is_authorized

    def ours(request: Request) -> Any:
        return engine.evaluate(request)

    def theirs(request: dict[str, Any]) -> Any:
        return is_authorized(request, policies, entities)

    # cedarpy turns a dict context into JSON on every call; pre-serialized, that work is gone.
    cedar_str = [{**r, "context": json.dumps(r["context"])} for r in case.cedar_requests]

    def allowed(result: Any) -> bool:
        return bool(result.allowed)

    def allow_effect(decision: Any) -> bool:
        return decision.effect is Effect.ALLOW

    warm_up(ours, case.clearance_requests)
    warm_up(theirs, case.cedar_requests)
    warm_up(theirs, cedar_str)
    gc.collect()
    t_ours: list[int] = []
    t_theirs: list[int] = []
    t_str: list[int] = []
    agree = 0
    done = 0
    while done < n:
        step = min(CHUNK, n - done)
        a, out_a = time_calls(ours, case.clearance_requests, step, allow_effect, start=done)
        b, out_b = time_calls(theirs, case.cedar_requests, step, allowed, start=done)
        c, out_c = time_calls(theirs, cedar_str, step, allowed, start=done)
        t_ours += a
        t_theirs += b
        t_str += c
        for k, (x, y, z) in enumerate(zip(out_a, out_b, out_c, strict=True)):
            if not x == y == z:
                req = case.clearance_requests[(done + k) % len(case.clearance_requests)]
                raise AssertionError(
                    f"Clearance and Cedar disagree on {req}: Clearance allow={x}, "
                    f"cedarpy allow={y} (pre-serialized context: {z})"
                )
            agree += 1
        done += step
    return Stats.of(t_ours), Stats.of(t_theirs), Stats.of(t_str), agree


# ---------------------------------------------------------------------------------------------
# The run


def _effects(outs: Sequence[Effect]) -> str:
    counts = Counter(str(e) for e in outs)
    total = sum(counts.values())
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in counts.most_common())


def _require_no_errors(case: EngineCase) -> None:
    failed = evaluation_errors(case)
    if failed:
        raise AssertionError(f"{len(failed)} {case.name} requests hit errors: {failed[0].errors}")


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def run(n: int, shape: SyntheticShape = SyntheticShape()) -> int:
    """Run the three cases with `n` timed decisions each; print the figures and the table."""
    print(f"python {sys.version.split()[0]}, cedarpy via PolicySet/Entities handles, seed {SEED}")
    overhead = timer_overhead_us()
    print(f"timer: an empty perf_counter_ns window costs {overhead:.2f} µs (included below)")
    rows: list[tuple[str, str, str, str, str]] = []

    # (a)
    print("\n(a) enterprise example …", flush=True)
    ent = build_enterprise_case()
    stats_a, outs_a = _timed_run(ent.engine.evaluate, ent.requests, n, _effect)
    _require_no_errors(ent)
    print(f"    {len(ent.engine.policy.rules)} rules, {len(ent.requests):,} distinct requests")
    print(f"    effects: {_effects(outs_a)}")
    print(f"    {stats_a}")
    rows.append(
        (
            "(a) enterprise example, realistic mix",
            f"{stats_a.median_us:.2f}",
            f"{stats_a.p99_us:.2f}",
            f"median ≤ {TARGET_A_US:g} µs",
            _verdict(stats_a.median_us <= TARGET_A_US),
        )
    )

    # (b)
    label_b = f"{shape.rules:,} rules / {len(shape.actions):,} actions"
    print(f"\n(b) synthetic {label_b} …", flush=True)
    syn = build_synthetic_case(shape=shape)
    first_use = warm_every_action(syn, shape.actions)
    setup = syn.setup_s
    print(
        f"    YAML {setup['generate']:.2f} s to generate; load+compile {setup['load']:.2f} s "
        f"(parse, check, compile {len(syn.engine.policy.conditions):,} CEL conditions); "
        f"index {setup['index'] * 1000:.0f} ms; first use of all {len(shape.actions):,} "
        f"action groups {first_use:.2f} s (fused programs built)"
    )
    stats_b, outs_b = _timed_run(syn.engine.evaluate, syn.requests, n, _effect)
    _require_no_errors(syn)
    print(f"    warm (every action group used once before timing); effects: {_effects(outs_b)}")
    print(f"    {stats_b}")
    rows.append(
        (
            f"(b) {label_b}, warm",
            f"{stats_b.median_us:.2f}",
            f"{stats_b.p99_us:.2f}",
            f"median ≤ {TARGET_B_US:g} µs",
            _verdict(stats_b.median_us <= TARGET_B_US),
        )
    )
    rows.append(
        (
            f"    load+compile {shape.rules:,} rules; first use of all groups",
            f"{setup['load']:.1f} s",
            f"{first_use:.1f} s",
            "(no target)",
            "",
        )
    )

    # (c)
    print("\n(c) 12 rules: Clearance vs cedarpy …", flush=True)
    cmp_case = build_comparison_case()
    bad = check_agreement(cmp_case)
    pool = len(cmp_case.clearance_requests)
    print(f"    agreement on the {pool:,} distinct requests: {pool - len(bad):,}/{pool:,}")
    if bad:
        i = bad[0]
        raise AssertionError(
            f"{len(bad)} disagreements, first: {cmp_case.clearance_requests[i]} vs "
            f"{cmp_case.cedar_requests[i]}"
        )
    ours, theirs, theirs_str, agree = time_comparison(cmp_case, n)
    print(f"    agreement on every timed decision: {agree:,}/{n:,}")
    print(f"    Clearance                      {ours}")
    print(f"    cedarpy (dict context)         {theirs}")
    print(f"    cedarpy (context pre-JSON'd)   {theirs_str}")
    ratio = theirs.median_us / ours.median_us
    ratio_str = theirs_str.median_us / ours.median_us
    rows.append(("(c) 12 rules, Clearance", f"{ours.median_us:.2f}", f"{ours.p99_us:.2f}", "", ""))
    rows.append(
        ("(c) 12 rules, cedarpy", f"{theirs.median_us:.2f}", f"{theirs.p99_us:.2f}", "", "")
    )
    rows.append(
        (
            "(c) 12 rules, cedarpy, context pre-JSON'd",
            f"{theirs_str.median_us:.2f}",
            f"{theirs_str.p99_us:.2f}",
            "",
            "",
        )
    )
    rows.append(
        (
            "(c) ratio cedarpy / Clearance (median)",
            f"{ratio:.2f}×",
            f"{theirs.p99_us / ours.p99_us:.2f}×",
            f"≥ {TARGET_C_RATIO:g}×",
            _verdict(ratio >= TARGET_C_RATIO),
        )
    )
    rows.append(
        (
            "    ratio, cedarpy context pre-JSON'd",
            f"{ratio_str:.2f}×",
            f"{theirs_str.p99_us / ours.p99_us:.2f}×",
            f"≥ {TARGET_C_RATIO:g}×",
            _verdict(ratio_str >= TARGET_C_RATIO),
        )
    )
    rows.append(("(c) agreement, timed decisions", f"{agree:,}/{n:,}", "", "all agree", "MET"))

    print(f"\nPolicy engine, µs per decision, {n:,} decisions a case (seed {SEED})")
    header = ("case", "median µs", "p99 µs", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    fmt = f"{{:<{widths[0]}}}  {{:>{widths[1]}}}  {{:>{widths[2]}}}  {{:<{widths[3]}}}  {{}}"
    print(fmt.format(*header))
    for row in rows:
        print(fmt.format(*row))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_N:,} decisions a case")
    parser.add_argument("-n", type=int, default=None, help="decisions a case")
    args = parser.parse_args(list(argv) if argv is not None else [])
    n = args.n or (QUICK_N if args.quick else FULL_N)
    return run(n)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
