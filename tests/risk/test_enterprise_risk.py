"""The enterprise example's risk rules (examples/enterprise/risk.yaml) through the gateway:
signals computed from the store's own history, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from clearance.audit.export import iter_entries
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.testing import FrozenClock

from ..fixtures import ENTERPRISE

RISK = ENTERPRISE.with_name("risk.yaml")
# Tuesday 24 November 2026, 09:00 in New York: business hours.
WORKING = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


@pytest.fixture
async def gw(tmp_path: Path, db_url: str) -> Gateway:
    gateway = Gateway.open([ENTERPRISE, RISK], database_url=db_url, clock=FrozenClock(WORKING))
    yield gateway  # type: ignore[misc]
    await gateway.aclose()


def _transfer(amount: float, **context: str) -> Request:
    params = {"amount": amount, "currency": "USD", "destination_country": "US"}
    if "payee_id" in context:
        params["payee_id"] = context.pop("payee_id")
    return Request("payments.transfer", params, {"user": "carol", "agent": "billing-bot"}, context)


async def test_a_new_device_needs_the_manager_until_a_call_from_it_is_approved(
    gw: Gateway,
) -> None:
    """Carol's first transfer from a device waits for her manager Alice. Asking again while it
    waits (the stolen-laptop case) waits too: a request not yet approved vouches for nothing.
    Once Alice approves and the agent claims the call, the device and country are known and
    the next transfer from them runs; a new country asks Alice again."""
    first = await gw.check(_transfer(100, geo="US", device_id="laptop-1"))
    assert first.decision.effect.value == "approve"
    assert first.decision.rules == ("new-location-or-device",)
    assert first.approval is not None
    assert first.approval.approval.plan.stages[0].requirements[0].approvers == ("alice",)
    meanwhile = await gw.check(_transfer(100, geo="US", device_id="laptop-1"))
    assert meanwhile.decision.effect.value == "approve"
    assert meanwhile.decision.rules == ("new-location-or-device",)
    approval_id = first.approval.approval.id
    await gw.approvals.decide(approval_id, person="alice", decision="approve")
    call = _transfer(100, geo="US", device_id="laptop-1")
    await gw.release(approval_id, call.action, call.params, call.actor)
    again = await gw.check(_transfer(100, geo="US", device_id="laptop-1"))
    assert again.decision.effect.value == "allow"
    abroad = await gw.check(_transfer(100, geo="BR", device_id="laptop-1"))
    assert abroad.decision.effect.value == "approve"
    assert abroad.decision.rules == ("new-location-or-device",)
    assert abroad.approval is not None
    assert any("from BR" in r for r in abroad.approval.reasons)


async def test_a_claimed_call_makes_its_device_known_to_a_restarted_gateway(
    tmp_path: Path, db_url: str
) -> None:
    """The sighting of an approved call is an audit entry (`risk.seen`) that the fold counts:
    a gateway started afresh, which folds before its first check, knows the device too; a
    denied request's device stays unknown."""
    clock = FrozenClock(WORKING)
    first = Gateway.open([ENTERPRISE, RISK], database_url=db_url, clock=clock)
    try:
        held = await first.check(_transfer(100, geo="US", device_id="laptop-9"))
        assert held.approval is not None
        approval_id = held.approval.approval.id
        await first.approvals.decide(approval_id, person="alice", decision="approve")
        call = _transfer(100, geo="US", device_id="laptop-9")
        await first.release(approval_id, call.action, call.params, call.actor)
        seen = [e for e in iter_entries(first.db) if e.kind == "risk.seen"]
        assert [e.approval_id for e in seen] == [approval_id]
        released = [e for e in iter_entries(first.db) if e.kind == "approval.released"]
        assert released[0].seq + 1 == seen[0].seq  # written in the release's transaction
        from clearance.approvals.service import ApprovalError

        with pytest.raises(ApprovalError):  # a second claim is refused and sees nothing
            await first.release(approval_id, call.action, call.params, call.actor)
        assert sum(e.kind == "risk.seen" for e in iter_entries(first.db)) == 1
    finally:
        await first.aclose()
    second = Gateway.open([ENTERPRISE, RISK], database_url=db_url, clock=clock)
    try:
        known = await second.check(_transfer(100, geo="US", device_id="laptop-9"))
        assert known.decision.effect.value == "allow"
        other = await second.check(_transfer(100, geo="US", device_id="laptop-10"))
        assert other.decision.effect.value == "approve"
    finally:
        await second.aclose()


async def test_off_hours_and_holidays_add_an_approver(gw: Gateway) -> None:
    """22:00 in New York, and Thanksgiving afternoon, turn an automatic transfer into one that
    needs an approver; 09:00 on a working day does not."""
    clock = gw.clock
    assert isinstance(clock, FrozenClock)
    assert (await gw.check(_transfer(100))).decision.effect.value == "allow"
    clock.now = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # 22:00 on the 24th in New York
    night = await gw.check(_transfer(100))
    assert night.decision.effect.value == "approve"
    assert night.decision.rules == ("payments-off-hours",)
    clock.now = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # noon on Thanksgiving
    holiday = await gw.check(_transfer(100))
    assert holiday.decision.rules == ("payments-off-hours",)


async def test_a_payment_after_a_bank_detail_change_is_blocked_and_alerts(gw: Gateway) -> None:
    """A supplier's bank details change; a payment to that supplier days later is blocked,
    and the security group is alerted with the reason."""
    alerts: list[tuple[tuple[str, ...], dict[str, object]]] = []
    gw.on_alert.append(lambda _tx, to, alert, _now: alerts.append((tuple(to), alert)))
    change = Request(
        "procurement.change_supplier_terms",
        {"supplier_id": "acme", "changes": ["bank_details"], "iban": "DE00 0000"},
        {"user": "carol", "agent": "procurement-bot"},
    )
    assert (await gw.check(change)).decision.effect.value == "approve"
    clock = gw.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(days=6)  # Monday 30 November, 09:00 in New York
    other = await gw.check(_transfer(100, payee_id="globex"))
    assert other.decision.effect.value == "allow"
    paid = await gw.check(_transfer(100, payee_id="acme"))
    assert paid.decision.effect.value == "block"
    assert "payee-bank-change-block" in paid.decision.rules
    assert alerts and alerts[-1][0] == ("frank", "sam")
    # Security reads what the signals saw, not only the rule's description.
    said = alerts[-1][1]["reasons"]
    assert isinstance(said, list)
    assert any("bank details of payee acme were changed" in r for r in said)


async def test_an_approved_payment_is_stopped_if_the_bank_details_change_before_release(
    gw: Gateway,
) -> None:
    """A manager approves a transfer to acme; then acme's bank details are changed; when the
    agent claims the approved transfer, the block rule matches on the signals of that moment:
    the claim is refused, nothing is released, and the security group is alerted."""
    from clearance.approvals.service import ApprovalError

    alerts: list[tuple[tuple[str, ...], dict[str, object]]] = []
    gw.on_alert.append(lambda _tx, to, alert, _now: alerts.append((tuple(to), alert)))
    payment = _transfer(1200, payee_id="acme")
    held = await gw.check(payment)
    assert held.decision.effect.value == "approve" and held.approval is not None
    approval_id = held.approval.approval.id
    manager = held.approval.approval.plan.stages[0].requirements[0].approvers[0]
    await gw.approvals.decide(approval_id, person=manager, decision="approve")
    change = Request(
        "procurement.change_supplier_terms",
        {"supplier_id": "acme", "changes": ["bank_details"], "iban": "DE00 0000"},
        {"user": "mallory", "agent": "procurement-bot"},
    )
    await gw.check(change)
    assert not alerts
    with pytest.raises(ApprovalError) as refused:
        await gw.release(approval_id, payment.action, payment.params, payment.actor)
    assert refused.value.code == "policy_refuses"
    assert (await gw.approvals.get(approval_id)).approval.released_at is None
    assert alerts and alerts[-1][0] == ("frank", "sam")
    reasons = alerts[-1][1]["reasons"]
    assert isinstance(reasons, list)
    assert any("payee-bank-change-block" in r for r in reasons)
    assert any(approval_id in r and "claimed" in r for r in reasons)
    assert any("bank details of payee acme were changed" in r for r in reasons)


async def test_approvers_read_why_a_finance_review_was_added(gw: Gateway) -> None:
    """More than $20,000 in 24 hours adds a finance review, and its approvers read the amount
    in words (the example sets `amount_24h_limit` to the rule's threshold)."""
    assert (await gw.check(_transfer(15000, geo="US", device_id="d"))).approval is not None
    held = await gw.check(_transfer(6000, geo="US", device_id="d"))
    assert held.approval is not None and "payments-unusual" in held.decision.rules
    assert any("above 20,000" in r for r in held.approval.reasons), held.approval.reasons


async def test_an_amount_too_large_for_a_float_is_decided_not_a_crash(gw: Gateway) -> None:
    """A 400-digit integer amount is finite JSON: the check is decided (the amount counts as
    the cap), where float() used to raise OverflowError inside the assessment."""
    result = await gw.check(_transfer(10**400, geo="US", device_id="d"))  # type: ignore[arg-type]
    assert result.decision.effect.value in {"approve", "block", "deny"}
