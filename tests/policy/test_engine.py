"""The engine: effects, precedence, approval plans, and failing closed."""

from __future__ import annotations

from clearance.policy import Effect, Request

from .helpers import engine

TRANSFER_RULES = """
- id: small
  description: Small domestic transfers run automatically
  actions: [payments.transfer]
  when: params.amount < 500 && params.destination_country == 'US'
  effect: allow
- id: large
  description: Large transfers need a manager and a finance director
  actions: [payments.transfer]
  when: params.amount > 5000
  effect: approve
  approval:
    stages:
      - {name: manager, approvers: [group:managers], required: 1}
      - {name: finance-director, approvers: [group:finance-directors], required: 1}
    timeout: 4h
- id: abroad
  actions: [payments.*]
  when: params.destination_country != 'US'
  effect: approve
  approval:
    stages: [{name: manager, approvers: [group:managers], required: 1}]
    timeout: 2h
- id: sanctioned
  actions: [payments.transfer]
  when: params.destination_country == 'KP'
  effect: block
  alert: [group:security]
"""


def transfer(amount: float, country: str = "US", user: str = "carol") -> Request:
    return Request(
        "payments.transfer", {"amount": amount, "destination_country": country}, {"user": user}
    )


def test_allow_when_the_allow_rule_matches() -> None:
    """A request matching only an allow rule is allowed, naming the rule and its reason."""
    d = engine(TRANSFER_RULES).evaluate(transfer(100))
    assert d.effect is Effect.ALLOW
    assert d.rules == ("small",)
    assert d.reasons == ("small: Small domestic transfers run automatically",)
    assert d.approval is None


def test_default_applies_when_nothing_matches() -> None:
    """With no matching rule the policy's default decides, and the reason says so."""
    d = engine(TRANSFER_RULES).evaluate(transfer(1000))
    assert d.effect is Effect.DENY and d.rules == ()
    assert "default is deny" in d.reasons[0]
    d2 = engine(TRANSFER_RULES, default="allow").evaluate(Request("other.thing"))
    assert d2.effect is Effect.ALLOW


def test_strongest_effect_wins() -> None:
    """Block beats approve: a sanctioned destination is blocked although approve rules match."""
    d = engine(TRANSFER_RULES).evaluate(transfer(9000, "KP"))
    assert d.effect is Effect.BLOCK
    assert d.rules == ("sanctioned",)
    assert d.alert == ("frank",)


def test_all_matched_approve_rules_stages_are_required_and_merged() -> None:
    """Two approve rules: their stages add up, identical stages once, shortest timeout."""
    d = engine(TRANSFER_RULES).evaluate(transfer(9000, "DE"))
    assert d.effect is Effect.APPROVE
    assert d.rules == ("large", "abroad")
    assert d.approval is not None
    stages = d.to_json()["approval"]["stages"]
    assert stages == [
        {"name": "manager", "approvers": ["alice", "bob", "erin"], "required": 1},
        {"name": "finance-director", "approvers": ["dana", "erin"], "required": 1},
    ]
    assert d.approval.timeout_s == 7200


def test_requester_is_removed_from_their_own_approvers() -> None:
    """A manager who asks is not among the managers who may approve."""
    d = engine(TRANSFER_RULES).evaluate(transfer(9000, user="alice"))
    assert d.approval is not None
    assert d.approval.stages[0].requirements[0].approvers == ("bob", "erin")


def test_stage_that_cannot_be_met_denies() -> None:
    """Fewer eligible people than required denies with that reason instead of passing."""
    e = engine(
        """
        - id: two-fds
          actions: [x]
          effect: approve
          approval:
            stages: [{name: fds, approvers: [group:finance-directors], required: 2}]
        """
    )
    assert e.evaluate(Request("x", actor={"user": "carol"})).effect is Effect.APPROVE
    d = e.evaluate(Request("x", actor={"user": "dana"}))
    assert d.effect is Effect.DENY
    assert "cannot be met" in d.reasons[-1] and "dana" in d.reasons[-1]


def test_one_person_cannot_fill_two_stages() -> None:
    """Dual approval means two people: stages whose only candidates overlap are infeasible."""
    e = engine(
        """
        - id: dual
          actions: [x]
          effect: approve
          approval:
            stages:
              - {name: one, approvers: [erin, dana], required: 1}
              - {name: two, approvers: [erin], required: 1}
              - {name: three, approvers: [dana], required: 1}
        """
    )
    d = e.evaluate(Request("x"))
    assert d.effect is Effect.DENY
    assert "different people" in d.reasons[-1]


def test_all_of_stage_in_json() -> None:
    """A parallel stage is written with all_of in the decision JSON."""
    e = engine(
        """
        - id: medical
          actions: [data.read]
          effect: approve
          approval:
            stages:
              - name: both
                all_of:
                  - {approvers: [group:managers]}
                  - {approvers: [group:security]}
        """
    )
    stage = e.evaluate(Request("data.read")).to_json()["approval"]["stages"][0]
    assert stage == {
        "name": "both",
        "all_of": [
            {"approvers": ["alice", "bob", "erin"], "required": 1},
            {"approvers": ["frank"], "required": 1},
        ],
    }


def test_runtime_error_fails_closed_naming_the_rule() -> None:
    """A missing parameter makes the rule's condition fail: deny, naming rule and error."""
    d = engine(TRANSFER_RULES).evaluate(Request("payments.transfer", {"amount": 100}))
    assert d.effect is Effect.DENY
    assert "small" in d.rules
    assert any("small: could not be evaluated" in r for r in d.reasons)
    assert d.errors


def test_wrong_type_fails_closed() -> None:
    """A string where a number is expected denies rather than guessing."""
    d = engine(TRANSFER_RULES).evaluate(transfer("lots", "US"))  # type: ignore[arg-type]
    assert d.effect is Effect.DENY
    assert any("could not be evaluated" in r for r in d.reasons)


def test_on_error_skip_ignores_the_failing_rule() -> None:
    """A rule marked on_error: skip does not deny when it cannot be evaluated."""
    e = engine(
        """
        - id: optional
          actions: [x]
          when: params.flag == true
          effect: block
          on_error: skip
        - id: base
          actions: [x]
          effect: allow
        """
    )
    assert e.evaluate(Request("x")).effect is Effect.ALLOW
    assert e.evaluate(Request("x", {"flag": True})).effect is Effect.BLOCK


def test_block_still_wins_over_an_evaluation_error() -> None:
    """An error elsewhere does not weaken a matching block into a deny."""
    e = engine(
        """
        - id: broken
          actions: [x]
          when: params.missing > 1
          effect: allow
        - id: stop
          actions: [x]
          when: context.ip == '10.0.0.1'
          effect: block
        """
    )
    d = e.evaluate(Request("x", context={"ip": "10.0.0.1"}))
    assert d.effect is Effect.BLOCK


def test_globs_and_exact_names() -> None:
    """`payments.*` and `*` apply to matching actions only, exact names to themselves."""
    e = engine(
        """
        - {id: all, actions: ["*"], when: "context.halt == true", effect: block, on_error: skip}
        - {id: pay, actions: ["payments.*"], effect: approve,
           approval: {approvers: [group:managers]}}
        - {id: read, actions: [data.read], effect: allow}
        """
    )
    assert e.evaluate(Request("payments.refund")).effect is Effect.APPROVE
    assert e.evaluate(Request("data.read")).effect is Effect.ALLOW
    assert e.evaluate(Request("data.write")).effect is Effect.DENY
    assert e.evaluate(Request("data.read", context={"halt": True})).effect is Effect.BLOCK


def test_conditions_see_every_variable() -> None:
    """action, params, actor, context, labels and risk are all readable from CEL."""
    e = engine(
        """
        - id: every
          actions: ["*"]
          when: >-
            action.startsWith('a.') && params.n == 1 && actor.agent == 'bot' &&
            context.geo == 'US' && 'pii' in labels && risk.score < 50
          effect: allow
        """
    )
    req = Request("a.b", {"n": 1}, {"agent": "bot"}, {"geo": "US"}, ("pii",), {"score": 10})
    assert e.evaluate(req).effect is Effect.ALLOW
    assert e.evaluate(Request("a.b", {"n": 1}, {"agent": "bot"}, {"geo": "US"})).effect is (
        Effect.DENY
    )


def test_decision_json_matches_the_contract() -> None:
    """The JSON has the documented keys, a policy version hash and a decision id."""
    d = engine(TRANSFER_RULES).evaluate(transfer(9000))
    data = d.to_json()
    assert set(data) >= {"effect", "rules", "reasons", "approval", "policy_version", "decision_id"}
    assert data["policy_version"].startswith("sha256:") and len(data["policy_version"]) == 71
    assert data["decision_id"].startswith("dec_")
    assert data["approval"]["timeout_s"] == 14400


def test_unpresentable_values_fail_closed_instead_of_raising() -> None:
    """Python values CEL cannot represent (a set, an object) deny and never raise."""
    d = engine(TRANSFER_RULES).evaluate(
        Request("payments.transfer", {"amount": {1, 2}, "destination_country": object()})
    )
    assert d.effect is Effect.DENY


def test_redactions_come_from_every_rule_covering_the_action() -> None:
    """Redacted parameters apply to an action even when the declaring rule did not match."""
    e = engine(
        """
        - id: cards
          actions: [payments.charge]
          when: params.amount > 1000
          effect: approve
          approval: {approvers: [group:managers]}
          redact: [params.card_number]
        """
    )
    d = e.evaluate(Request("payments.charge", {"amount": 5, "card_number": "4111"}))
    assert d.redact == ("params.card_number",)
    assert e.redactions("payments.charge") == ("params.card_number",)


def test_with_risk_is_replace_with_every_other_field_kept() -> None:
    """`Request.with_risk` (the fast path of every check with risk signals) keeps every field:
    a field added to Request and forgotten there fails here."""
    import dataclasses

    from clearance.policy.model import Request

    values: dict[str, object] = {
        "action": "payments.transfer",
        "params": {"amount": 1},
        "actor": {"user": "carol"},
        "context": {"geo": "US"},
        "labels": ("x",),
        "risk": {"score": 1},
    }
    assert set(values) == {f.name for f in dataclasses.fields(Request)}
    original = Request(**values)  # type: ignore[arg-type]
    risk = {"score": 90}
    assert original.with_risk(risk) == dataclasses.replace(original, risk=risk)
