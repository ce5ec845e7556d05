"""`allow_always:` and `controls:` in the policy file: loaded, or refused with file:line."""

from __future__ import annotations

import pytest

from clearance.policy import PolicyError, load_policy_text
from clearance.policy.model import Controls

from .helpers import POLICY

BASE = """
version: 1
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [managers]}
    - {id: sam, groups: [security]}
policies:
  rules:
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_the_controls_policy_loads() -> None:
    """allow_always and controls load into the model (resolved people, seconds)."""
    policy = load_policy_text(POLICY, "p.yaml")
    rule = next(r for r in policy.rules if r.id == "vendor-payment")
    assert rule.allow_always is not None and rule.allow_always.max_ttl_s == 30 * 86400
    assert rule.allow_always.scope == ("actor.agent", "params.payee_id")
    controls = policy.settings["controls"]
    assert isinstance(controls, Controls) and controls.remember_denials_s == 3600
    assert controls.override is not None
    assert controls.override.review_by == ("frank", "gina", "sam")
    assert (controls.override.rate_limit, controls.override.rate_window_s) == (2, 86400)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "    - {id: r, actions: [a], effect: allow, "
            "allow_always: {max_ttl: 1d, scope: [actor.agent]}}",
            "p.yaml:10:44: [rule r] allow_always: only applies to approve rules",
        ),
        (
            "    - {id: r, actions: [a], effect: approve, approval: {approvers: [group:managers],"
            " required: 2}, allow_always: {max_ttl: 1d, scope: [actor.agent]}}",
            "one approver cannot grant for a multi-stage or N-of-M approval",
        ),
        (
            "    - {id: r, actions: [a], effect: approve, approval: {approvers: [alice]}, "
            "allow_always: {max_ttl: forever, scope: [actor.agent]}}",
            "is not a duration",
        ),
        (
            "    - {id: r, actions: [a], effect: approve, approval: {approvers: [alice]}, "
            "allow_always: {max_ttl: 1d, scope: [context.ip]}}",
            "a scope entry is actor.<field> or params.<name>",
        ),
        (
            "    - {id: r, actions: [a], effect: approve, approval: {approvers: [alice]}, "
            "allow_always: {max_ttl: 1d, scope: []}}",
            "allow_always.scope",
        ),
        (
            "    - {id: r, actions: [a], effect: approve, approval: {approvers: [alice]}, "
            "allow_always: {max_tl: 1d, scope: [actor.agent]}}",
            "did you mean 'max_ttl'?",
        ),
    ],
)
def test_bad_allow_always_is_a_lint_error(rule: str, expected: str) -> None:
    """Each misuse of allow_always is refused with its location and a hint."""
    found = problems(BASE + rule + "\n")
    assert any(expected in p for p in found), found
    assert all(p.startswith("p.yaml:") for p in found)


@pytest.mark.parametrize(
    ("controls", "expected"),
    [
        ("controls: {override: {review_by: [group:securty]}}", "unknown group 'securty'"),
        ("controls: {override: {review_by: [sam], rate_limit: often}}", "is not a rate"),
        ("controls: {override: {role: emergency}}", "'review_by' is required"),
        ("controls: {remember_denials: soon}", "is not a duration"),
        ("controls: {remember: 1h}", "did you mean 'remember_denials'?"),
    ],
)
def test_bad_controls_are_lint_errors(controls: str, expected: str) -> None:
    """Wrong controls settings are refused with file:line and a hint."""
    rule = "    - {id: r, actions: [a], effect: allow}\n"
    found = problems(BASE + rule + controls + "\n")
    assert any(expected in p for p in found), found
