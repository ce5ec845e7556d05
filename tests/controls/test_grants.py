"""Standing grants ("approve always") through the gateway, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clearance import grants
from clearance.approvals.service import ApprovalError
from clearance.audit.export import verify_store
from clearance.gateway import Gateway
from clearance.testing import FrozenClock

from .helpers import audit_data, open_gateway, pay


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def gw(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gateway = open_gateway(tmp_path, db_url, clock)
    yield gateway
    await gateway.aclose()


async def _grant(gw: Gateway, ttl_s: int | None = None) -> grants.Grant:
    held = await gw.check(pay())
    assert held.approval is not None
    stored, grant = await grants.approve_always(
        gw.approvals, gw.policy, held.approval.approval.id, person="alice", ttl_s=ttl_s
    )
    assert stored.approval.state == "approved" and grant is not None
    return grant


async def test_approve_always_approves_and_covers_later_requests(gw: Gateway) -> None:
    """An "always" answer approves the request and later identical-scope checks are allowed by
    the grant, audited with its id."""
    grant = await _grant(gw)
    assert grant.scope == {"actor.agent": "billing-bot", "params.payee_id": "acme"}
    later = await gw.check(pay(amount=800, user="bob"))
    assert later.decision.effect == "allow" and later.approval is None
    assert later.to_json()["grant_id"] == grant.id
    assert any(grant.id in r for r in later.decision.reasons)
    checks = await audit_data(gw, "check")
    assert checks[-1]["grant_id"] == grant.id
    assert (await audit_data(gw, "grant.created"))[0]["grant_id"] == grant.id
    assert verify_store(gw.db).ok


async def test_grant_ttl_is_capped_by_max_ttl(gw: Gateway, clock: FrozenClock) -> None:
    """A requested lifetime longer than the rule's max_ttl is cut to max_ttl (30 days)."""
    grant = await _grant(gw, ttl_s=400 * 86400)
    assert (grant.expires_at - clock()).days == 30


async def test_grant_outside_its_scope_does_not_apply(gw: Gateway) -> None:
    """Another payee, another agent, or a multi-stage amount still needs a person."""
    await _grant(gw)
    for request in (pay(payee="globex"), pay(agent="other-bot"), pay(amount=9000)):
        result = await gw.check(request)
        assert result.decision.effect == "approve" and result.approval is not None


async def test_grant_after_expiry_does_not_apply(gw: Gateway, clock: FrozenClock) -> None:
    """Once its lifetime is over, a grant covers nothing."""
    await _grant(gw, ttl_s=3600)
    clock.advance(hours=1, seconds=1)
    result = await gw.check(pay())
    assert result.decision.effect == "approve"


async def test_revoked_grant_does_not_apply_and_revocation_is_audited(gw: Gateway) -> None:
    """After revocation, the scope needs a person again; the revocation is in the trail."""
    grant = await _grant(gw)
    done = await grants.revoke(
        gw.db, gw.writer, grant.id, by="ivan", reason="vendor under review", now=gw.clock()
    )
    assert done.revoked_by == "ivan"
    assert (await gw.check(pay())).decision.effect == "approve"
    assert (await audit_data(gw, "grant.revoked"))[0]["grant_id"] == grant.id
    listed = await grants.list_grants(gw.db, now=gw.clock(), live_only=True)
    assert listed == []


async def test_deny_and_block_rules_win_over_a_grant(gw: Gateway) -> None:
    """A deny rule (embargoed geography) and a block rule still decide inside a grant's scope."""
    await _grant(gw)
    assert (await gw.check(pay(geo="KP"))).decision.effect == "deny"
    blocked = await gw.check(pay(payee="evil"))
    assert blocked.decision.effect == "block"


async def test_grantor_cannot_use_own_grant_as_requester(gw: Gateway) -> None:
    """A request by the grantor themself is not covered: nobody approves their own request."""
    await _grant(gw)
    result = await gw.check(pay(user="alice"))
    assert result.decision.effect == "approve"


async def test_always_refused_where_rule_does_not_allow_it(gw: Gateway) -> None:
    """ "Always" on a multi-stage request is refused, audited, and records no vote."""
    held = await gw.check(pay(amount=9000))
    assert held.approval is not None
    approval_id = held.approval.approval.id
    with pytest.raises(ApprovalError) as info:
        await grants.approve_always(gw.approvals, gw.policy, approval_id, person="alice")
    assert info.value.code == "grant_not_allowed"
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    refused = await audit_data(gw, "grant.refused")
    assert refused and refused[0]["code"] == "grant_not_allowed"


async def test_always_by_an_ineligible_person_creates_no_grant(gw: Gateway) -> None:
    """The requester cannot answer "always" on their own request: no vote, no grant."""
    held = await gw.check(pay())
    assert held.approval is not None
    with pytest.raises(ApprovalError):
        await grants.approve_always(
            gw.approvals, gw.policy, held.approval.approval.id, person="carol"
        )
    assert await grants.list_grants(gw.db, now=gw.clock()) == []


async def test_plain_approve_creates_no_grant(gw: Gateway) -> None:
    """An ordinary approve leaves no standing grant behind."""
    held = await gw.check(pay())
    assert held.approval is not None
    await gw.approvals.decide(held.approval.approval.id, person="alice", decision="approve")
    assert (await gw.check(pay())).decision.effect == "approve"


async def test_policy_change_retires_grants(gw: Gateway, tmp_path: Path) -> None:
    """Narrowing a rule's scope, or removing allow_always, retires its grants at once."""
    from .helpers import POLICY

    await _grant(gw)
    narrower = POLICY.replace(
        "scope: [actor.agent, params.payee_id]", "scope: [actor.agent, params.payee_id, actor.user]"
    )
    (tmp_path / "clearance.yaml").write_text(narrower, encoding="utf-8")
    ok, _ = await gw.reload(by="test")
    assert ok
    assert (await gw.check(pay())).decision.effect == "approve"
    removed = POLICY.replace(
        "      allow_always: {max_ttl: 30d, scope: [actor.agent, params.payee_id]}\n", ""
    )
    (tmp_path / "clearance.yaml").write_text(removed, encoding="utf-8")
    ok, _ = await gw.reload(by="test")
    assert ok
    result = await gw.check(pay())
    assert result.decision.effect == "approve"
    assert "grant_offer" not in result.decision.to_json()


async def test_shorter_max_ttl_shortens_live_grants(
    gw: Gateway, tmp_path: Path, clock: FrozenClock
) -> None:
    """Lowering max_ttl after the fact limits existing grants to the new maximum."""
    from .helpers import POLICY

    await _grant(gw)
    shorter = POLICY.replace("max_ttl: 30d", "max_ttl: 1d")
    (tmp_path / "clearance.yaml").write_text(shorter, encoding="utf-8")
    assert (await gw.reload(by="test"))[0]
    assert (await gw.check(pay())).decision.effect == "allow"
    clock.advance(days=1, seconds=1)
    assert (await gw.check(pay())).decision.effect == "approve"


async def test_a_grant_lapses_when_its_grantor_can_no_longer_approve(
    gw: Gateway, tmp_path: Path
) -> None:
    """Alice's grant stops allowing requests once she leaves the managers group (and counts
    again if she returns): a grant never outlives its grantor's right to approve."""
    from .helpers import POLICY

    grant = await _grant(gw)
    assert (await gw.check(pay())).controls == {"grant_id": grant.id}
    moved = POLICY.replace(
        "{id: alice, name: Alice Ng, groups: [managers]}", "{id: alice, name: Alice Ng}"
    )
    assert moved != POLICY
    (tmp_path / "clearance.yaml").write_text(moved, encoding="utf-8")
    ok, _ = await gw.reload(by="test")
    assert ok
    held = await gw.check(pay())
    assert held.decision.effect == "approve" and held.approval is not None
    (tmp_path / "clearance.yaml").write_text(POLICY, encoding="utf-8")
    ok, _ = await gw.reload(by="test")
    assert ok
    assert (await gw.check(pay())).decision.effect == "allow"
