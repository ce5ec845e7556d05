"""Emergency overrides: release at once, alert, review by someone else; refusals audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clearance import override as ovr
from clearance.canonical import binding_hash
from clearance.gateway import Gateway
from clearance.testing import FrozenClock

from .helpers import POLICY, audit_data, open_gateway, pay, write_policy


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def gw(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gateway = open_gateway(tmp_path, db_url, clock)
    alerts: list[tuple[tuple[str, ...], dict[str, object]]] = []
    gateway.on_alert.append(lambda _tx, people, payload, _now: alerts.append((people, payload)))
    gateway.alerts = alerts  # type: ignore[attr-defined]
    yield gateway
    await gateway.aclose()


async def test_override_releases_a_pending_approval_and_alerts(gw: Gateway) -> None:
    """An emergency person approves a pending request at once; security is alerted on every
    channel; the agent releases it; an open review exists."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    result = await ovr.override(
        gw, person="frank", reason="payroll run blocked, CFO on a plane", approval_id=approval_id
    )
    assert result.approval.approval.state == "approved"
    assert "emergency override by frank" in (result.approval.approval.decided_reason or "")
    assert result.override.review_state == "open"
    people, payload = gw.alerts[-1]  # type: ignore[attr-defined]
    assert set(people) == {"frank", "gina", "sam"} and payload["every_channel"] is True
    released = await gw.approvals.release(approval_id, held.approval.approval.binding_hash)
    assert released.approval.released_at is not None
    used = await audit_data(gw, "override.used")
    assert used[0]["override_id"] == result.override.id


async def test_override_ahead_lets_the_agent_check_proceed(gw: Gateway) -> None:
    """An override of a call not yet requested makes the agent's check of that exact call
    return an approved approval, which it releases once."""
    request = pay(amount=9000)
    result = await ovr.override(gw, person="gina", reason="incident 4711", request=request)
    assert result.approval.approval.state == "approved"
    check = await gw.check(request)
    assert check.approval is not None and check.approval.approval.id == result.approval.approval.id
    assert check.approval.approval.state == "approved"
    bind = binding_hash(request.action, request.params, request.actor)
    await gw.approvals.release(check.approval.approval.id, bind)
    other = await gw.check(pay(amount=9001))
    assert other.approval is not None and other.approval.approval.state == "pending"


async def test_override_ahead_refuses_deny_and_block(gw: Gateway) -> None:
    """Deny and block rules are never overridden; the refusal is audited."""
    for request, code in (
        (pay(payee="evil"), "not_overridable"),
        (pay(geo="KP"), "not_overridable"),
    ):
        with pytest.raises(ovr.OverrideRefused) as info:
            await ovr.override(gw, person="frank", reason="urgent", request=request)
        assert info.value.code == code
    refused = await audit_data(gw, "override.refused")
    assert [r["code"] for r in refused] == ["not_overridable", "not_overridable"]


@pytest.mark.parametrize(
    ("person", "reason", "code"),
    [("frank", "  ", "reason_required"), ("alice", "urgent", "not_permitted")],
)
async def test_override_without_reason_or_role_is_refused_and_audited(
    gw: Gateway, person: str, reason: str, code: str
) -> None:
    """No reason, or no emergency role: refused, audited, and the request stays pending."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.override(gw, person=person, reason=reason, approval_id=approval_id)
    assert info.value.code == code
    assert (await gw.approvals.get(approval_id)).approval.state == "pending"
    refused = await audit_data(gw, "override.refused")
    assert refused[-1]["code"] == code


async def test_override_over_the_rate_limit_is_refused(gw: Gateway, clock: FrozenClock) -> None:
    """A third override within 24 hours is refused (limit 2/24h) and leaves the request
    pending; after the window it is allowed again."""
    for n in range(2):
        await ovr.override(gw, person="frank", reason=f"incident {n}", request=pay(amount=9000 + n))
    held = await gw.check(pay(amount=9100))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.override(gw, person="frank", reason="again", approval_id=approval_id)
    assert info.value.code == "rate_limited" and info.value.status == 429
    assert (await gw.approvals.get(approval_id)).approval.state == "pending"
    assert (await audit_data(gw, "override.refused"))[-1]["code"] == "rate_limited"
    clock.advance(hours=24, seconds=1)
    fresh = await ovr.override(gw, person="frank", reason="next day", request=pay(amount=9200))
    assert fresh.approval.approval.state == "approved"


async def test_review_by_the_overrider_is_refused(gw: Gateway) -> None:
    """The overrider cannot review their own override; another reviewer can, once."""
    result = await ovr.override(gw, person="frank", reason="incident", request=pay(amount=9000))
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.review(gw, result.override.id, person="frank", verdict="justified")
    assert info.value.code == "self_review"
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.review(gw, result.override.id, person="alice", verdict="justified")
    assert info.value.code == "not_reviewer"
    done = await ovr.review(gw, result.override.id, person="sam", verdict="justified")
    assert done.review_state == "justified" and done.reviewed_by == "sam"
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.review(gw, result.override.id, person="gina", verdict="flagged", comment="x")
    assert info.value.code == "already_reviewed"
    codes = [r["code"] for r in await audit_data(gw, "override.review_refused")]
    assert codes == ["self_review", "not_reviewer", "already_reviewed"]


async def test_flag_needs_a_comment_and_alerts(gw: Gateway) -> None:
    """A flag without a comment is refused; with one it is recorded and security is alerted."""
    result = await ovr.override(gw, person="frank", reason="incident", request=pay(amount=9000))
    with pytest.raises(ovr.OverrideRefused):
        await ovr.review(gw, result.override.id, person="sam", verdict="flagged")
    done = await ovr.review(
        gw, result.override.id, person="sam", verdict="flagged", comment="no incident ticket"
    )
    assert done.review_state == "flagged"
    assert gw.alerts[-1][1]["kind"] == "override.flagged"  # type: ignore[attr-defined]


async def test_override_of_a_decided_request_is_refused(gw: Gateway) -> None:
    """A request already denied cannot be released by override."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    await gw.approvals.decide(approval_id, person="alice", decision="deny", comment="no")
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.override(gw, person="frank", reason="urgent", approval_id=approval_id)
    assert info.value.code == "already_decided"


async def test_overrides_are_refused_when_not_configured(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """Without controls.override, every override is refused (fail closed)."""
    text = POLICY.replace(
        "  override: {role: emergency, review_by: [group:security], rate_limit: 2/24h}\n", ""
    )
    gateway = Gateway.open(write_policy(tmp_path, text), database_url=db_url, clock=clock)
    try:
        with pytest.raises(ovr.OverrideRefused) as info:
            await ovr.override(gateway, person="frank", reason="x", request=pay(amount=9000))
        assert info.value.code == "overrides_disabled"
    finally:
        await gateway.aclose()


async def test_concurrent_overrides_respect_the_rate_limit(gw: Gateway) -> None:
    """Three overrides at once by one person with a limit of two: exactly two succeed."""
    import asyncio

    outcomes = await asyncio.gather(
        *(
            ovr.override(gw, person="gina", reason=f"burst {n}", request=pay(amount=9000 + n))
            for n in range(3)
        ),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, ovr.OverrideRefused)]
    assert len(refused) == 1 and refused[0].code == "rate_limited"
    assert len(await ovr.list_overrides(gw.db)) == 2


async def test_override_ahead_with_a_used_idempotency_key_is_refused(gw: Gateway) -> None:
    """An idempotency key that already names a request cannot be reused by an override."""
    held = await gw.check(pay(amount=9000), idempotency_key="inv-1")
    assert held.approval is not None
    with pytest.raises(ovr.OverrideRefused) as info:
        await ovr.override(
            gw, person="frank", reason="x", request=pay(amount=9001), idempotency_key="inv-1"
        )
    assert info.value.code == "idempotency_conflict"
    assert await ovr.list_overrides(gw.db) == []


async def test_override_ahead_is_found_by_the_agents_idempotency_key(gw: Gateway) -> None:
    """An override made with the agent's idempotency key is what the agent's check returns."""
    request = pay(amount=9000)
    made = await ovr.override(
        gw, person="frank", reason="incident", request=request, idempotency_key="inv-7"
    )
    check = await gw.check(request, idempotency_key="inv-7")
    assert check.approval is not None
    assert check.approval.approval.id == made.approval.approval.id
