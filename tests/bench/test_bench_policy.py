"""Smoke tests for the policy benchmark (`bench/bench_policy.py`).

They run the benchmark's case builders with a tiny N and prove that what it times is sound:
the Clearance and Cedar versions of the 12-rule policy decide every request alike (and the
check would notice if they did not), the 10,000-rule synthetic policy loads and evaluates
without condition errors, and the whole run prints its table. No figure is asserted:
wall-clock numbers belong in the benchmark's output, never in a test.
"""

from __future__ import annotations

from collections import Counter

import cedarpy
import pytest
from bench.bench_policy import (
    RULES_12,
    ComparisonCase,
    EngineCase,
    SyntheticShape,
    build_comparison_case,
    build_enterprise_case,
    build_synthetic_case,
    check_agreement,
    comparison_policy_cedar,
    evaluation_errors,
    run,
    time_comparison,
    warm_every_action,
)

from clearance.policy import Effect

N = 400


@pytest.fixture(scope="module")
def comparison() -> ComparisonCase:
    return build_comparison_case(n_requests=N)


@pytest.fixture(scope="module")
def synthetic() -> EngineCase:
    return build_synthetic_case(n_requests=N)


def test_cedar_and_clearance_agree_on_every_request(comparison: ComparisonCase) -> None:
    """Both engines reach the same allow/deny outcome on every request of the comparison."""
    assert check_agreement(comparison) == []


def test_comparison_requests_exercise_every_rule(comparison: ComparisonCase) -> None:
    """The agreement is not vacuous: both outcomes occur and each of the 12 rules decides."""
    outcomes = Counter(comparison.clearance_allows(r) for r in comparison.clearance_requests)
    assert outcomes[True] > 0 and outcomes[False] > 0
    deciding = {
        rule
        for request in comparison.clearance_requests
        for rule in comparison.engine.evaluate(request).rules
    }
    assert deciding == {rule_id for rule_id, *_ in RULES_12}


def test_timed_comparison_checks_every_decision(comparison: ComparisonCase) -> None:
    """The timed loop compares every decision it times and counts each agreement."""
    *_, agreed = time_comparison(comparison, 250)
    assert agreed == 250


def test_agreement_check_catches_a_diverging_cedar_policy(comparison: ComparisonCase) -> None:
    """With one Cedar forbid dropped, the check reports disagreements and the timed loop raises."""
    text = comparison_policy_cedar()
    without = text.replace(
        "forbid(principal, action, resource)\n  when { context.risk >= 80 };", ""
    )
    assert without != text
    broken = ComparisonCase(
        engine=comparison.engine,
        policies=cedarpy.PolicySet.from_str(without.replace('@id("suspicious")', "")),
        entities=comparison.entities,
        clearance_requests=comparison.clearance_requests,
        cedar_requests=comparison.cedar_requests,
    )
    assert check_agreement(broken)
    with pytest.raises(AssertionError, match="disagree"):
        time_comparison(broken, N)


def test_synthetic_policy_loads_and_evaluates(synthetic: EngineCase) -> None:
    """10,000 generated rules load; every one of the 1,000 actions and each request evaluates."""
    shape = SyntheticShape()
    policy = synthetic.engine.policy
    assert len(policy.rules) == 10_000
    assert len(policy.directory.people) == 200 and len(policy.directory.groups) == 20
    warm_every_action(synthetic, shape.actions)
    assert evaluation_errors(synthetic) == []
    decisions = [synthetic.engine.evaluate(r) for r in synthetic.requests]
    effects = Counter(d.effect for d in decisions)
    assert {Effect.ALLOW, Effect.DENY, Effect.APPROVE} <= set(effects)
    approvals = [d.approval for d in decisions if d.effect is Effect.APPROVE]
    assert approvals and all(a is not None and len(a.stages) >= 2 for a in approvals)


def test_enterprise_requests_evaluate_without_errors() -> None:
    """The enterprise mix reaches every effect, and no request makes a condition fail."""
    case = build_enterprise_case(n_requests=N)
    assert evaluation_errors(case) == []
    effects = {case.engine.evaluate(r).effect for r in case.requests}
    assert effects == set(Effect)


def test_run_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    """A whole run with a tiny N and a small synthetic policy prints every row of the table."""
    small = SyntheticShape(rules=300, services=5, globs_per_service=2)
    assert run(200, shape=small) == 0
    out = capsys.readouterr().out
    for row in ("(a) enterprise", "(b) 300 rules / 50 actions", "(c) ratio", "200/200"):
        assert row in out
