"""Test helpers that ship with Clearance, for our tests and our users': a frozen clock and an
in-memory channel. Platform fakes live in `clearance.testing.fakes`."""

from .channel import MemoryChannel, sign_memory_callback
from .clock import FrozenClock

__all__ = ["FrozenClock", "MemoryChannel", "run_outbox", "sign_memory_callback"]


def __getattr__(name: str) -> object:
    # run_outbox needs the channel hub (and so the server's dependencies): load it on use.
    if name == "run_outbox":
        from .outbox import run_outbox

        return run_outbox
    raise AttributeError(name)
