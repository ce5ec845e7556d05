"""Remembered denials: an identical request inside the window is denied at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clearance.denials import agent_feedback
from clearance.gateway import Gateway
from clearance.testing import FrozenClock

from .helpers import POLICY, audit_data, open_gateway, pay, write_policy


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def gw(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gateway = open_gateway(tmp_path, db_url, clock)
    yield gateway
    await gateway.aclose()


async def _deny(gw: Gateway) -> str:
    held = await gw.check(pay())
    assert held.approval is not None
    approval_id = held.approval.approval.id
    await gw.approvals.decide(
        approval_id, person="alice", decision="deny", comment="payee not verified"
    )
    return approval_id


async def test_identical_request_is_denied_with_the_earlier_reason(gw: Gateway) -> None:
    """The same call again within the window is denied at once, naming the earlier request,
    and no approval (no page) is created."""
    first = await _deny(gw)
    again = await gw.check(pay())
    assert again.decision.effect == "deny" and again.approval is None
    assert "payee not verified" in again.decision.reasons[0]
    assert first in again.decision.reasons[0]
    assert again.to_json()["remembered_denial"] == first
    checks = await audit_data(gw, "check")
    assert checks[-1]["remembered_denial"] == first


async def test_a_different_request_or_actor_asks_people_again(gw: Gateway) -> None:
    """Another amount, another user or another agent is not the same request."""
    await _deny(gw)
    for request in (pay(amount=1201), pay(user="dana"), pay(agent="other-bot")):
        result = await gw.check(request)
        assert result.decision.effect == "approve" and result.approval is not None


async def test_after_the_window_people_are_asked_again(gw: Gateway, clock: FrozenClock) -> None:
    """Past the configured window the identical request is held for approval again."""
    await _deny(gw)
    clock.advance(hours=1, seconds=1)
    assert (await gw.check(pay())).decision.effect == "approve"


async def test_expiry_is_not_remembered_as_a_denial(gw: Gateway, clock: FrozenClock) -> None:
    """A request nobody decided (expired) is asked again: only people's denials count."""
    held = await gw.check(pay())
    assert held.approval is not None
    clock.advance(hours=2)
    await gw.approvals.expire_due()
    assert (await gw.check(pay())).decision.effect == "approve"


async def test_without_the_setting_nothing_is_remembered(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """Without controls.remember_denials, the identical request pages people again."""
    text = POLICY.replace("  remember_denials: 1h\n", "")
    gateway = Gateway.open(write_policy(tmp_path, text), database_url=db_url, clock=clock)
    try:
        await _deny(gateway)
        assert (await gateway.check(pay())).decision.effect == "approve"
    finally:
        await gateway.aclose()


async def test_denial_feedback_is_readable_by_a_model(gw: Gateway) -> None:
    """A denied approval carries who denied it, why, and an instruction not to retry."""
    approval_id = await _deny(gw)
    feedback = agent_feedback(await gw.approvals.get(approval_id))
    assert feedback is not None
    assert feedback["denied_by"] == "alice" and feedback["reason"] == "payee not verified"
    assert "Do not retry" in str(feedback["instruction"])
