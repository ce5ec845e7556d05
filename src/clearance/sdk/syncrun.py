"""Running the async SDK from synchronous code: one private event loop in a daemon thread.

A gate used synchronously keeps all its connections on that one loop, so they stay valid
between calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

R = TypeVar("R")


class SyncRunner:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="clearance-sdk", daemon=True
        )
        self._thread.start()

    def run(self, awaitable: Awaitable[R]) -> R:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a synchronous gate call cannot be made from its own loop")
        coro: Coroutine[Any, Any, R] = _as_coroutine(awaitable)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


async def _as_coroutine(awaitable: Awaitable[R]) -> R:
    return await awaitable
