"""Running a channel hub's outbox to completion in tests, with a frozen clock."""

from __future__ import annotations

from datetime import timedelta

from ..channels.hub import ChannelHub
from .clock import FrozenClock


async def run_outbox(
    hub: ChannelHub, clock: FrozenClock, *, rounds: int = 3, step: timedelta = timedelta(seconds=10)
) -> None:
    """Process every due job, then move the clock by `step` so retry back-offs fall due;
    `rounds` times."""
    for _ in range(rounds):
        while await hub.dispatcher.run_once():
            pass
        clock.now += step
