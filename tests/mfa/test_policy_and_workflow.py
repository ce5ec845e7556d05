"""`mfa:` and `require_context:` in the policy (loading, errors with file:line) and in the
pure workflow (which votes count)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clearance.approvals import workflow
from clearance.approvals.model import Vote, VoteDecision
from clearance.policy import Engine, PolicyError, Request, load_policy_text
from clearance.policy.model import ResolvedPlan

from .helpers import POLICY

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def test_stage_and_rule_settings_reach_the_decision() -> None:
    """A stage's `mfa` and a rule's `require_context` appear in the resolved plan and survive
    a JSON round trip (stored plans of older approvals read back unchanged)."""
    engine = Engine(load_policy_text(POLICY))
    decision = engine.evaluate(Request("payments.transfer", {"amount": 60000}, {"user": "carol"}))
    assert decision.approval is not None
    stages = decision.approval.to_json()["stages"]
    assert "mfa" not in stages[0] and stages[1]["mfa"] == "totp"
    assert ResolvedPlan.from_json(decision.approval.to_json()) == decision.approval
    wire = engine.evaluate(Request("payments.wire", {}, {"user": "carol"}))
    assert wire.approval is not None
    assert wire.approval.to_json()["stages"][0]["require_context"] == {"approver_geo": ["US"]}


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("      mfa: sms\n", "mfa"),
        ("      require_context: {approver_goe: [US]}\n", "did you mean 'approver_geo'?"),
        ("      require_context: {approver_geo: []}\n", "at least one allowed value"),
    ],
)
def test_bad_step_up_settings_are_load_errors_with_a_line(snippet: str, expected: str) -> None:
    """An unknown method, an unknown fact or an empty list is reported with file:line."""
    text = POLICY.replace("      require_context: {approver_geo: [US]}\n", snippet)
    with pytest.raises(PolicyError) as error:
        load_policy_text(text, "p.yaml")
    message = str(error.value)
    assert expected in message and "p.yaml:" in message


def test_step_up_on_an_allow_rule_is_an_error() -> None:
    """`mfa:` on a rule that is not `approve` governs nothing: refused with its location."""
    rules = POLICY.split("server:")[0]
    text = rules + "    - {id: open, actions: [x], effect: allow, mfa: totp}\n"
    line = text.count("\n")
    with pytest.raises(PolicyError, match=f"p.yaml:{line}:.*only applies to approve rules"):
        load_policy_text(text, "p.yaml")


def _approval(stage: dict[str, object]) -> workflow.Approval:
    plan = ResolvedPlan.from_json({"stages": [stage], "timeout_s": 3600})
    return workflow.open_approval(
        approval_id="apr_1", action="a", params={}, binding_hash="h",
        actor={"user": "carol"}, plan=plan, now=NOW,
    )  # fmt: skip


def _vote(factor: str | None = None, geo: str | None = None) -> Vote:
    return Vote("alice", VoteDecision.APPROVE, 0, NOW, factor=factor, geo=geo)


@pytest.mark.parametrize(
    ("required", "factor", "counts"),
    [
        ("totp", "totp", True),
        ("totp", "webauthn", False),
        ("totp", None, False),
        ("webauthn", "webauthn", True),
        ("webauthn", "totp", False),
        ("any", "totp", True),
        ("any", "webauthn", True),
        ("any", None, False),
    ],
)
def test_which_factor_satisfies_which_stage(
    required: str, factor: str | None, counts: bool
) -> None:
    """`mfa: totp|webauthn` needs that kind; `any` takes either; none never counts."""
    a = _approval({"name": "s", "approvers": ["alice"], "required": 1, "mfa": required})
    if counts:
        assert workflow.cast_vote(a, _vote(factor), NOW).approval.state.value == "approved"
    else:
        with pytest.raises(workflow.VoteRejected) as refused:
            workflow.cast_vote(a, _vote(factor), NOW)
        assert refused.value.code == "mfa_required"


def test_location_rules_in_the_workflow() -> None:
    """Unknown location: context_required; elsewhere: context_mismatch; allowed: counts."""
    a = _approval(
        {"name": "s", "approvers": ["alice"], "required": 1,
         "require_context": {"approver_geo": ["US", "CA"]}}
    )  # fmt: skip
    with pytest.raises(workflow.VoteRejected) as unknown:
        workflow.cast_vote(a, _vote(), NOW)
    assert unknown.value.code == "context_required"
    with pytest.raises(workflow.VoteRejected) as elsewhere:
        workflow.cast_vote(a, _vote(geo="FR"), NOW)
    assert elsewhere.value.code == "context_mismatch"
    assert workflow.cast_vote(a, _vote(geo="CA"), NOW).approval.state.value == "approved"


def test_eligibility_is_checked_before_the_factor() -> None:
    """Someone who may not vote is told so, not asked for a second factor."""
    a = _approval({"name": "s", "approvers": ["alice"], "required": 1, "mfa": "totp"})
    with pytest.raises(workflow.VoteRejected) as refused:
        workflow.cast_vote(a, Vote("bob", VoteDecision.APPROVE, 0, NOW), NOW)
    assert refused.value.code == "not_eligible"
