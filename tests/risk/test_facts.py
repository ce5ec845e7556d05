"""What a request says about itself: actor, agent, country, device, payee, amount, bank change."""

from __future__ import annotations

from clearance.policy.model import Request
from clearance.risk.facts import facts_of, key_part
from clearance.risk.settings import RiskSettings

from .helpers import request, settings

DEFAULTS = RiskSettings()


def test_the_actor_is_the_user_else_the_agent() -> None:
    """As in the audit trail: the person when there is one, else the agent."""
    assert facts_of(request(), DEFAULTS).actor == "carol"
    only_agent = facts_of(request(user=None), DEFAULTS)
    assert (only_agent.actor, only_agent.user, only_agent.agent) == (
        "billing-bot",
        None,
        "billing-bot",
    )
    assert facts_of(request(user=None, agent=None), DEFAULTS).actor is None


def test_context_values_are_normalised() -> None:
    """Countries are upper-cased and trimmed; blank or non-text values say nothing."""
    f = facts_of(request(geo=" de ", device="  "), DEFAULTS)
    assert (f.geo, f.device) == ("DE", None)
    g = facts_of(
        Request("a", {}, {"user": "u"}, {"geo": {"country": "DE"}, "device_id": 42}), DEFAULTS
    )
    assert (g.geo, g.device) == (None, "42")


def test_amounts_must_be_finite_numbers() -> None:
    """Numbers and numeric text are amounts; booleans, NaN and words are not."""
    for value, expected in [
        (12, 12.0),
        (12.5, 12.5),
        ("7", 7.0),
        (True, None),
        ("NaN", None),
        ("x", None),
        (float("inf"), None),
        (-100000, None),  # a negative amount would lower the 24 h total
        ("-5", None),
        (0, 0.0),
        (1e308, 1e15),  # at most 1e15: a day's sum stays finite
        (10**400, 1e15),  # an integer too large for a float is still an amount
        (-(10**400), None),
    ]:
        assert facts_of(Request("a", {"amount": value}, {"user": "u"}), DEFAULTS).amount == expected
    cfg = settings(amount_param="total")
    assert facts_of(Request("a", {"total": 3}, {}), cfg).amount == 3.0


def test_a_bank_details_change_names_its_payee() -> None:
    """A supplier-terms change listing bank_details records against supplier_id (or payee_id)."""
    change = "procurement.change_supplier_terms"
    for changes in (["bank_details", "terms"], "bank_details", {"bank_details": {"iban": "x"}}):
        f = facts_of(Request(change, {"supplier_id": "s-1", "changes": changes}, {}), DEFAULTS)
        assert f.bank_change_payee == "s-1" and f.payee is None
    f = facts_of(Request(change, {"payee_id": "p-2", "changes": ["bank_details"]}, {}), DEFAULTS)
    assert f.bank_change_payee == "p-2"
    other = facts_of(Request(change, {"supplier_id": "s-1", "changes": ["terms"]}, {}), DEFAULTS)
    assert other.bank_change_payee is None
    payment = facts_of(request(payee="s-1", supplier_id="zzz"), DEFAULTS)
    assert payment.payee == "s-1" and payment.bank_change_payee is None


def test_long_identifiers_become_digests_in_keys() -> None:
    """A key part longer than 200 characters is stored as its sha256."""
    assert key_part("carol") == "carol"
    long = key_part("x" * 300)
    assert long.startswith("sha256:") and len(long) == 71


def test_a_payee_is_named_only_on_a_payment_action() -> None:
    """`payment_actions` (default: every action) says which requests pay someone: elsewhere a
    `payee_id` parameter is not a payee, so it is neither new nor made known."""
    cfg = settings(patterns={"payee_bank_change": {"payment_actions": ["payments.*"]}})
    assert facts_of(request(payee="acme"), cfg).payee == "acme"
    assert facts_of(request("data.export", payee="acme"), cfg).payee is None
    assert facts_of(request("data.export", payee="acme"), DEFAULTS).payee == "acme"


def test_identifiers_that_look_the_same_are_the_same() -> None:
    """A payee written with a combining diaeresis, or in full-width letters, is the payee
    written plainly (Unicode NFKC), so a look-alike cannot dodge the bank-change pattern."""
    composed = facts_of(request(payee="Zo\u00eb Ltd"), DEFAULTS).payee
    assert facts_of(request(payee="Zoe\u0308 Ltd"), DEFAULTS).payee == composed
    assert facts_of(request(payee="\uff21\uff23\uff2d\uff25"), DEFAULTS).payee == "ACME"
    assert facts_of(request(user="ca\u0301rol"), DEFAULTS).user == "c\u00e1rol"
    change = Request(
        "procurement.change_supplier_terms",
        {"supplier_id": "Zoe\u0308 Ltd", "changes": ["bank_details"]},
        {},
    )
    assert facts_of(change, DEFAULTS).bank_change_payee == composed
