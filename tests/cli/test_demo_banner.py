"""The demo's banner warns when the example's off-hours rule will ask a second approver."""

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
