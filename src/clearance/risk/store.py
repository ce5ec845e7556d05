"""The risk signals' incremental state in the store: point reads and compare-and-set upserts.

`select_marked` fetches the rows a request's signals need — its actor's and its agent's
counters for the action, whether its country / device / payee were seen, the payee's last bank
change, the agent's recent denials — in ONE statement of primary-key point lookups, with the
fold mark of one audit chain in the same snapshot (`clearance.risk.journal` decides which rows
it needs: none when this process keeps them all in `RowCache`). `upsert_rows` writes rows in
multi-row `INSERT … ON CONFLICT DO UPDATE … RETURNING` statements
(`sqlalchemy.dialects.sqlite.insert` / `sqlalchemy.dialects.postgresql.insert`); the journal's
fold uses it, and so does `record`, which counts one check into its rows at once (write-through,
in the caller's transaction; the gateway writes behind instead). Nothing ever scans the history:
the rows are summaries (see `clearance.risk.tables`).

Concurrency: each row carries a `version`. An upsert writes version v+1 only where the row is
still at the v it read (`… DO UPDATE … WHERE risk_state.version = excluded.version - 1`; a new
row is written as version 1 and loses to a concurrent insert). A row that someone else
updated in between is not returned by RETURNING; `record` (and a fold) read those rows again,
inside the transaction, and apply the change to the fresh state.

The functions take a SQLAlchemy sync `Connection` and talk to its DB-API cursor with
statements compiled once per dialect (SQLAlchemy's per-statement machinery would cost more
than the database work). A read may run inside a transaction or, on SQLite, on an idle
connection (an autocommit read: no snapshot is kept); on an idle PostgreSQL connection it runs
in a short transaction of its own.

What each row holds (`state`, little-endian binary — a few `frombytes` to read, where JSON
cost more than the database work on the hot path):

    actor_action / agent_action   `clearance.risk.activity.Activity` (windows, amounts)
    seen_geo / seen_device / seen_payee   last-seen epoch seconds (one float64); rewritten
                                  at most hourly
    payee_bank                    epoch seconds (float64) of the last bank-details change
    agent_denials                 epoch seconds (float64 each) of the agent's last
                                  `denial_burst.count` denied or blocked requests

`describe(kind, state)` turns a row's state into plain values, for people and tests.
`expires_at` is not indexed (`prune` walks the primary key instead), so an update writes one
B-tree; it is rounded up to the hour.
"""

from __future__ import annotations

import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Dialect,
    bindparam,
    delete,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from clearance.store.errors import translate_errors

from .activity import Activity
from .facts import Facts, key_part
from .settings import RiskSettings
from .signals import History
from .tables import risk_folds, risk_state

__all__ = [
    "KINDS",
    "ActivityUpdate",
    "RiskStoreConflict",
    "RowCache",
    "StoreKeys",
    "SubjectRow",
    "TimeUpdate",
    "decode_value",
    "describe",
    "encode_value",
    "keys_of",
    "prune",
    "record",
    "select_marked",
    "select_rows",
    "subject_rows",
    "updaters",
    "upsert_rows",
]

Key = tuple[str, str, str]
#: A kept row: (version, value), and for `clearance.risk.journal` the last check counted in.
Row = tuple[Any, ...]
#: A compiled statement and, for positional drivers, the order of its parameters.
_SQL = tuple[str, tuple[str, ...] | None]

ACTOR_ACTION: Final = "actor_action"
AGENT_ACTION: Final = "agent_action"
SEEN_GEO: Final = "seen_geo"
SEEN_DEVICE: Final = "seen_device"
SEEN_PAYEE: Final = "seen_payee"
PAYEE_BANK: Final = "payee_bank"
AGENT_DENIALS: Final = "agent_denials"
#: The kinds with a partial index of their own (migration 0010), so all their rows can be read.
INDEXED_KINDS: Final = frozenset({PAYEE_BANK})
#: Where a person was seen from, on what and whom they paid: `RowCache.cover_subject` keeps
#: all of a person's rows of these kinds, or says nothing. (Each is one time: cheap to read.)
SUBJECT_KINDS: Final = frozenset({SEEN_GEO, SEEN_DEVICE, SEEN_PAYEE})
KINDS: Final = (
    ACTOR_ACTION,
    AGENT_ACTION,
    SEEN_GEO,
    SEEN_DEVICE,
    SEEN_PAYEE,
    PAYEE_BANK,
    AGENT_DENIALS,
)

#: A last-seen time younger than this is not rewritten (so a known country, device or payee
#: costs no write on most checks); retention is measured in days, so an hour is noise.
SEEN_REFRESH_S: Final = 3600.0
#: Counter rows outlive their last request by at least this (their 24 h window).
_DAY: Final = 86400.0
_MAX_ROUNDS: Final = 8
_REFUSED: Final = frozenset({"deny", "block"})
_ALLOWED: Final = "allow"
#: The "effect" noted for an approved call claimed by its agent (`updaters`).
SEEN: Final = "seen"
_TIME: Final = struct.Struct("<d")


class RiskStoreConflict(Exception):
    """The same risk rows kept changing under `record` (many concurrent writers); nothing of
    this unit should commit."""


@dataclass(slots=True)
class StoreKeys:
    """The rows one request reads (and may write), by role; None where it has none."""

    actor: Key | None = None
    agent: Key | None = None
    geo: Key | None = None
    device: Key | None = None
    payee: Key | None = None
    bank: Key | None = None  # the paid payee's bank-change row (read only)
    bank_change: Key | None = None  # the row this request's bank-details change writes
    denials: Key | None = None

    def wanted(self) -> list[Key]:
        """The keys to read, each once (in no particular order: reads take no locks)."""
        return list(
            dict.fromkeys(
                [
                    k
                    for k in (
                        self.actor,
                        self.agent,
                        self.geo,
                        self.device,
                        self.payee,
                        self.bank,
                        self.bank_change,
                        self.denials,
                    )
                    if k is not None
                ]
            )
        )


def keys_of(facts: Facts) -> StoreKeys:
    """The store rows of a request with these facts."""
    actor = key_part(facts.actor) if facts.actor else None
    agent = key_part(facts.agent) if facts.agent else None
    action = key_part(facts.action)
    return StoreKeys(
        actor=(ACTOR_ACTION, actor, action) if actor else None,
        agent=(AGENT_ACTION, agent, action) if agent else None,
        geo=(SEEN_GEO, actor, key_part(facts.geo)) if actor and facts.geo else None,
        device=(SEEN_DEVICE, actor, key_part(facts.device)) if actor and facts.device else None,
        payee=(SEEN_PAYEE, actor, key_part(facts.payee)) if actor and facts.payee else None,
        bank=(PAYEE_BANK, key_part(facts.payee), "") if facts.payee else None,
        bank_change=(
            (PAYEE_BANK, key_part(facts.bank_change_payee), "") if facts.bank_change_payee else None
        ),
        denials=(AGENT_DENIALS, agent, "") if agent else None,
    )


# ---------------------------------------------------------------------------------------------
# This process's copy of the rows


class RowCache:
    """The last known committed (version, value) of risk rows, as this process saw them.

    A least-recently-used map of at most `size` rows (0: no cache). A hit saves the read.

    - Reads outside a transaction fill it (committed data).
    - `record` *holds* the rows it is about to write: until their transaction is reported
      committed (`put_many` of what `record` returned), a held row is read from the store
      and not cached, so a rollback never leaves a phantom count behind, and a caller that
      never reports the commit only loses the saved reads.
    - Of two versions of a row the higher is kept.
    - A row known to be absent is kept as version 0.
    - *Complete sets*: what it holds can also say that a row is absent without naming it.
      `cover_subject(subject, …)` says it holds every row of `SUBJECT_KINDS` of that subject
      (a person's countries, devices and payees): any other such row of theirs is absent.
      `cover_kind(kind, …)` holds every row of a kind (the few payees whose bank details
      changed), outside the least-recently-used order, so that none is evicted: any other
      row of that kind is absent. An absent row found this way is (0, None, since), `since`
      being the fold mark of the read that made the set complete. Evicting a row of a
      complete subject, or holding one of a complete set, ends that set. `cover_all` says
      it holds every row of the store (warming found that they all fit): any row it does not
      hold is absent, until a row is evicted or held or the sets are dropped.

    An entry can only be stale when another process or instance changed the row; then
    `record`'s compare-and-set fails and reads it again. So in one process (embedded SQLite)
    the cache is exact, and across instances a subject's counts lag by at most the requests
    other instances handled since this one last recorded it (the journal drops everything kept
    when it finds that another process has folded). Thread-safe (reads on the event loop,
    records and commits on the writer's thread).
    """

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self.hits = 0  # rows found (for metrics)
        self.misses = 0
        self._rows: OrderedDict[Key, Row] = OrderedDict()
        self._kinds: dict[str, tuple[int, dict[Key, Row]]] = {}  # kind → (since, every row)
        self._subjects: dict[str, int] = {}  # subject → since: every SUBJECT_KINDS row kept
        self._whole: int | None = None  # since: every row of the store is kept
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows) + sum(len(rows) for _, rows in self._kinds.values())

    def get_many(self, keys: list[Key], *, count: bool = True) -> dict[Key, Row]:
        """The cached rows among `keys`, and the rows a complete set says are absent (held
        rows are not returned); `count`: in the hit and miss figures."""
        if not self.size:
            return {}
        found: dict[Key, Row] = {}
        rows = self._rows
        kinds = self._kinds
        subjects = self._subjects
        with self._lock:
            for key in keys:
                kind = key[0]
                if kinds:
                    pinned = kinds.get(kind)
                    if pinned is not None:
                        row = pinned[1].get(key)
                        found[key] = row if row is not None else (0, None, pinned[0])
                        continue
                row = rows.get(key)
                if row is not None:
                    if row is not _HELD:
                        rows.move_to_end(key)
                        found[key] = row
                elif kind in SUBJECT_KINDS and key[1] in subjects:
                    found[key] = (0, None, subjects[key[1]])
                elif self._whole is not None:
                    found[key] = (0, None, self._whole)
            if count:
                self.hits += len(found)
                self.misses += len(keys) - len(found)
        return found

    def put_many(self, rows: Mapping[Key, Row], *, read: bool = False) -> None:
        """Remember committed rows; `read`: they come from a read (a held row stays held)."""
        if not self.size:
            return
        with self._lock:
            self._put(rows, read)

    def _put(self, rows: Mapping[Key, Row], read: bool) -> None:
        """`put_many`, under the lock."""
        cached = self._rows
        kinds = self._kinds
        for key, row in rows.items():
            pinned = kinds.get(key[0]) if kinds else None
            if pinned is not None:
                old = pinned[1].get(key)
                if old is None or old[0] <= row[0]:
                    pinned[1][key] = row
                continue
            old = cached.get(key)
            if old is _HELD:
                if read:
                    continue
            elif old is not None and old[0] > row[0]:
                continue
            cached[key] = row
            cached.move_to_end(key)
        self._trim()

    def peek(self, keys: list[Key]) -> dict[Key, Row]:
        """The rows kept at `keys` as they are (held ones included), without counting them
        or changing the recency order."""
        if not self.size:
            return {}
        with self._lock:
            rows = self._rows
            kinds = self._kinds
            found: dict[Key, Row] = {}
            for key in keys:
                pinned = kinds.get(key[0]) if kinds else None
                row = pinned[1].get(key) if pinned is not None else rows.get(key)
                if row is not None:
                    found[key] = row
            return found

    def advance(
        self, seq: int, items: list[tuple[Key, Any]], apply: Callable[[Any, Any], Any]
    ) -> None:
        """Count check `seq` into the kept journal rows it touches, at once: for each
        (key, update) whose row is kept as (version, value, last check counted) and has not
        counted `seq`, `apply(update, value)` gives the value with it (the same object when
        changed in place). Rows kept otherwise, and rows not kept, are left alone (a read
        catches those up); the recency order does not change."""
        if not self.size:
            return
        with self._lock:
            rows = self._rows
            kinds = self._kinds
            for key, update in items:
                where: dict[Key, Row] = rows
                if kinds:
                    pinned = kinds.get(key[0])
                    if pinned is not None:
                        where = pinned[1]
                row = where.get(key)
                if row is None or len(row) != 3 or row[2] >= seq:
                    continue
                where[key] = (row[0], apply(update, row[1]), seq)

    def cover_subject(self, subject: str, since: int, rows: Mapping[Key, Row]) -> None:
        """`rows` are every `SUBJECT_KINDS` row of `subject` as of fold mark `since`: keep
        them, and know that the subject has no others."""
        if not self.size:
            return
        with self._lock:
            if any(self._rows.get(k) is _HELD for k in rows):
                return
            # known whole first: should keeping the rows evict one of them, that ends it
            self._subjects[subject] = since
            self._put(rows, True)

    def cover_all(self, since: int, rows: Mapping[Key, Row]) -> None:
        """`rows` are every row of the store as of fold mark `since`: keep them, and know that
        there are no others (until one is evicted, or the sets are dropped)."""
        if not self.size or len(rows) > self.size:
            return
        with self._lock:
            if any(self._rows.get(k) is _HELD for k in rows):
                return
            self._put(rows, True)
            self._whole = since

    @property
    def whole(self) -> bool:
        """Whether every row of the store is kept (an absent row is known absent)."""
        return self._whole is not None

    def cover_kind(self, kind: str, since: int, rows: Mapping[Key, Row]) -> None:
        """`rows` are every row of `kind` as of fold mark `since`: keep them all (outside the
        least-recently-used order, where they shadow any copy), and know that there are no
        others."""
        if not self.size:
            return
        with self._lock:
            if any(self._rows.get(k) is _HELD for k in rows):
                return
            self._kinds[kind] = (since, dict(rows))

    def covers_kind(self, kind: str) -> bool:
        return kind in self._kinds

    def uncover_kind(self, kind: str, beyond: int) -> bool:
        """End the set of `kind` when it holds more than `beyond` rows (it grows with every
        row of that kind created while kept); whether it ended."""
        with self._lock:
            pinned = self._kinds.get(kind)
            if pinned is None or len(pinned[1]) <= beyond:
                return False
            self._unpin(kind)
            self._trim()
            return True

    def hold(self, keys: list[Key]) -> None:
        """These rows are being written: read them from the store until `put_many`."""
        if not self.size:
            return
        with self._lock:
            self._whole = None
            for key in keys:
                if key[0] in self._kinds:
                    self._unpin(key[0])
                self._subjects.pop(key[1], None)
                self._rows[key] = _HELD
                self._rows.move_to_end(key)
            self._trim()

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._kinds.clear()
            self._subjects.clear()
            self._whole = None

    def drop_sets(self) -> None:
        """Know no set complete any more (the rows stay kept)."""
        with self._lock:
            for kind in list(self._kinds):
                self._unpin(kind)
            self._subjects.clear()
            self._whole = None
            self._trim()

    def forget(self, keys: list[Key]) -> None:
        """Drop these rows (deleted from the store: absent, so complete sets stay complete);
        a row being written stays held."""
        with self._lock:
            rows = self._rows
            for key in keys:
                pinned = self._kinds.get(key[0])
                if pinned is not None:
                    pinned[1].pop(key, None)
                if rows.get(key) is not _HELD:
                    rows.pop(key, None)

    def _unpin(self, kind: str) -> None:
        """The set of `kind` is no longer known complete: its rows join the others (replacing
        the older copies they shadowed)."""
        _, rows = self._kinds.pop(kind)
        cached = self._rows
        for key, row in rows.items():
            cached[key] = row
            cached.move_to_end(key)

    def _trim(self) -> None:
        cached = self._rows
        subjects = self._subjects
        while len(cached) > self.size:
            self._whole = None
            key, _ = cached.popitem(last=False)
            if subjects and key[0] in SUBJECT_KINDS:
                subjects.pop(key[1], None)


_HELD: Final = (-1, None)
_NO_CACHE = RowCache(0)


# ---------------------------------------------------------------------------------------------
# Reading


def history_of(keys: StoreKeys, rows: Mapping[Key, Row]) -> History:
    """The `History` of a request with these keys, from its rows (absent ones: None)."""

    def get(key: Key | None) -> Any:
        row = rows.get(key) if key is not None else None
        return row[1] if row is not None else None

    denials = get(keys.denials)
    return History(
        keys=keys,
        actor_activity=get(keys.actor),
        agent_activity=get(keys.agent),
        geo_seen_at=get(keys.geo),
        device_seen_at=get(keys.device),
        payee_seen_at=get(keys.payee),
        payee_bank_changed_at=get(keys.bank),
        agent_denials=tuple(denials) if denials else (),
        rows=rows,
    )


def _select(conn: Connection, keys: list[Key]) -> dict[Key, tuple[int, Any]]:
    """The rows at `keys`; an absent row is (0, None)."""
    return _lookup(conn, keys, None)[0]


def select_kind(conn: Connection, kind: str, most: int) -> dict[Key, tuple[int, Any]] | None:
    """Every row of `kind` (read through its partial index: only `PAYEE_BANK` has one), or
    None when there are more than `most`."""
    if kind not in INDEXED_KINDS:
        raise ValueError(f"no index to read every {kind} row")
    c = risk_state.c
    query = (  # the kind as a literal: SQLite uses a partial index only for a constant
        select(c.subject, c.item, c.version, c.state)
        .where(c.kind == literal_column(f"'{kind}'"))
        .limit(most + 1)
    )
    with translate_errors():
        rows = conn.execute(query).all()
    if len(rows) > most:
        return None
    return {(kind, str(s), str(i)): (int(v), decode_value(kind, bytes(st))) for s, i, v, st in rows}


def select_marked(
    conn: Connection, keys: list[Key], chain_id: str, subject: str | None = None
) -> tuple[dict[Key, tuple[int, Any]], int, dict[Key, tuple[int, Any]] | None]:
    """The rows at `keys` and how far chain `chain_id` is folded into them (0: not at all),
    in one statement, so one snapshot: the rows count that chain's checks up to that seq.

    With `subject`, the same statement also reads every `SUBJECT_KINDS` row of that subject
    (a primary-key range): the third value holds them all, or is None when there are more
    than `SUBJECT_ROWS_MOST`."""
    with translate_errors():
        return _lookup(conn, keys, chain_id, subject)


#: At most this many rows of a person are read at once to keep them all (`RowCache.cover_subject`);
#: for someone with more (a bot paying thousands of payees), each row is read when needed.
SUBJECT_ROWS_MOST: Final = 200


def _lookup(
    conn: Connection, keys: list[Key], chain_id: str | None, subject: str | None = None
) -> tuple[dict[Key, tuple[int, Any]], int, dict[Key, tuple[int, Any]] | None]:
    """The rows at `keys` (an absent row is (0, None)); with `chain_id`, that chain's fold
    mark, read in the same statement (as a row with an empty kind); with `subject`, every
    `SUBJECT_KINDS` row of it (or None when there are too many)."""
    sql = _statements(conn.dialect).select(
        len(keys), marked=chain_id is not None, subject=subject is not None
    )
    values: list[Any] = [part for key in keys for part in key]  # kind, subject, item of each
    if subject is not None:
        values.append(subject)
    if chain_id is not None:
        values.append(chain_id)
    found: dict[Key, tuple[int, Any]] = {key: (0, None) for key in keys}
    whole: dict[Key, tuple[int, Any]] | None = {} if subject is not None else None
    mark = 0
    for kind, subj, item, version, state in _run_flat(conn, sql, values):
        if not kind:
            mark = int(version)
            continue
        key = (kind, subj, item)
        row = found.get(key)
        if row is None or row[1] is None:
            row = (int(version), decode_value(kind, bytes(state)))
            if key in found:
                found[key] = row
        if whole is not None and subj == subject and kind in SUBJECT_KINDS:
            whole[key] = row
    if whole is not None and len(whole) > SUBJECT_ROWS_MOST:
        whole = None
    return found, mark, whole


def select_rows(conn: Connection, keys: list[Key], chunk: int = 64) -> dict[Key, tuple[int, Any]]:
    """The rows at `keys` (any number), `chunk` point lookups a statement."""
    found: dict[Key, tuple[int, Any]] = {}
    with translate_errors():
        for at, end in _chunks(len(keys), chunk):
            found.update(_select(conn, keys[at:end]))
    return found


def _chunks(n: int, most: int) -> list[tuple[int, int]]:
    """(start, end) slices of `n` items: `most` at a time, then the rest in powers of two, so
    that a few statement sizes are compiled, not one per remainder."""
    out: list[tuple[int, int]] = []
    at = 0
    while at < n:
        size = most
        while size > n - at:
            size //= 2
        out.append((at, at + size))
        at += size
    return out


def upsert_rows(
    conn: Connection, rows: list[tuple[Key, int, bytes, float]], ts: float, chunk: int = 64
) -> set[Key]:
    """Write `rows` (key, new version, state, expires at) where each row is still at the
    version before; the keys written. `chunk` rows a statement."""
    done: set[Key] = set()
    with translate_errors():
        for at, end in _chunks(len(rows), chunk):
            done |= _upsert(conn, rows[at:end], ts)
    return done


def decode_value(kind: str, state: bytes) -> Any:
    """A row's `state` bytes as its value (Activity, a time, a list of times)."""
    if kind in (ACTOR_ACTION, AGENT_ACTION):
        return Activity.decode(state)
    if kind == AGENT_DENIALS:
        return _times_decode(state)
    return _TIME.unpack(state)[0]  # a time: seen_* and payee_bank


def encode_value(kind: str, value: Any) -> bytes:
    """A row's value as its `state` bytes (the inverse of `decode_value`)."""
    if kind in (ACTOR_ACTION, AGENT_ACTION):
        return bytes(value.encode())
    if kind == AGENT_DENIALS:
        return _times_encode(value)
    return _time_bytes(value)


def _time_bytes(ts: float) -> bytes:
    return _TIME.pack(round(ts, 3))


def _times_encode(times: list[float]) -> bytes:
    return struct.pack(f"<{len(times)}d", *times)


def _times_decode(state: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(state) // 8}d", state))


# ---------------------------------------------------------------------------------------------
# Recording


def record(
    conn: Connection,
    facts: Facts,
    effect: str,
    now: datetime,
    settings: RiskSettings,
    history: History | None = None,
    cache: RowCache = _NO_CACHE,
) -> dict[Key, tuple[int, Any]]:
    """Count this check (whose decision was `effect`) into its subjects' rows.

    `history` is what `read` returned for this request (it saves a statement; a stale one is
    detected and re-read). Returns the rows written, (version, value) by key: once the
    transaction has committed, `cache.put_many` them (`cache` holds them until then).
    Raises RiskStoreConflict when rows keep changing concurrently.
    """
    if not conn.in_transaction():
        with conn.begin():
            committed = record(conn, facts, effect, now, settings, history, cache)
        cache.put_many(committed)
        return committed
    keys = history.keys if history is not None and history.keys is not None else keys_of(facts)
    ts = now.timestamp()
    updates = updaters(keys, facts, str(effect), ts, settings)
    written: dict[Key, tuple[int, Any]] = {}
    if not updates:
        return written
    pending = sorted(updates)
    with translate_errors():
        known = dict(history.rows) if history is not None else {}
        if any(key not in known for key in pending):
            known.update(_select(conn, [k for k in pending if k not in known]))
        for _ in range(_MAX_ROUNDS):
            rows: list[tuple[Key, int, bytes, float]] = []
            attempt: dict[Key, tuple[int, Any]] = {}
            for key in pending:
                version, old = known[key][:2]
                change = updates[key](old)
                if change is not None:
                    rows.append((key, version + 1, encode_value(key[0], change[0]), change[1]))
                    attempt[key] = (version + 1, change[0])
            if not rows:
                return written
            cache.hold(list(attempt))
            done = _upsert(conn, rows, ts)
            written.update((k, v) for k, v in attempt.items() if k in done)
            pending = [k for k in attempt if k not in done]
            if not pending:
                return written
            known.update(_select(conn, pending))  # changed by someone else since we read them
    raise RiskStoreConflict(f"risk rows kept changing concurrently: {pending[:3]}")


#: Old value → (new value, expires at), or None when nothing changes. The old value is
#: read-only: an updater returns a new one.
Updater = Callable[[Any], "tuple[Any, float] | None"]


def updaters(
    keys: StoreKeys, facts: Facts, effect: str, ts: float, settings: RiskSettings
) -> dict[Key, Updater]:
    """For each row this check, decided `effect`, changes, and how.

    Every check counts in the velocity windows. Only checks that were not refused count their
    amount, and only an allowed one makes its country, device and payee known: a request
    refused, or still waiting for an approver, must not vouch for the device it came from (the
    same stolen laptop asking twice would otherwise be trusted the second time). An approved
    call makes them known when the agent claims it (`SEEN`: that alone, the check having
    counted the rest)."""
    retention = settings.retention_days * _DAY
    if effect == SEEN:
        return _sightings(keys, ts, retention)
    out: dict[Key, Updater] = {}
    if keys.actor is not None:
        amount = None if effect in _REFUSED else facts.amount
        keep = settings.anomaly.history_size
        out[keys.actor] = ActivityUpdate(ts, amount, keep, ts + max(retention, _DAY))
    if keys.agent is not None:
        out[keys.agent] = ActivityUpdate(ts, None, 0, ts + _DAY)
    if effect == _ALLOWED:
        out.update(_sightings(keys, ts, retention))
    if keys.bank_change is not None:
        days = settings.patterns.payee_bank_change.days
        out[keys.bank_change] = TimeUpdate(ts, ts + days * _DAY, latest=True)
    if keys.denials is not None and effect in _REFUSED:
        burst = settings.patterns.denial_burst
        window = burst.minutes * 60.0

        def denials(old: list[float] | None) -> tuple[Any, float]:
            recent = [t for t in (old or ()) if ts - t < window]
            recent.append(round(ts, 3))
            recent = recent[-burst.count :]
            return recent, ts + window

        out[keys.denials] = denials
    return out


def _sightings(keys: StoreKeys, ts: float, retention: float) -> dict[Key, Updater]:
    """The request's country, device and payee, seen at `ts` (known for `retention` s)."""
    seen = TimeUpdate(ts, ts + retention)
    return {key: seen for key in (keys.geo, keys.device, keys.payee) if key is not None}


class ActivityUpdate:
    """One request counted into an `Activity` row (an `Updater`): called, it returns a
    changed copy; `apply` changes an Activity that nobody else holds, in place."""

    __slots__ = ("amount", "expires", "keep", "ts")

    def __init__(self, ts: float, amount: float | None, keep: int, expires: float) -> None:
        self.ts = ts
        self.amount = amount
        self.keep = keep
        self.expires = expires

    def __call__(self, old: Activity | None) -> tuple[Any, float]:
        activity = _copy(old)
        activity.add(self.ts, self.amount, keep_amounts=self.keep)
        return activity, self.expires

    def apply(self, activity: Activity) -> None:
        activity.add(self.ts, self.amount, keep_amounts=self.keep)


class TimeUpdate:
    """A time row set by one check at `ts` (an `Updater`): a sighting (`seen_*`: a last-seen
    time younger than `SEEN_REFRESH_S` stays as it is) or, with `latest`, a change of a payee's
    bank details (`payee_bank`: the latest change is kept). When it changes the row, the new
    value is `value`, the time to the millisecond."""

    __slots__ = ("expires", "latest", "ts", "value")

    def __init__(self, ts: float, expires: float, *, latest: bool = False) -> None:
        self.ts = ts
        self.value = round(ts, 3)
        self.expires = expires
        self.latest = latest

    def __call__(self, old: float | None) -> tuple[Any, float] | None:
        if old is not None:
            ts = self.ts
            unchanged = old >= ts if self.latest else 0.0 <= ts - old < SEEN_REFRESH_S
            if unchanged:
                return None
        return self.value, self.expires


def _copy(old: Activity | None) -> Activity:
    return Activity() if old is None else old.copy()


def _upsert(conn: Connection, rows: list[tuple[Key, int, bytes, float]], ts: float) -> set[Key]:
    """Write `rows` where their version is still the one read; the keys written."""
    statements = _statements(conn.dialect)
    sql = statements.upsert(len(rows))
    updated = statements.time_param(ts)
    times: dict[float, object] = {}
    values: list[Any] = []  # row by row, in the statement's column order
    for (kind, subject, item), version, state, expires in rows:
        # Whole hours: the value (and so its index entry) changes once an hour, not each time.
        hour = math.ceil(expires / 3600.0) * 3600.0
        when = times.get(hour)
        if when is None:
            when = times[hour] = statements.hour_param(hour)
        values += (subject, kind, item, version, state, updated, when)
    return {(k, s, i) for k, s, i in _run_flat(conn, sql, values)}


# ---------------------------------------------------------------------------------------------
# Housekeeping


def describe(kind: str, state: bytes) -> Any:
    """A row's state as plain values (for people reading the table, and for tests)."""
    value = decode_value(kind, bytes(state))
    if isinstance(value, Activity):
        return {
            "1m": dict(zip(value.sb, value.sc, strict=True)),
            "1h": dict(zip(value.mb, value.mc, strict=True)),
            "24h": {b: [c, a] for b, c, a in zip(value.qb, value.qc, value.qa, strict=True)},
            "amounts": value.amounts.tolist(),
        }
    return value


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """One stored row of a subject, as `subject_rows` reads it."""

    kind: str
    item: str
    value: Any  # Activity, a time (epoch seconds) or a list of times: see the module docstring
    expires_at: datetime


def subject_rows(conn: Connection, subject: str) -> list[SubjectRow]:
    """Every row the store keeps about `subject` (a person, an agent or a payee), in key
    order: one primary-key range, for people investigating a signal (not the hot path)."""
    c = risk_state.c
    query = (
        select(c.kind, c.item, c.state, c.expires_at)
        .where(c.subject == key_part(subject))
        .order_by(c.kind, c.item)
    )
    with translate_errors():
        found = conn.execute(query).all()
    return [
        SubjectRow(r.kind, r.item, decode_value(r.kind, bytes(r.state)), r.expires_at)
        for r in found
    ]


def prune(
    conn: Connection, now: datetime, *, batch: int = 2000, deleted: list[Key] | None = None
) -> int:
    """Delete the rows that no longer matter at `now`; how many (their keys are appended to
    `deleted` when given). Off the hot path.

    Walks the table in primary-key order, `batch` rows at a time (no index on `expires_at`:
    keeping one up to date would cost every check a second B-tree write). On an idle
    connection each batch is its own short transaction, so checks are never held up long;
    inside a transaction, everything happens in it. The signals already ignore what expired:
    pruning only reclaims space.
    """
    c = risk_state.c
    key = tuple_(c.subject, c.kind, c.item)
    delete_one = delete(risk_state).where(
        c.subject == bindparam("s"),
        c.kind == bindparam("k"),
        c.item == bindparam("i"),
        c.expires_at < bindparam("now", type_=c.expires_at.type),
    )
    total = 0
    last: tuple[str, str, str] | None = None
    with translate_errors():
        while True:
            page = select(c.subject, c.kind, c.item, c.expires_at).order_by(
                c.subject, c.kind, c.item
            )
            if last is not None:
                page = page.where(key > tuple_(*(literal(v) for v in last)))
            own = not conn.in_transaction()
            if own:
                conn.begin()
            try:
                rows = conn.execute(page.limit(batch)).all()
                expired = [
                    {"s": r.subject, "k": r.kind, "i": r.item, "now": now}
                    for r in rows
                    if r.expires_at < now
                ]
                if expired:
                    total += int(conn.execute(delete_one, expired).rowcount or 0)
                    if deleted is not None:
                        deleted.extend((e["k"], e["s"], e["i"]) for e in expired)
            except BaseException:
                if own:
                    conn.rollback()
                raise
            if own:
                conn.commit()
            if len(rows) < batch:
                return total
            last = (rows[-1].subject, rows[-1].kind, rows[-1].item)


# ---------------------------------------------------------------------------------------------
# SQL, compiled once per dialect


def _run_flat(conn: Connection, sql: _SQL, values: list[Any]) -> list[Any]:
    """Run `sql` with `values` given in the order of its placeholders (see `_compile_flat`)."""
    text, names = sql
    args: Any = values if names is None else dict(zip(names, values, strict=True))
    if not conn.in_transaction() and conn.dialect.name != "sqlite":
        with conn.begin():
            return _execute(conn, text, args)
    return _execute(conn, text, args)


def _execute(conn: Connection, text: str, args: Any) -> list[Any]:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(text, args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


class _Statements:
    """The risk statements for one dialect, by number of rows."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.is_sqlite = dialect.name == "sqlite"
        self._selects: dict[tuple[int, bool, bool], _SQL] = {}
        self._upserts: dict[int, _SQL] = {}
        self._hours: dict[float, object] = {}

    def hour_param(self, ts: float) -> object:
        """`time_param` of a whole hour, remembered (expiry times repeat for an hour)."""
        found = self._hours.get(ts)
        if found is None:
            if len(self._hours) > 64:
                self._hours.clear()
            found = self._hours[ts] = self.time_param(ts)
        return found

    def time_param(self, ts: float) -> object:
        """A bind value for a `UTCDateTime` column (what its type would send)."""
        when = datetime.fromtimestamp(ts, UTC)
        if self.is_sqlite:  # SQLAlchemy's SQLite DATETIME text: "YYYY-MM-DD HH:MM:SS.ffffff"
            return when.isoformat(sep=" ", timespec="microseconds")[:26]
        return when

    def select(self, n: int, *, marked: bool = False, subject: bool = False) -> _SQL:
        """`n` point lookups; `subject`: and every `SUBJECT_KINDS` row of the subject bound to
        `subject` (at most `SUBJECT_ROWS_MOST` + 1 of them); `marked`: and, as one more row
        with an empty kind, the fold mark of the chain bound to `chain`."""
        found = self._selects.get((n, marked, subject))
        if found is None:
            # UNION ALL of point lookups: each one a primary-key search on both databases
            # (SQLite plans an OR of them as a multi-index OR, which costs more).
            c = risk_state.c
            parts: list[Any] = [
                select(c.kind, c.subject, c.item, c.version, c.state).where(
                    c.kind == bindparam(f"k{i}"),
                    c.subject == bindparam(f"s{i}"),
                    c.item == bindparam(f"i{i}"),
                )
                for i in range(n)
            ]
            names = [f"{p}{i}" for i in range(n) for p in ("k", "s", "i")]
            if subject:  # a range of the primary key (subject, kind, item)
                kinds: list[Any] = [literal_column(f"'{k}'") for k in sorted(SUBJECT_KINDS)]
                everything = (
                    select(c.kind, c.subject, c.item, c.version, c.state)
                    .where(c.subject == bindparam("subject"), c.kind.in_(kinds))
                    .limit(literal_column(str(SUBJECT_ROWS_MOST + 1)))
                    .offset(literal_column("0"))  # (else SQLite's compiler binds one)
                    .subquery()
                )
                parts.append(select(*everything.c))
                names.append("subject")
            if marked:
                f = risk_folds.c
                parts.append(
                    select(
                        literal_column("''").label("kind"),
                        f.chain_id,
                        literal_column("''").label("item"),
                        f.seq,
                        null().label("state"),
                    ).where(f.chain_id == bindparam("chain"))
                )
                names.append("chain")
            stmt: ClauseElement = parts[0]
            if len(parts) > 1:
                stmt = union_all(*parts)
            found = self._selects[(n, marked, subject)] = self._compile_flat(stmt, names)
        return found

    def upsert(self, n: int) -> _SQL:
        found = self._upserts.get(n)
        if found is None:
            insert = sqlite.insert if self.is_sqlite else postgresql.insert
            c = risk_state.c
            stmt = insert(risk_state).values(
                [
                    {
                        "kind": bindparam(f"k{i}"),
                        "subject": bindparam(f"s{i}"),
                        "item": bindparam(f"i{i}"),
                        "version": bindparam(f"v{i}"),
                        "state": bindparam(f"st{i}"),
                        "updated_at": bindparam(f"u{i}"),
                        "expires_at": bindparam(f"e{i}"),
                    }
                    for i in range(n)
                ]
            )
            excluded = stmt.excluded
            upsert = stmt.on_conflict_do_update(
                index_elements=[c.subject, c.kind, c.item],
                set_={
                    "version": excluded.version,
                    "state": excluded.state,
                    "updated_at": excluded.updated_at,
                    "expires_at": excluded.expires_at,
                },
                where=c.version == excluded.version - literal_column("1"),
            ).returning(c.kind, c.subject, c.item)
            names = [f"{p}{i}" for i in range(n) for p in ("s", "k", "i", "v", "st", "u", "e")]
            found = self._upserts[n] = self._compile_flat(upsert, names)
        return found

    def _compile_flat(self, stmt: ClauseElement, names: list[str]) -> _SQL:
        """For `_run_flat`: values come in the order of `names` (row by row), which must be
        the placeholders' order for a positional driver."""
        text, order = self._compile(stmt)
        if order is None:
            return text, tuple(names)
        if list(order) != names:  # pragma: no cover - SQLAlchemy renders columns in order
            raise RuntimeError(f"unexpected placeholder order in {text!r}")
        return text, None

    def _compile(self, stmt: ClauseElement) -> _SQL:
        compiled = stmt.compile(dialect=self.dialect)
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - always for DML/SELECT
            raise TypeError(f"unexpected compiler {type(compiled).__name__}")
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        return compiled.string, order


_BY_DIALECT: dict[tuple[str, str, str], _Statements] = {}


def _statements(dialect: Dialect) -> _Statements:
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    found = _BY_DIALECT.get(key)
    if found is None:
        found = _BY_DIALECT[key] = _Statements(dialect)
    return found
