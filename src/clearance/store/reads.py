"""Reading through the right engine: inline on SQLite, through asyncio on PostgreSQL.

aiosqlite hands every statement to a worker thread and back; a local SQLite read is cheaper
than those hops (measured: 0.56 ms inline against 3.1 ms for an approval read through
aiosqlite), so on SQLite a read runs on the calling thread with the sync engine — as the audit
writer already does for writes — on a connection kept for that thread (`Database.reading`:
a pool checkout and return cost more than the read itself). On PostgreSQL, network I/O never
blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection

from .database import Database

T = TypeVar("T")


async def read(db: Database, fn: Callable[[Connection], T]) -> T:
    """Run `fn(connection)` for reading, the cheapest safe way for this database."""
    if db.is_sqlite:
        with db.reading() as conn:  # this thread's kept connection: no pool checkout
            return fn(conn)
    async with db.aconnect() as aconn:
        return await aconn.run_sync(fn)
