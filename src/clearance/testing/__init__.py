"""Test helpers that ship with Clearance, for our tests and our users': a frozen clock and an
in-memory channel. Platform fakes live in `clearance.testing.fakes`."""

from .channel import MemoryChannel, sign_memory_callback
from .clock import FrozenClock

__all__ = ["FrozenClock", "MemoryChannel", "sign_memory_callback"]
