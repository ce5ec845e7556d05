"""`actor.manager` as an approver: the requester's own manager, resolved per request."""

from __future__ import annotations

import pytest

from clearance.policy import Effect, PolicyError, Request

from .helpers import engine, policy

PEOPLE = """
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [managers], manager: lena}
    - {id: carol, groups: [staff], manager: alice}
    - {id: dave, groups: [staff], manager: dave}
    - {id: lena, groups: [executives]}
"""

RULES = """
- id: verify
  actions: [payments.transfer]
  effect: approve
  approval:
    stages:
      - {name: manager-verification, approvers: [actor.manager], required: 1}
"""


def _decide(user: str | None, rules: str = RULES) -> object:
    actor = {"user": user} if user else {"agent": "billing-bot"}
    return engine(rules, people=PEOPLE).evaluate(Request("payments.transfer", {}, actor))


def test_each_requester_gets_their_own_manager() -> None:
    """Carol's request goes to Alice, Bob's to Lena: one rule, resolved per requester."""
    carol = _decide("carol")
    bob = _decide("bob")
    assert carol.effect is Effect.APPROVE and bob.effect is Effect.APPROVE
    assert carol.approval.stages[0].requirements[0].approvers == ("alice",)
    assert bob.approval.stages[0].requirements[0].approvers == ("lena",)


def test_a_requester_without_a_manager_is_denied_with_the_reason() -> None:
    """Alice has no manager: the stage can never be met, so the decision is deny, saying why."""
    decision = _decide("alice")
    assert decision.effect is Effect.DENY
    assert "'alice' has no manager in the directory" in " ".join(decision.reasons)


def test_a_request_without_a_user_is_denied() -> None:
    """An agent acting for nobody has no manager to ask: deny, never a silent pass."""
    decision = _decide(None)
    assert decision.effect is Effect.DENY
    assert "without actor.user" in " ".join(decision.reasons)


def test_a_manager_of_themselves_cannot_verify_their_own_request() -> None:
    """The requester never approves their own request, even as their own manager."""
    decision = _decide("dave")
    assert decision.effect is Effect.DENY
    assert "approval cannot be met" in " ".join(decision.reasons)


def test_the_manager_counts_once_alongside_a_group_stage() -> None:
    """With a managers stage before it, Carol's request needs a manager other than Alice
    first, then Alice: two distinct people."""
    rules = (
        RULES
        + """
- id: managers
  actions: [payments.transfer]
  effect: approve
  approval:
    stages: [{name: manager, approvers: [group:managers], required: 1}]
"""
    )
    decision = _decide("carol", rules)
    assert decision.effect is Effect.APPROVE
    stages = {s.name: s.requirements[0].approvers for s in decision.approval.stages}
    assert stages == {"manager-verification": ("alice",), "manager": ("alice", "bob")}


def test_actor_manager_is_only_an_approver_reference() -> None:
    """Alerts name people who exist now: `actor.manager` there is a load error."""
    rules = """
- id: blocked
  actions: [payments.transfer]
  effect: block
  alert: [actor.manager]
"""
    with pytest.raises(PolicyError) as err:
        policy(rules, people=PEOPLE)
    assert "unknown person 'actor.manager'" in str(err.value)
