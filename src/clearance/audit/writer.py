"""The audit writer: the one door through which a process writes audit entries (and the rows
that must commit with them), with group commit.

Callers queue work; a flush runs everything queued so far in ONE transaction:

1. lock this chain's head (`BEGIN IMMEDIATE` on SQLite, so writers in several processes
   sharing a file serialize; `SELECT … FOR UPDATE` on PostgreSQL, inserting the head row
   when missing) and re-read it — another process may have appended since;
2. run each unit in queue order: a plain `append` gets the next seq and hash; a `run(work)`
   unit runs `work(tx)` inside its own SAVEPOINT, and if it raises only that savepoint is
   rolled back (its rows and its audit entries vanish) and the exception goes to its caller;
3. insert the batch's entries with one `executemany`, update the head, COMMIT;
4. resolve the callers' futures. Nobody hears "done" before the commit.

While a flush runs, new arrivals queue for the next one. If the database fails anywhere in
the batch, the transaction rolls back and every caller in it gets `StoreUnavailable`.

Where the flush runs: on SQLite, inline on the event-loop thread (a local WAL commit costs tens
of µs, less than handing off to a thread for a lone caller), with WAL checkpoints (an fsync)
moved to a background thread; on PostgreSQL, in one dedicated worker thread so network round
trips never block the loop. The code is the same either way. A lone caller with nothing else
ready on the loop flushes at once; otherwise it yields once so concurrent callers share the
transaction.
A caller that is cancelled while waiting does not stop its write: audit entries are never
dropped once accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, insert, select

from clearance.audit._sql import AuditSQL
from clearance.audit.chain import (
    GENESIS,
    EncodedDraft,
    Head,
    checkpoint_hash,
    encode_draft,
    hash_with_body,
)
from clearance.audit.entry import AuditDraft, AuditEntry, entry_from_draft
from clearance.store.database import Database
from clearance.store.errors import StoreUnavailable, is_unavailable, unavailable_from
from clearance.store.schema import audit_checkpoints, audit_heads

__all__ = ["AuditWriter", "Checkpoint", "WriteTx"]

_SAVEPOINT = "SAVEPOINT clearance_unit"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT clearance_unit"
_RELEASE = "RELEASE SAVEPOINT clearance_unit"
R = TypeVar("R")

DEFAULT_MAX_BATCH = 1024


class _Batch:
    """The chain's head as it advances through one flush, and the rows to insert."""

    __slots__ = ("chain_id", "hash", "last_ts", "rows", "seq", "sql")

    def __init__(self, chain_id: str, seq: int, hash_: str, sql: AuditSQL) -> None:
        self.chain_id = chain_id
        self.seq = seq
        self.hash = hash_
        self.sql = sql
        self.rows: list[tuple[Any, ...]] = []
        self.last_ts: object = None

    def add(self, d: AuditDraft, enc: EncodedDraft) -> AuditEntry:
        seq = self.seq + 1
        prev = self.hash
        new = hash_with_body(prev, self.chain_id, seq, enc.body)
        ts = self.sql.ts_param(d.ts, enc.ts)
        self.rows.append(
            (
                self.chain_id,
                seq,
                ts,
                d.kind,
                d.actor,
                d.approver,
                d.channel,
                d.action,
                d.params_hash,
                d.effect,
                enc.rule_ids_json,
                d.policy_version,
                d.approval_id,
                enc.data_json,
                prev,
                new,
            )
        )
        self.seq, self.hash, self.last_ts = seq, new, ts
        return entry_from_draft(d, self.chain_id, seq, prev, new)

    def mark(self) -> tuple[int, int, str, object]:
        return len(self.rows), self.seq, self.hash, self.last_ts

    def reset(self, mark: tuple[int, int, str, object]) -> None:
        n, self.seq, self.hash, self.last_ts = mark
        del self.rows[n:]


class WriteTx:
    """What a `run` unit gets: the batch transaction's connection, and `audit()`.

    `conn` is a SQLAlchemy sync Connection inside the unit's SAVEPOINT. Do not commit or roll
    back on it; raise to undo the unit.
    """

    __slots__ = ("_batch", "_open", "conn")

    def __init__(self, conn: Connection, batch: _Batch) -> None:
        self.conn = conn
        self._batch = batch
        self._open = True

    @property
    def chain_id(self) -> str:
        return self._batch.chain_id

    @property
    def head(self) -> Head:
        """This chain's head including the entries added so far in this transaction."""
        return Head(self._batch.seq, self._batch.hash)

    def audit(self, draft: AuditDraft) -> AuditEntry:
        """Add an audit entry that commits (or not) with this unit; returns it, numbered."""
        if not self._open:
            raise RuntimeError("this unit of work has finished; audit() is no longer possible")
        return self._batch.add(draft, encode_draft(draft))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A record of every chain's head at one moment."""

    id: int
    ts: datetime
    heads: dict[str, Head]
    hash: str


class _Item(Generic[R]):
    """One queued unit: an append (draft + encoding) or a `run` (work)."""

    __slots__ = ("draft", "encoded", "error", "finished", "future", "result", "work")

    def __init__(
        self,
        draft: AuditDraft | None = None,
        encoded: EncodedDraft | None = None,
        work: Callable[[WriteTx], R] | None = None,
    ) -> None:
        self.draft = draft
        self.encoded = encoded
        self.work = work
        self.future: asyncio.Future[R] | None = None
        self.result: R | None = None
        self.error: BaseException | None = None
        self.finished = False

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        return cast(R, self.result)


class AuditWriter:
    """Appends to one audit chain with group commit; see the module docstring.

    One writer per process and chain. Async callers use `append`/`run`/`checkpoint`; sync
    callers (the CLI) use the `*_sync` twins. `inline` (default: SQLite) runs flushes on the
    event-loop thread; otherwise they run in a dedicated worker thread.
    """

    def __init__(
        self,
        db: Database,
        chain_id: str = "main",
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        inline: bool | None = None,
    ) -> None:
        if not chain_id or len(chain_id) > 64:
            raise ValueError("chain_id must be 1 to 64 characters")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._db = db
        self.chain_id = chain_id
        self._max_batch = max_batch
        self._inline = db.is_sqlite if inline is None else inline
        self._sql = AuditSQL(db.dialect)
        # SQLite keeps one connection (no pool checkout on the hot path); PostgreSQL checks
        # one out per flush so that a connection lost to a server restart is replaced.
        self._keep_connection = db.is_sqlite
        # SQLite: a WAL checkpoint copies pages into the database and fsyncs it, ~10 ms that
        # SQLite's default makes one commit in a few hundred pay, on the event loop's thread.
        # In inline mode a background thread checkpoints instead (PASSIVE: it never blocks
        # the writer); the writer's connection keeps a far-off automatic checkpoint only as a
        # backstop, for when sustained appends never let a background checkpoint finish.
        self._checkpointer: _WalCheckpointer | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Item[Any]] = []
        self._scheduled = False
        self._busy = False
        self._closed = False
        self._idle_waiters: list[asyncio.Future[None]] = []

    # -- async API ---------------------------------------------------------------------------

    async def append(self, draft: AuditDraft) -> AuditEntry:
        """Append `draft` to the chain; returns once the entry is committed.

        Raises ValueError for a draft that cannot be encoded, StoreUnavailable when the
        database failed (nothing of the batch was written).
        """
        return await self._submit(_Item(draft, encode_draft(draft)))

    async def run(self, work: Callable[[WriteTx], R]) -> R:
        """Run `work(tx)` in the next batch transaction (in its own SAVEPOINT); returns its
        result after the commit, or raises what it raised (only its own writes undone).

        `work` is synchronous and must be quick: on SQLite it runs on the event-loop thread,
        on PostgreSQL in the writer's thread. It must not call the writer itself.
        """
        return await self._submit(_Item(work=work))

    async def checkpoint(self, now: datetime) -> Checkpoint:
        """Record every chain's head (this one's included) in `audit_checkpoints`."""
        return await self.run(lambda tx: _write_checkpoint(tx, now))

    async def aclose(self) -> None:
        """Flush what is queued, then stop. Later calls raise RuntimeError."""
        self._closed = True
        while self._queue or self._busy or self._scheduled:
            waiter = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter
        self.close()

    # -- sync API ----------------------------------------------------------------------------

    def append_sync(self, draft: AuditDraft) -> AuditEntry:
        """`append` for callers without an event loop; blocks until committed."""
        item: _Item[AuditEntry] = _Item(draft, encode_draft(draft))
        self._check_open()
        self._execute([item])
        return item.outcome()

    def run_sync(self, work: Callable[[WriteTx], R]) -> R:
        """`run` for callers without an event loop; blocks until committed."""
        item: _Item[R] = _Item(work=work)
        self._check_open()
        self._execute([item])
        return item.outcome()

    def checkpoint_sync(self, now: datetime) -> Checkpoint:
        return self.run_sync(lambda tx: _write_checkpoint(tx, now))

    def close(self) -> None:
        """Release the writer's connection and thread (after `aclose`, or for sync users)."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- scheduling --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the audit writer is closed")

    async def _submit(self, item: _Item[R]) -> R:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Serve one event loop at a time; moving to another (a CLI calling asyncio.run
            # twice) is fine once nothing is in flight on the first.
            if self._queue or self._busy or self._scheduled:
                raise RuntimeError("this AuditWriter is busy on another event loop")
            self._loop = loop
        if self._inline and not self._scheduled and not self._busy:
            # This caller leads the next flush: it yields once, so that every task ready in
            # this loop iteration can queue too, then flushes them all and returns its own
            # result directly (one loop hop fewer than waking up on a future). When nothing
            # else is ready to run, yielding could batch nobody: flush at once.
            self._scheduled = True
            self._queue.append(item)
            if _others_ready(loop):
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    loop.call_soon(self._start_flush)  # the others still need their flush
                    raise
            self._start_flush()
            if item.finished:
                return item.outcome()
            # Not reached (the leader's item is first in the queue), but never guess:
            item.future = loop.create_future()
            return await item.future
        future: asyncio.Future[R] = loop.create_future()
        item.future = future
        self._queue.append(item)
        if not self._scheduled and not self._busy:
            # Flush on the next loop iteration, so that everyone who queues in this one
            # shares the transaction.
            self._scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._queue:
            return
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._busy = True
        if self._inline:
            if self._checkpointer is None and self._db.is_sqlite:
                self._checkpointer = _WalCheckpointer(self._db)
            try:
                self._execute(batch)
            finally:
                self._finish(batch)
            if self._checkpointer is not None:
                self._checkpointer.committed()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"audit-{self.chain_id}")
        loop = self._loop
        if loop is None:  # pragma: no cover - _submit sets it before scheduling a flush
            raise RuntimeError("no event loop")
        done = self._executor.submit(self._execute, batch)
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finish, batch))

    def _finish(self, batch: list[_Item[Any]]) -> None:
        self._busy = False
        for item in batch:
            item.finished = True
            future = item.future
            if future is None or future.done():  # the caller was cancelled
                continue
            if item.error is not None:
                future.set_exception(item.error)
            else:
                future.set_result(item.result)
        if self._queue:
            if not self._scheduled and self._loop is not None:
                self._scheduled = True
                self._loop.call_soon(self._start_flush)
        else:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    # -- the flush ---------------------------------------------------------------------------

    def _execute(self, items: list[_Item[Any]]) -> None:
        """Run `items` in one transaction; record each item's result or error. Never raises
        (except BaseExceptions such as KeyboardInterrupt, after failing every item)."""
        if getattr(self._local, "active", False):
            for item in items:
                item.error = RuntimeError(
                    "the audit writer was called from inside a unit of work: use tx.audit()"
                )
            return
        with self._lock:
            self._local.active = True
            conn: Connection | None = None
            try:
                conn = self._connection()
                self._flush(conn, items)
            except BaseException as exc:
                if conn is not None:
                    self._discard(conn)
                for item in items:
                    item.result = None
                    item.error = _batch_error(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not self._keep_connection:
                    conn.close()
            finally:
                self._local.active = False

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._db.sync_engine.connect()
            if self._db.is_sqlite:
                conn.execution_options(sqlite_begin="IMMEDIATE")
                if self._checkpointer is not None:  # only a backstop now, see __init__
                    raw: Any = conn.connection.dbapi_connection
                    raw.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_PAGES}").close()
            if self._keep_connection:
                self._conn = conn
        return conn

    def _discard(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            conn.invalidate()
            conn.close()
        except Exception:  # noqa: S110 - the connection is being thrown away anyway
            pass

    def _flush(self, conn: Connection, items: list[_Item[Any]]) -> None:
        if any(item.work is not None for item in items):
            # Units of work need SQLAlchemy's transaction (for their savepoints).
            with conn.begin():
                cursor = conn.connection.cursor()
                try:
                    self._write(conn, cursor, items)
                finally:
                    cursor.close()
            return
        # Only appends: drive the transaction on the DB-API connection itself, which halves
        # the cost of a lone caller's commit. SQLAlchemy sees no transaction, before or after.
        dbapi: Any = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            if self._sql.is_sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            self._write(conn, cursor, items)
            dbapi.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                dbapi.rollback()
            raise
        finally:
            cursor.close()

    def _write(self, conn: Connection, cursor: Any, items: list[_Item[Any]]) -> None:
        sql = self._sql
        batch = _Batch(self.chain_id, *self._lock_head(cursor), sql)
        for item in items:
            if item.work is not None:
                self._run_unit(conn, cursor, batch, item.work, item)
            elif item.draft is not None and item.encoded is not None:
                item.result = batch.add(item.draft, item.encoded)
        if len(batch.rows) == 1:
            cursor.execute(sql.insert_entries, batch.rows[0])
        elif batch.rows:
            cursor.executemany(sql.insert_entries, batch.rows)
        if batch.rows:
            cursor.execute(sql.update_head, (batch.seq, batch.hash, batch.last_ts, self.chain_id))

    def _run_unit(
        self,
        conn: Connection,
        cursor: Any,
        batch: _Batch,
        work: Callable[[WriteTx], Any],
        item: _Item[Any],
    ) -> None:
        # The unit's SAVEPOINT goes straight to the DB-API cursor, as the batch's own
        # statements do: SQLAlchemy's begin_nested() cost as much as the rest of a check.
        # SQLAlchemy still owns the outer transaction, and a unit may nest its own savepoints.
        mark = batch.mark()
        cursor.execute(_SAVEPOINT)
        tx = WriteTx(conn, batch)
        try:
            result = work(tx)
            if asyncio.iscoroutine(result):
                result.close()
                raise TypeError("work must be a plain function, not a coroutine function")
            item.result = result
        except Exception as exc:
            tx._open = False
            if not conn.in_transaction():
                raise RuntimeError(
                    "a unit of work ended the writer's transaction; raise instead"
                ) from exc
            cursor.execute(_ROLLBACK_TO)  # if this fails too, the whole batch fails
            cursor.execute(_RELEASE)
            batch.reset(mark)
            item.error = unavailable_from(exc) if is_unavailable(exc) else exc
        else:
            tx._open = False
            if not conn.in_transaction():  # the unit committed or rolled back by itself
                raise RuntimeError("a unit of work ended the writer's transaction; raise instead")
            cursor.execute(_RELEASE)

    def _lock_head(self, cursor: Any) -> tuple[int, str]:
        sql = self._sql
        cursor.execute(sql.select_head, (self.chain_id,))
        row = cursor.fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        # No head yet: start the chain (or, if its head row was lost, continue after its last
        # entry). ON CONFLICT: another process may be creating it at the same moment.
        cursor.execute(sql.last_entry, (self.chain_id,))
        last = cursor.fetchone()
        seq, hash_ = (int(last[0]), str(last[1])) if last is not None else (0, GENESIS)
        cursor.execute(sql.insert_head, (self.chain_id, seq, hash_, sql.epoch_param()))
        cursor.execute(sql.select_head, (self.chain_id,))
        row = cursor.fetchone()
        if row is None:  # pragma: no cover - the row was just inserted or already existed
            raise RuntimeError(f"audit head of chain {self.chain_id!r} vanished")
        return int(row[0]), str(row[1])


_BACKSTOP_PAGES = 10_000  # ~40 MB of WAL with 4 KB pages; SQLite's default is 1,000


class _WalCheckpointer:
    """Checkpoints a SQLite WAL from a daemon thread, after every `every` commits (and at
    stop), so that appends never pay for it. The thread holds its own connection; sqlite3
    releases the GIL while it works."""

    def __init__(self, db: Database, every: int = 200) -> None:
        self._db = db
        self._every = every
        self._count = 0
        self._wake = threading.Event()
        self._stopping = False
        self.runs = 0
        self._thread = threading.Thread(target=self._loop, name="audit-wal-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._count += 1
        if self._count >= self._every:
            self._count = 0
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        conn = None
        try:
            conn = self._db.sync_engine.connect()
            raw: Any = conn.connection.dbapi_connection  # outside any transaction
            while True:
                self._wake.wait()
                self._wake.clear()
                with contextlib.suppress(Exception):  # busy or unavailable: try next time
                    raw.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                    self.runs += 1
                if self._stopping:
                    return
        except Exception:  # noqa: S110 - never take the process down for a checkpoint
            pass
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def _others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether other callbacks are waiting to run in this loop iteration.

    Reads asyncio's ready queue (private, but stable since Python 3.4); a loop without one
    (uvloop) is assumed busy, which only costs a yield.
    """
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > 0


def _batch_error(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, Exception) and is_unavailable(exc):
        err = unavailable_from(exc)
        fresh = StoreUnavailable(*err.args)  # one instance per caller
    else:
        fresh = StoreUnavailable(
            f"audit write failed and was rolled back: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
    fresh.__cause__ = exc
    return fresh


def _write_checkpoint(tx: WriteTx, now: datetime) -> Checkpoint:
    rows = tx.conn.execute(select(audit_heads.c.chain_id, audit_heads.c.seq, audit_heads.c.hash))
    heads = {str(r.chain_id): Head(int(r.seq), str(r.hash)) for r in rows}
    heads[tx.chain_id] = tx.head
    digest = checkpoint_hash(now, heads)
    heads_json = {cid: {"seq": h.seq, "hash": h.hash} for cid, h in sorted(heads.items())}
    new_id = tx.conn.execute(
        insert(audit_checkpoints)
        .values(ts=now, heads_json=heads_json, hash=digest)
        .returning(audit_checkpoints.c.id)
    ).scalar_one()
    return Checkpoint(int(new_id), now, heads, digest)
