"""Stage routing: `pick: round_robin | least_loaded` pages a few people of a group per
request, fairly, while `required` distinct people are still needed; the rest of the group
joins at `escalate_after`."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.testing import FrozenClock

POLICY = """
version: 1
directory:
  people:
    - {id: ann, groups: [ops]}
    - {id: ben, groups: [ops]}
    - {id: cat, groups: [ops]}
    - {id: dev, groups: [ops]}
    - {id: eve, groups: [ops, leads]}
    - {id: req}
policies:
  default: deny
  rules:
    - id: rr
      actions: [deploy]
      effect: approve
      approval:
        stages:
          - {name: ops, approvers: [group:ops], required: 2, pick: round_robin,
             escalate_after: 1h}
        timeout: 8h
    - id: ll
      actions: [restart]
      effect: approve
      approval:
        stages: [{name: ops, approvers: [group:ops], pick: least_loaded}]
    - id: tight
      actions: [rotate]
      effect: approve
      approval:
        stages:
          - {name: ops, approvers: [group:ops], pick: round_robin}
          - {name: leads, approvers: [group:leads]}
"""


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    yield gateway
    await gateway.aclose()


async def ask(gw: Gateway, action: str, user: str = "req") -> tuple[str, tuple[str, ...]]:
    result = await gw.check(Request(action, {}, {"user": user}))
    assert result.approval is not None
    a = result.approval.approval
    return a.id, a.plan.stages[0].requirements[0].approvers


async def test_round_robin_is_fair_over_100_requests(gw: Gateway) -> None:
    """Over 100 requests needing 2 of 5, each person is paged exactly 40 times, and every
    request pages 2 different people (never the whole group)."""
    counts: Counter[str] = Counter()
    for _ in range(100):
        _, picked = await ask(gw, "deploy")
        assert len(picked) == 2 and len(set(picked)) == 2
        counts.update(picked)
    assert counts == dict.fromkeys(["ann", "ben", "cat", "dev", "eve"], 40)


async def test_round_robin_passes_over_the_requester(gw: Gateway) -> None:
    """A group member's own request is never routed to them; the rotation goes on."""
    seen: Counter[str] = Counter()
    for _ in range(10):
        _, picked = await ask(gw, "deploy", user="ann")
        assert "ann" not in picked
        seen.update(picked)
    assert set(seen) == {"ben", "cat", "dev", "eve"}


async def test_picked_people_are_required_and_the_group_joins_at_escalate_after(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Only the picked may vote at first; at escalate_after the rest of the group joins and
    two distinct people are still needed."""
    approval_id, picked = await ask(gw, "deploy")
    stored = await gw.approvals.get(approval_id)
    reserve = stored.approval.plan.stages[0].requirements[0].reserve
    assert set(picked) | set(reserve) == {"ann", "ben", "cat", "dev", "eve"}
    outsider = reserve[0]
    with pytest.raises(Exception) as info:
        await gw.approvals.decide(approval_id, person=outsider, decision="approve")
    assert getattr(info.value, "code", None) == "not_eligible"
    await gw.approvals.decide(approval_id, person=picked[0], decision="approve")
    clock.advance(hours=1)
    assert await gw.approvals.fire_due("w") == 1
    done = await gw.approvals.decide(approval_id, person=outsider, decision="approve")
    assert done.approval.state.value == "approved"
    assert [e.people for e in done.approval.routing_log] == [reserve]


async def test_least_loaded_pages_whoever_has_least_waiting(gw: Gateway) -> None:
    """least_loaded spreads requests over the group and prefers the person whose earlier
    requests were decided."""
    first = [await ask(gw, "restart") for _ in range(5)]
    assert sorted(p[0] for _, p in first) == ["ann", "ben", "cat", "dev", "eve"]
    # ann decides hers: she now has the least waiting on her
    ann_request = next(i for i, p in first if p == ("ann",))
    await gw.approvals.decide(ann_request, person="ann", decision="approve")
    _, picked = await ask(gw, "restart")
    assert picked == ("ann",)


async def test_a_pick_that_would_make_the_plan_impossible_is_not_applied(gw: Gateway) -> None:
    """eve is the only lead: picking her for ops would leave the leads stage impossible (one
    person counts once), so that request pages the whole ops group instead."""
    plans = [await ask(gw, "rotate") for _ in range(5)]
    for _, picked in plans:
        assert picked != ("eve",)
    whole = [p for _, p in plans if len(p) > 1]
    assert whole and all("eve" in p for p in whole)
