"""What the CLI prints: the demo banner's off-hours warning, and `approvals show`'s routing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from clearance.cli.gateway_cmds import off_hours_now
from clearance.gateway import Gateway
from clearance.testing import FrozenClock

from ..fixtures import ENTERPRISE

RISK = ENTERPRISE.with_name("risk.yaml")


async def test_off_hours_is_named_only_outside_business_hours(tmp_path: Path) -> None:
    """09:00 on a Tuesday in New York is business hours; 21:30 is not, and says why."""
    clock = FrozenClock(datetime(2026, 11, 24, 14, 0, tzinfo=UTC))
    gateway = Gateway.open(
        [ENTERPRISE, RISK], database_url=f"sqlite:///{tmp_path}/c.db", clock=clock
    )
    try:
        assert off_hours_now(gateway) is None
        clock.now = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
        reason = off_hours_now(gateway)
        assert reason is not None and "Tuesday 21:30 in America/New_York" in reason
    finally:
        await gateway.aclose()


async def test_no_risk_section_no_warning(tmp_path: Path) -> None:
    """Without a risk: section there are no business hours to be outside of."""
    clock = FrozenClock(datetime(2026, 11, 25, 2, 30, tzinfo=UTC))
    gateway = Gateway.open(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    try:
        assert off_hours_now(gateway) is None
    finally:
        await gateway.aclose()


def test_approvals_show_lists_reminders_escalations_and_stand_ins() -> None:
    """`clearance approvals show` says who was reminded or escalated to, and who stands in
    for whom, as the request page does."""
    import dataclasses

    from clearance.approvals.model import RoutingEntry, Vote, VoteDecision
    from clearance.approvals.records import StoredApproval
    from clearance.cli.gateway_cmds import _print_approval
    from clearance.cli.output import console

    from ..approvals.factories import NOW, SOON, new, two_stage

    approval = dataclasses.replace(
        new(two_stage()),
        delegations=(("alice", "bob"),),
        routing_log=(RoutingEntry("reminder", 0, 1, SOON, ("alice", "bob")),),
        votes=(Vote("bob", VoteDecision.APPROVE, 0, SOON, None, "web", "alice"),),
    )
    with console.capture() as captured:
        _print_approval(StoredApproval(approval=approval))
    out = captured.get()
    assert NOW.isoformat() in out
    assert "bob stands in for alice" in out
    assert f"stage 1 reminded at {SOON.isoformat()}: alice, bob" in out
    assert "approve by bob for alice via web" in out
