"""An approval is used under the policy loaded when the agent claims it: a block or deny rule
added after the approval wins (through the API and the embedded SDK), and is audited."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clearance.approvals.service import ApprovalError
from clearance.audit.export import iter_entries
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.sdk.errors import GatewayError
from clearance.sdk.local import LocalGate
from clearance.server.app import create_app

from ..conftest import auth
from ..fixtures import make_keys

POLICY = """
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [managers]}
    - {id: carol}
    - {id: dana}
    - {id: erin}
    - {id: ivan, roles: [admin]}
policies:
  default: deny
  rules:
    - id: pay
      description: Payments need a manager
      actions: [payments.transfer]
      effect: approve
      approval: {stages: [{name: manager, approvers: [group:managers]}]}
"""
BLOCK = """
    - id: evil-payee
      description: Payments to evil are blocked
      actions: [payments.transfer]
      when: params.payee == 'evil'
      effect: block
"""
PARAMS = {"amount": 900, "payee": "evil"}
ACTOR = {"user": "carol", "agent": "billing-bot"}


async def _approved_then_blocked(tmp_path: Path) -> tuple[Gateway, str]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db")
    held = await gateway.check(Request("payments.transfer", PARAMS, ACTOR))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    await gateway.approvals.decide(approval_id, person="alice", decision="approve")
    path.write_text(POLICY + BLOCK)
    ok, _ = await gateway.reload(by="test")
    assert ok
    return gateway, approval_id


async def test_the_sdk_cannot_claim_an_approval_the_policy_now_blocks(tmp_path: Path) -> None:
    """Embedded: the claim is refused with `policy_refuses`, audited; nothing is released."""
    gateway, approval_id = await _approved_then_blocked(tmp_path)
    gate = LocalGate(gateway)
    try:
        with pytest.raises(GatewayError) as refused:
            await gate.claim(approval_id, "payments.transfer", PARAMS, ACTOR)
        assert refused.value.code == "policy_refuses"
        stored = await gateway.approvals.get(approval_id)
        assert stored.approval.released_at is None
        entry = [e for e in iter_entries(gateway.db) if e.kind == "approval.release_refused"]
        assert entry and entry[0].rule_ids == ("evil-payee",)
    finally:
        await gateway.aclose()


async def test_the_api_refuses_the_release_too(tmp_path: Path) -> None:
    """Over HTTP the release answers 409 `policy_refuses`."""
    gateway, approval_id = await _approved_then_blocked(tmp_path)
    keys = make_keys(gateway)
    app = create_app(gateway, scheduler=False, inbox=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"action": "payments.transfer", "params": PARAMS, "actor": {"user": "carol"}}
            response = await client.post(
                f"/v1/approvals/{approval_id}/release", json=body, headers=auth(keys.agent)
            )
            assert response.status_code == 409
            assert response.json()["error"] == "policy_refuses"
    finally:
        await gateway.aclose()


RISKY = """
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: carol}
    - {id: mallory}
policies:
  default: allow
  rules:
    - id: bank-changed
      description: Payments to a payee whose bank details just changed are blocked
      actions: [payments.transfer]
      when: "'payee_bank_change' in risk.patterns"
      effect: block
    - id: busy
      description: A second transfer within the minute is refused
      actions: [payments.transfer]
      when: risk.velocity_1m > 1
      effect: deny
    - id: pay
      description: Payments need a manager
      actions: [payments.transfer]
      effect: approve
      approval: {stages: [{name: manager, approvers: [group:managers]}]}
risk: {}
"""
PAY = {"amount": 900, "payee_id": "acme"}


async def _approved_payment(tmp_path: Path, db_url: str) -> tuple[Gateway, str]:
    path = tmp_path / "risky.yaml"
    path.write_text(RISKY)
    gateway = Gateway.open(path, database_url=db_url)
    held = await gateway.check(Request("payments.transfer", PAY, ACTOR))
    assert held.approval is not None, held.decision
    approval_id = held.approval.approval.id
    await gateway.approvals.decide(approval_id, person="alice", decision="approve")
    return gateway, approval_id


async def test_a_payee_whose_bank_details_changed_after_the_approval_is_not_paid(
    tmp_path: Path, db_url: str
) -> None:
    """The supplier-fraud case at the moment it matters: a payment is approved, then the
    payee's bank details are changed, then the agent claims the approval. The policy is
    evaluated with the risk signals of that moment, its block rule matches, and the refusal is
    audited with the signals that made it."""
    gateway, approval_id = await _approved_payment(tmp_path, db_url)
    change = Request(
        "procurement.change_supplier_terms",
        {"supplier_id": "acme", "changes": ["bank_details"]},
        {"user": "mallory"},
    )
    try:
        await gateway.check(change)
        with pytest.raises(ApprovalError) as refused:
            await gateway.release(approval_id, "payments.transfer", PAY, ACTOR)
        assert refused.value.code == "policy_refuses"
        assert "bank-changed" in str(refused.value)
        stored = await gateway.approvals.get(approval_id)
        assert stored.approval.released_at is None
        entry = [e for e in iter_entries(gateway.db) if e.kind == "approval.release_refused"]
        assert entry and entry[0].rule_ids == ("bank-changed",)
        assert entry[0].data["risk"]["patterns"] == ["payee_bank_change"]
        assert any("bank details of payee acme" in r for r in entry[0].data["risk"]["reasons"])
    finally:
        await gateway.aclose()


async def test_the_released_call_is_not_counted_twice(tmp_path: Path, db_url: str) -> None:
    """Its check already counted the call: at release the velocity is still one, so the rule
    that refuses a second transfer within the minute does not refuse the first one's release;
    a second check within the minute is refused by it."""
    gateway, approval_id = await _approved_payment(tmp_path, db_url)
    try:
        stored = await gateway.release(approval_id, "payments.transfer", PAY, ACTOR)
        assert stored.approval.released_at is not None
        again = await gateway.check(Request("payments.transfer", PAY, ACTOR))
        assert again.decision.effect.value == "deny"
        assert again.decision.rules == ("busy",)
    finally:
        await gateway.aclose()


async def test_a_release_fails_closed_until_the_risk_history_is_up_to_date(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted gateway whose first call is a release folds what its predecessor left
    before judging it; while that fold fails, the release fails (503), and nothing is
    released; the next claim, with the fold done, releases the call."""
    from clearance.store.errors import StoreUnavailable

    first, approval_id = await _approved_payment(tmp_path, db_url)
    await first.aclose()
    gateway = Gateway.open(tmp_path / "risky.yaml", database_url=db_url)
    real = gateway.fold_risk
    failures = [RuntimeError("a bug in the fold")]

    async def fold() -> int | None:
        if failures:
            raise failures.pop(0)
        return await real()

    monkeypatch.setattr(gateway, "fold_risk", fold)
    try:
        with pytest.raises(StoreUnavailable, match="risk history could not be brought up"):
            await gateway.release(approval_id, "payments.transfer", PAY, ACTOR)
        assert (await gateway.approvals.get(approval_id)).approval.released_at is None
        stored = await gateway.release(approval_id, "payments.transfer", PAY, ACTOR)
        assert stored.approval.released_at is not None
    finally:
        await gateway.aclose()
