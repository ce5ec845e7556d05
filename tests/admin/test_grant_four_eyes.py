"""Standing grants that would last longer than `server.admin_changes.grants_longer_than` are
not created by their approver alone: another admin decides them (`clearance.grant.create`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from clearance import grants
from clearance.admin_changes import GRANT_CREATE, AdminChanges
from clearance.approvals.service import ApprovalError, VoteRefused
from clearance.audit.export import iter_entries
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.testing import FrozenClock

POLICY = """\
version: 1
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers]}
    - {id: carol, name: Carol Diaz, groups: [staff]}
    - {id: ivan, name: Ivan Petrov, roles: [admin]}
    - {id: judy, name: Judy Chen, roles: [admin]}
policies:
  default: deny
  rules:
    - id: vendor-payments
      actions: [payments.vendor]
      effect: approve
      approval: {stages: [{name: manager, approvers: [group:managers]}]}
      allow_always: {max_ttl: 30d, scope: [params.payee_id]}
server:
  admin_changes: {grants_longer_than: 7d}
"""

PAY = Request("payments.vendor", {"payee_id": "acme", "amount": 10}, {"user": "carol"})


@pytest.fixture
async def env(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> AsyncIterator[tuple[Gateway, AdminChanges]]:
    path = tmp_path / "clearance.yaml"
    path.write_text(POLICY)
    gateway = Gateway.open(path, database_url=db_url, clock=clock)
    changes = AdminChanges(gateway)
    yield gateway, changes
    await changes.wait_idle()
    await gateway.aclose()


async def held(gateway: Gateway) -> str:
    result = await gateway.check(PAY)
    assert result.approval is not None
    return result.approval.approval.id


async def test_a_long_grant_waits_for_another_admin(
    env: tuple[Gateway, AdminChanges], clock: FrozenClock
) -> None:
    """Approving always for 30 days approves the request at once, but the grant exists only
    after an admin other than the grantor approves the `clearance.grant.create` request."""
    gateway, changes = env
    approval_id = await held(gateway)
    decided, grant = await grants.approve_always(
        gateway.approvals, gateway.policy, approval_id, person="alice", ttl_s=30 * 86400
    )
    assert decided.approval.state.value == "approved" and grant is None
    assert await grants.list_grants(gateway.db, now=clock()) == []
    [change] = await changes.recent()
    assert change.kind == "grant" and change.state == "pending" and change.author == "alice"
    pending = await gateway.approvals.get(change.approval_id)
    assert pending.approval.action == GRANT_CREATE
    assert pending.approval.plan.stages[0].requirements[0].approvers == ("ivan", "judy")
    with pytest.raises(VoteRefused) as refused:
        await gateway.approvals.decide(change.approval_id, person="alice", decision="approve")
    assert refused.value.code in {"self_approval", "not_eligible"}

    await gateway.approvals.decide(change.approval_id, person="judy", decision="approve")
    await changes.wait_idle()
    [made] = await grants.list_grants(gateway.db, now=clock())
    assert made.grantor == "alice" and made.approval_id == approval_id
    assert made.expires_at - clock() == timedelta(days=30)
    assert (await changes.get(change.id)).state == "applied"  # type: ignore[union-attr]
    later = await gateway.check(PAY)
    assert later.decision.effect.value == "allow"  # the grant now covers the same payee


async def test_a_short_grant_needs_no_second_admin(
    env: tuple[Gateway, AdminChanges], clock: FrozenClock
) -> None:
    """A grant within the limit (7 days) is created with the vote, as before."""
    gateway, changes = env
    approval_id = await held(gateway)
    _, grant = await grants.approve_always(
        gateway.approvals, gateway.policy, approval_id, person="alice", ttl_s=86400
    )
    assert grant is not None and await changes.recent() == []


async def test_a_denied_grant_is_never_created(
    env: tuple[Gateway, AdminChanges], clock: FrozenClock
) -> None:
    """When the other admin denies, no grant exists and the change is closed as rejected."""
    gateway, changes = env
    await grants.approve_always(
        gateway.approvals, gateway.policy, await held(gateway), person="alice", ttl_s=20 * 86400
    )
    [change] = await changes.recent()
    await gateway.approvals.decide(
        change.approval_id, person="ivan", decision="deny", comment="too long"
    )
    await changes.wait_idle()
    assert await grants.list_grants(gateway.db, now=clock()) == []
    assert (await changes.get(change.id)).state == "rejected"  # type: ignore[union-attr]


async def test_without_another_admin_the_always_vote_is_refused(
    tmp_path: Path, db_url: str, clock: FrozenClock
) -> None:
    """With no admin besides the grantor, a long "always" is refused whole (and audited):
    the approver can still approve once."""
    path = tmp_path / "clearance.yaml"
    path.write_text(
        POLICY.replace(
            "roles: [admin]}\n    - {id: judy, name: Judy Chen, roles: [admin]}",
            "roles: []}\n    - {id: judy, name: Judy Chen}",
        )
    )
    gateway = Gateway.open(path, database_url=db_url, clock=clock)
    changes = AdminChanges(gateway)
    try:
        approval_id = await held(gateway)
        with pytest.raises(ApprovalError) as refused:
            await grants.approve_always(
                gateway.approvals, gateway.policy, approval_id, person="alice", ttl_s=30 * 86400
            )
        assert refused.value.code == "grant_needs_admin"
        await changes.wait_idle()
        trail = [e.kind for e in iter_entries(gateway.db)]
        assert "admin.change_rejected" in trail
        assert (await gateway.approvals.get(approval_id)).approval.state.value == "pending"
        once = await gateway.approvals.decide(approval_id, person="alice", decision="approve")
        assert once.approval.state.value == "approved"
    finally:
        await gateway.aclose()
