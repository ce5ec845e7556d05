"""Risk signals inside the gateway: computed before evaluation, kept in step, audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearance.audit.export import iter_entries
from clearance.gateway import Gateway
from clearance.policy import PolicyError, Request, load_policy_text
from clearance.testing import FrozenClock

POLICY = """
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [managers]}
    - {id: carol, timezone: Asia/Tokyo}
policies:
  default: deny
  rules:
    - id: fast
      description: Too many transfers in an hour need a manager
      actions: [pay]
      when: risk.velocity_1h > 3
      effect: approve
      approval: {approvers: [group:managers]}
    - id: new-place
      description: A new country is blocked
      actions: [pay]
      when: risk.new_geo && risk.velocity_24h > 1
      effect: block
    - id: ok
      actions: [pay]
      effect: allow
risk:
  time_zone: America/New_York
"""


@pytest.fixture
async def gw(tmp_path: Path, db_url: str) -> Gateway:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    gateway = Gateway.open(path, database_url=db_url, clock=FrozenClock())
    yield gateway  # type: ignore[misc]
    await gateway.aclose()


async def test_velocity_adds_approval_and_new_geo_blocks(gw: Gateway) -> None:
    """The fourth transfer in an hour needs approval; a new country later is blocked."""
    effects = []
    for _ in range(4):
        result = await gw.check(Request("pay", {"amount": 10}, {"user": "carol"}, {"geo": "US"}))
        effects.append(result.decision.effect.value)
    assert effects == ["allow", "allow", "allow", "approve"]
    moved = await gw.check(Request("pay", {"amount": 10}, {"user": "carol"}, {"geo": "FR"}))
    assert moved.decision.effect.value == "block"
    checks = [e for e in iter_entries(gw.db) if e.kind == "check"]
    assert checks[-1].data["risk"]["score"] > 0
    assert any("from FR" in r for r in checks[-1].data["risk"]["reasons"])


async def test_approvers_see_the_risk_reasons(gw: Gateway) -> None:
    """An approval opened because of velocity tells its approvers why, in words."""
    result = None
    for _ in range(4):
        result = await gw.check(Request("pay", {"amount": 10}, {"user": "carol"}))
    assert result is not None and result.approval is not None
    assert any(r.startswith("Risk score") for r in result.approval.reasons)


def test_bad_risk_settings_are_a_load_error() -> None:
    """An unknown key in risk: is reported with its location, like any policy problem."""
    with pytest.raises(PolicyError) as info:
        load_policy_text(POLICY.replace("time_zone: America/New_York", "tim_zone: x"))
    assert "risk" in str(info.value)


def test_without_a_risk_section_rules_see_quiet_signals(tmp_path: Path) -> None:
    """With no risk: section, risk.* reads as quiet signals instead of failing closed."""
    policy = load_policy_text(POLICY.replace("risk:\n  time_zone: America/New_York\n", ""))
    from clearance.policy import Engine

    d = Engine(policy).evaluate(Request("pay", {"amount": 1}, {"user": "carol"}))
    assert d.effect.value == "allow"
