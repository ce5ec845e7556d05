"""Risk state written behind the check: the check's own audit entry is the journal.

Updating `risk_state` in every check's transaction (`store.record`) cost a check a second
statement, random B-tree pages and a larger commit: on SQLite more than the check itself. So a
check writes nothing more than its audit entry, and:

- the entry carries the facts the signals count (`data.risk.f`, `facts_json`): the check and
  its risk update are durable together, the moment the entry commits;
- once it has committed, this process counts it into the rows it keeps in memory
  (`Journal.note`), so its next check sees it at once;
- every second or so (`Journal.fold_due`) one writer unit (`Journal.fold`) counts the checks
  of every audit chain since that chain's mark in `risk_folds` into `risk_state`, and moves the
  marks, in one transaction: each check is counted exactly once, whoever folds it and whatever
  crashed in between. The checks a crashed process never folded are folded from their audit
  entries by the next fold of any process. Folds are one at a time: SQLite's write lock (the
  writer's `BEGIN IMMEDIATE`), a transaction-scoped advisory lock on PostgreSQL.
- a row read from the store comes with its chain's mark (one statement, one snapshot); this
  process's checks after the mark are counted in on top (`_pending`). Rows this process keeps
  (`RowCache`, with its complete sets) are current for its own checks, each counted in as it
  is noted; when a fold finds that another process folded since this one last did, it drops
  them, so other processes' checks show within about a fold interval (a second), where
  write-through showed them only once this process wrote the row.

Folding coalesces: a row that many checks touched between two folds is written once. And a
row this process keeps current needs no read: the fold writes the kept value (or, for a time
the checks left as it was, nothing), and the write's compare-and-set on the version sends a
row that another process changed meanwhile back to be read (`Journal._kept_for_fold`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, select, text

from clearance.audit.entry import Kind
from clearance.store.errors import translate_errors
from clearance.store.schema import audit_entries, audit_heads

from .activity import Activity
from .facts import Facts
from .settings import RiskSettings
from .signals import History
from .store import (
    PAYEE_BANK,
    SEEN,
    SUBJECT_KINDS,
    ActivityUpdate,
    Key,
    RiskStoreConflict,
    RowCache,
    StoreKeys,
    TimeUpdate,
    Updater,
    decode_value,
    encode_value,
    history_of,
    keys_of,
    select_kind,
    select_marked,
    select_rows,
    updaters,
    upsert_rows,
)
from .tables import risk_folds, risk_state

if TYPE_CHECKING:
    from clearance.audit.writer import WriteTx

__all__ = ["FoldResult", "Journal", "facts_from_json", "facts_json"]

#: Fold at least this often while this process has unfolded checks (seconds)…
FOLD_INTERVAL_S: Final = 1.0
#: … and at once when it has this many.
FOLD_MAX_PENDING: Final = 5_000
#: At most this many audit entries per fold, shared among the chains that have some (at least
#: one each); a longer tail takes several folds, one writer unit each (`Gateway.fold_risk`
#: runs them in turn). This bounds how long a fold holds the writer — on SQLite the event loop
#: itself — to about 75 ms here, so that checks made meanwhile wait at most that long,
#: however large the backlog.
FOLD_LIMIT = 1_000
#: PostgreSQL advisory lock key of the fold (any constant shared by every instance).
_FOLD_LOCK: Final = 0x52534B46  # "RSKF"
#: The audit entries a fold counts: checks, and approved calls claimed (`store.SEEN`).
_COUNTED: Final = (Kind.CHECK, Kind.RISK_SEEN)
#: Up to this many entries another process wrote are read by seq, more by their range.
_FEW: Final = 500
#: Every payee-bank row is kept (`RowCache.cover_kind`) while there are at most this many, and
#: the row cache holds at least four times as many rows…
KEEP_KIND_MOST: Final = 20_000
#: … and with more, reading them all is tried again after this long (seconds).
KEEP_KIND_RETRY_S: Final = 60.0


def facts_json(facts: Facts) -> list[Any]:
    """The facts a check's audit entry keeps for the fold (`data.risk.f`): compact, in order
    user, agent, country, device, payee, amount, bank-change payee; the action is the entry's."""
    return [
        facts.user,
        facts.agent,
        facts.geo,
        facts.device,
        facts.payee,
        facts.amount,
        facts.bank_change_payee,
    ]


def facts_from_json(action: str, value: Any) -> Facts | None:
    """The facts `facts_json` wrote, or None when `value` is not such a list."""
    if not isinstance(value, list) or len(value) != 7:
        return None
    user, agent, geo, device, payee, amount, bank = value
    texts = (user, agent, geo, device, payee, bank)
    if not all(v is None or isinstance(v, str) for v in texts):
        return None
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
        return None
    return Facts(
        action=action,
        actor=user or agent,
        user=user,
        agent=agent,
        geo=geo,
        device=device,
        payee=payee,
        amount=float(amount) if amount is not None else None,
        bank_change_payee=bank,
    )


@dataclass(frozen=True, slots=True)
class FoldResult:
    """What one fold did (for `Journal.folded`, once its transaction has committed)."""

    marks: Mapping[str, int] = field(default_factory=dict)  # every chain's mark now
    rows: Mapping[Key, tuple[int, Any]] = field(default_factory=dict)  # rows it wrote
    entries: int = 0  # checks counted
    others: bool = False  # another process had folded since this one last did
    more: bool = False  # some chain has more to fold than this fold took
    #: every payee-bank row after the fold, when it read them to keep (None: it did not, or
    #: there were too many, see `Journal._bank_most`); `bank_read`: whether it tried
    bank_rows: Mapping[Key, tuple[int, Any]] | None = None
    bank_read: bool = False


class Journal:
    """This process's unfolded checks and its view of the rows; see the module docstring.

    `chain_id` is the audit chain this process writes (its own checks are noted against it).
    Thread-safe: checks are noted on the event loop, folds may run in the writer's thread.
    """

    def __init__(self, settings: RiskSettings, cache: RowCache, chain_id: str = "main") -> None:
        self.settings = settings
        self.cache = cache
        self.chain_id = chain_id
        self._lock = threading.RLock()
        self._pending: dict[Key, list[tuple[int, Updater]]] = {}  # by row, in seq order
        self._seqs: dict[int, list[tuple[Key, Updater]]] = {}  # the same, by check
        self._marks: dict[str, int] | None = None  # as this process's last fold left them
        self._unacknowledged: list[dict[str, int]] = []  # marks its folds in flight leave
        self._folded_once = False
        self._last_fold = time.monotonic()
        self._bank_retry_at = 0.0  # when to try keeping every payee-bank row again
        self.folded_entries = 0  # for metrics

    # -- reading ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Checks of this process not yet folded."""
        return len(self._seqs)

    @property
    def never_folded(self) -> bool:
        """Whether no fold of this process has committed yet (warming does not count: what a
        crashed predecessor left is still to fold)."""
        return not self._folded_once

    def history(
        self, conn: Connection | None, facts: Facts, *, count: bool = True
    ) -> History | None:
        """The history of this request's subjects: the rows kept, and one statement on `conn`
        for the rest. Without a connection: None when a row must be read (then read it with
        `count=False`: `count` puts the rows in the cache's hit and miss figures)."""
        keys = keys_of(facts)
        wanted = keys.wanted()
        if not wanted:
            return History(keys=keys)
        known: dict[Key, Any] = self.cache.get_many(wanted, count=count)
        pending = self._pending
        if known and pending:
            with self._lock:  # count in this process's checks noted since the row was kept
                behind = {}
                for k, row in known.items():
                    noted = pending.get(k)
                    if noted is not None and noted[-1][0] > _since(row):
                        behind[k] = self._current(k, row, _since(row))
                if behind:
                    self.cache.put_many(behind)
                    known.update(behind)
        if len(known) < len(wanted):
            if conn is None:
                return None
            missing = [k for k in wanted if k not in known]
            # A person not kept whole yet: read all their rows with the missing ones, so that
            # their next new country, device or payee needs no read to be known new.
            actor = keys.actor[1] if keys.actor is not None and self.cache.size else None
            whole_of = (
                actor if any(k[1] == actor and k[0] in SUBJECT_KINDS for k in missing) else None
            )
            fresh, mark, whole = select_marked(conn, missing, self.chain_id, whole_of)
            with self._lock:
                if mark > self._own_mark and not any(
                    m.get(self.chain_id) == mark for m in self._unacknowledged
                ):
                    # Another process folded this one's checks: stop counting them on top of
                    # what is read. A row a complete set says is absent may be among what
                    # they created, so the sets go too (the rows kept count them already).
                    # (After this process's own fold, not yet acknowledged, `folded` does it.)
                    self.cache.drop_sets()
                    self._forget_through(mark)
                current = {k: self._current(k, row, mark, owned=True) for k, row in fresh.items()}
                if not conn.in_transaction():  # committed rows only
                    self.cache.put_many(current, read=True)
                    if whole is not None and whole_of is not None:
                        rows = {
                            k: current.get(k) or self._current(k, row, mark, owned=True)
                            for k, row in whole.items()
                        }
                        self.cache.cover_subject(whole_of, mark, rows)
            known.update(current)
        return history_of(keys, known)

    @property
    def _own_mark(self) -> int:
        return self._marks.get(self.chain_id, 0) if self._marks is not None else 0

    def _forget_through(self, mark: int) -> None:
        """This process's checks up to `mark` are in the store: stop counting them on top of
        what is read from it (the rows kept in memory already count them)."""
        if self._marks is None:
            self._marks = {}
        self._marks[self.chain_id] = mark
        # Only the rows those checks touched change (rebuilding every row's list cost each
        # fold of a backlog time in proportion to the whole backlog).
        touched: set[Key] = set()
        for seq in [s for s in self._seqs if s <= mark]:
            touched.update(key for key, _ in self._seqs.pop(seq))
        pending = self._pending
        for key in touched:
            entries = pending.get(key)
            if entries is None:
                continue
            later = [e for e in entries if e[0] > mark]
            if later:
                pending[key] = later
            else:
                del pending[key]

    def _rebuild_pending(self) -> None:
        """`_pending` from `_seqs` (after taking over another journal's checks)."""
        pending: dict[Key, list[tuple[int, Updater]]] = {}
        for seq in sorted(self._seqs):
            for key, update in self._seqs[seq]:
                pending.setdefault(key, []).append((seq, update))
        self._pending = pending

    def _current(
        self, key: Key, row: tuple[Any, ...], since: int, *, owned: bool = False
    ) -> tuple[int, Any, int]:
        """`row` (version, value, …), which counts this chain's checks up to `since`, with
        this process's later checks counted in: (version, value, the last check counted).

        `owned`: the value is this call's to change (just read from the store or folded);
        a kept one is copied before it changes, as a reader may hold it."""
        version, value = row[0], row[1]
        for seq, update in self._pending.get(key, ()):
            if seq > since:
                changed = _apply(update, value, owned)
                if changed is not None:
                    value = changed[0]
                    owned = True
                since = seq
        return version, value, since

    # -- noting a committed check ----------------------------------------------------------
    def note(
        self, seq: int, facts: Facts, effect: str, ts: float, keys: StoreKeys | None = None
    ) -> None:
        """Count the check whose audit entry `seq` (on this process's chain) has committed:
        into the rows kept, at once; a row read later from the store (or known absent from a
        complete set) has it counted in by that read."""
        ups = updaters(keys or keys_of(facts), facts, effect, ts, self.settings)
        if not ups:
            return
        items = list(ups.items())
        with self._lock:
            if self._marks is not None and seq <= self._marks.get(self.chain_id, 0):
                return  # a fold already counted it from its audit entry
            self._seqs[seq] = items
            pending = self._pending
            for key, update in items:
                found = pending.get(key)
                if found is None:
                    pending[key] = [(seq, update)]
                else:
                    found.append((seq, update))
            # The rows kept are counted on at once, in place (they are this journal's: kept
            # values are read only on the event loop, each read used before the next await),
            # so the next check's read finds them current.
            self.cache.advance(seq, items, _counted)

    def warm(self, conn: Connection, now: datetime, limit: int | None = None) -> int:
        """Fill the kept rows with the most recently updated ones (at most the cache's size),
        as a process that has run a while would hold: a restarted server does not start cold.
        When every row fits, the cache knows it holds the whole store (`RowCache.cover_all`),
        and no check reads until a row must be evicted or another process folds. One
        statement (a top-N sort, no index needed); how many rows."""
        n = self.cache.size if limit is None else min(limit, self.cache.size)
        if n <= 0:
            return 0
        c = risk_state.c
        # Expired rows too (until `prune` deletes them, a row is a row): when every row fits,
        # the rows kept are the whole store, and a row not kept is known absent.
        query = (
            select(c.kind, c.subject, c.item, c.version, c.state)
            .order_by(c.updated_at.desc())
            .limit(n + 1)
        )
        # Its own short transaction on an idle connection: none is left open (on SQLite an
        # open read would hold back every WAL checkpoint).
        scope = contextlib.nullcontext() if conn.in_transaction() else conn.begin()
        bank_read = self._bank_wanted(False)
        with translate_errors(), scope:
            before = _read_marks(conn)
            found = conn.execute(query).all()
            bank = select_kind(conn, PAYEE_BANK, self._bank_most) if bank_read else None
            after = _read_marks(conn)
        if before != after:
            return 0  # a fold ran meanwhile: the rows and the marks may disagree; stay cold
        whole = len(found) <= n
        found = found[:n]
        # The same names recur across rows (a person's countries, devices and payees; an
        # action's actors): one copy of each string kept.
        rows = {
            (intern(str(k)), intern(str(s)), intern(str(i))): (
                int(v),
                decode_value(str(k), bytes(st)),
            )
            for k, s, i, v, st in reversed(found)  # the most recent ends most recently used
        }
        mark = after.get(self.chain_id, 0)
        with self._lock:
            current = {k: self._current(k, row, mark, owned=True) for k, row in rows.items()}
            if whole:
                self.cache.cover_all(mark, current)
            else:
                self.cache.put_many(current, read=True)
            if bank_read:
                self._keep_bank(bank, mark)
            if self._marks is None:  # the kept rows are those of these marks
                self._marks = dict(after)
        return len(current)

    def fold_due(self) -> bool:
        """Whether this process should fold now (it has checks to fold, and enough time or
        enough checks have passed)."""
        n = len(self._seqs)
        if not n:
            return False
        return n >= FOLD_MAX_PENDING or time.monotonic() - self._last_fold >= FOLD_INTERVAL_S

    # -- folding ---------------------------------------------------------------------------
    def fold(self, tx: WriteTx, now: datetime, *, limit: int | None = None) -> FoldResult:
        """Count every chain's checks since its mark into `risk_state` (inside a writer unit):
        at most `limit` (default `FOLD_LIMIT`) in all, shared among the chains; `more` in the
        result says to fold again.

        Pass the result to `folded` once the unit has committed. Raises RiskStoreConflict if
        a row changed under the fold (only a process that writes through could do that)."""
        if limit is None:
            limit = FOLD_LIMIT
        conn = tx.conn
        with translate_errors():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _FOLD_LOCK})
            h = audit_heads.c
            marks = _read_marks(conn)
            heads = {str(c): int(s) for c, s in conn.execute(select(h.chain_id, h.seq))}
        with self._lock:
            own = dict(self._seqs)
            # The marks as this process left them: after its last acknowledged fold, or after
            # one of its own folds that committed and is not acknowledged yet.
            ours = ([self._marks] if self._marks is not None else []) + self._unacknowledged
        others = not any(_same_marks(marks, m) for m in ours)
        by_key: dict[Key, list[Updater]] = {}
        last_noted: dict[Key, int] = {}  # the last of this process's noted checks, by row
        unnoted: set[Key] = set()  # rows that a check read from its audit entry touches
        moved: dict[str, int] = {}
        count = 0
        more = False
        behind = sorted((c, h) for c, h in heads.items() if h > marks.get(c, 0))
        share = max(1, limit // len(behind)) if behind else 0  # every chain moves each fold
        for chain, head in behind:
            start = marks.get(chain, 0)
            end = min(head, start + share)
            more = more or end < head
            mine = own if chain == self.chain_id else {}
            for seq, items, noted in self._checks(conn, chain, start, end, mine):
                count += 1
                for key, update in items:
                    by_key.setdefault(key, []).append(update)
                    if noted:
                        last_noted[key] = seq
                    else:
                        unnoted.add(key)
            moved[chain] = end
        written: dict[Key, tuple[int, Any]] = {}
        if by_key:
            ts = now.timestamp()
            # Most rows kept need no read: see `_kept_for_fold`.
            kept = {} if others else self._kept_for_fold(by_key, last_noted, unnoted)
            keys = sorted(by_key)
            stored = select_rows(conn, [k for k in keys if k not in kept])
            for attempt in range(2):
                rows = _rows_to_write(keys, by_key, kept, stored, written)
                done = upsert_rows(conn, rows, ts)
                if len(done) == len(rows):
                    break
                # A row changed since it was read or kept (only another process could change
                # it): read those again and redo them from the store, once.
                keys = sorted({k for k, *_ in rows} - done)
                if attempt:
                    raise RiskStoreConflict(f"risk rows changed under a fold: {keys[:3]}")
                kept = {}
                stored = select_rows(conn, keys)
        if moved:
            self._move_marks(conn, moved, now)
        bank_read = self._bank_wanted(others)
        bank_rows = select_kind(conn, PAYEE_BANK, self._bank_most) if bank_read else None
        result = FoldResult({**marks, **moved}, written, count, others, more, bank_rows, bank_read)
        with self._lock:
            self._unacknowledged.append(dict(result.marks))
        return result

    @property
    def _bank_most(self) -> int:
        return min(KEEP_KIND_MOST, self.cache.size // 4)

    def _bank_wanted(self, others: bool) -> bool:
        """Whether a fold should read every payee-bank row to keep: they are not all kept (or
        will not be, once another process's fold makes this one drop what it keeps), and the
        last try did not find too many."""
        if self._bank_most <= 0 or time.monotonic() < self._bank_retry_at:
            return False
        return others or not self.cache.covers_kind(PAYEE_BANK)

    def _keep_bank(self, rows: Mapping[Key, tuple[int, Any]] | None, mark: int) -> None:
        """Keep every payee-bank row (`rows`, read at this chain's fold `mark`), with this
        process's later checks counted in; None: there were too many, try again later."""
        if rows is None:
            self._bank_retry_at = time.monotonic() + KEEP_KIND_RETRY_S
            return
        current = {k: self._current(k, row, mark, owned=True) for k, row in rows.items()}
        self.cache.cover_kind(PAYEE_BANK, mark, current)

    def _checks(
        self,
        conn: Connection,
        chain: str,
        start: int,
        end: int,
        own: Mapping[int, list[tuple[Key, Updater]]],
    ) -> list[tuple[int, list[tuple[Key, Updater]], bool]]:
        """The updates of chain `chain`'s checks in (start, end], in order, as (seq, updates,
        noted): this process's own from memory (noted), the others from their audit entries."""
        a = audit_entries.c
        in_range = (a.chain_id == chain, a.seq > start, a.seq <= end, a.kind.in_(_COUNTED))
        with translate_errors():
            seqs: list[int] = []
            foreign: list[int] = []
            if own:
                seqs = [int(s) for (s,) in conn.execute(select(a.seq).where(*in_range))]
                foreign = [s for s in seqs if s not in own]
            parsed: dict[int, list[tuple[Key, Updater]]] = {}
            if foreign or not own:
                query = select(a.seq, a.ts, a.action, a.kind, a.effect, a.data).where(*in_range)
                if own and len(foreign) <= _FEW:  # only the few this process did not note
                    query = query.where(a.seq.in_(foreign))
                for seq, when, action, kind, effect, data in conn.execute(query.order_by(a.seq)):
                    if kind == Kind.RISK_SEEN:
                        effect = SEEN
                    parsed[int(seq)] = self._entry_updates(when, action, effect, data)
        order = seqs if own else sorted(parsed)
        out: list[tuple[int, list[tuple[Key, Updater]], bool]] = []
        for seq in order:
            items = own.get(seq)
            if items is None:
                out.append((seq, parsed.get(seq, []), False))
            else:
                out.append((seq, items, True))
        return out

    def _kept_for_fold(
        self,
        by_key: Mapping[Key, list[Updater]],
        last_noted: Mapping[Key, int],
        unnoted: set[Key],
    ) -> dict[Key, tuple[int, Any, float | None]]:
        """The rows this fold can take from the rows kept instead of reading them: (version,
        value, expires at), the value a copy of the kept one; expires None: the checks left
        the row as it is (nothing to write).

        A row kept as (version, value, last check counted) is the stored row at that version
        with this process's later checks counted in. When its last check counted is the last
        of this fold's checks that touch it, and only checks this process noted touch it, the
        kept value is what the fold would compute from the store:
        - an activity row is written from it, and the upsert's compare-and-set on the version
          catches a row that another process changed since (it is then read and redone);
        - a time row is set by a check to that check's time: when its value is one of its
          checks' times it is written as an activity row is (with the last such check's
          expiry); when it is none of them, the checks left it as it is, and there is nothing
          to read or write (no other process folded since this one last did: `others` is
          false; only a process writing through, `record`, could have changed the row, and
          then only to a later time, which this fold leaves where reading it would have set
          the row back to these checks' earlier time).
        Copied under the lock, as a check noted meanwhile counts itself into the kept value in
        place."""
        out: dict[Key, tuple[int, Any, float | None]] = {}
        wanted = [k for k in last_noted if k not in unnoted]
        with self._lock:
            for key, row in self.cache.peek(wanted).items():
                if len(row) != 3 or row[2] != last_noted[key]:
                    continue
                version, value = row[0], row[1]
                updates = by_key[key]
                last = updates[-1]
                if isinstance(value, Activity) and isinstance(last, ActivityUpdate):
                    out[key] = (version, value.copy(), last.expires)
                elif isinstance(value, float):
                    usable, until = _time_written(value, updates)
                    if usable:
                        out[key] = (version, value, until)
        return out

    def _entry_updates(
        self, when: datetime, action: Any, effect: Any, data: Any
    ) -> list[tuple[Key, Updater]]:
        """A check's updates from its audit entry (none when it carries no journal)."""
        risk = data.get("risk") if isinstance(data, dict) else None
        if not isinstance(risk, dict):
            return []
        facts = facts_from_json(str(action or ""), risk.get("f"))
        if facts is None:
            return []
        ups = updaters(keys_of(facts), facts, str(effect), when.timestamp(), self.settings)
        return list(ups.items())

    def _move_marks(self, conn: Connection, marks: Mapping[str, int], now: datetime) -> None:
        f = risk_folds.c
        with translate_errors():
            for chain, seq in marks.items():
                moved = conn.execute(
                    risk_folds.update().where(f.chain_id == chain).values(seq=seq, updated_at=now)
                ).rowcount
                if not moved:
                    new = risk_folds.insert().values(chain_id=chain, seq=seq, updated_at=now)
                    conn.execute(new)

    def folded(self, result: FoldResult) -> None:
        """The fold that returned `result` has committed: forget what it counted."""
        with self._lock:
            if len(self._unacknowledged) > 1:
                # Another fold of this process is in flight: this one stops counting its
                # checks on top before that one's rows are kept, and a row they created could
                # look absent to a complete set meanwhile; so the sets go (rows kept stay).
                self.cache.drop_sets()
            self._unacknowledged.clear()  # earlier ones committed before, or never will
            self._last_fold = time.monotonic()
            self._folded_once = True
            if self._marks is not None and result.marks.get(self.chain_id, 0) < self._own_mark:
                return  # a later fold of this process was acknowledged first: nothing to add
            if result.others:
                self.cache.clear()  # another process folded: what this one kept may be stale
            self._marks = dict(result.marks)
            mark = self._marks.get(self.chain_id, 0)
            self._forget_through(mark)
            rows = {k: self._current(k, row, mark, owned=True) for k, row in result.rows.items()}
            self.cache.put_many(rows)
            if result.bank_read:
                self._keep_bank(result.bank_rows, mark)
            elif self.cache.uncover_kind(PAYEE_BANK, self._bank_most):
                # grown past the bound since it was read: the next fold reads how many
                self._bank_retry_at = 0.0
            self.folded_entries += result.entries

    def adopt(self, other: Journal) -> None:
        """Take over `other`'s unfolded checks (a policy reload replaced its engine)."""
        with other._lock, self._lock:
            self._seqs = dict(other._seqs)
            self._marks = dict(other._marks) if other._marks is not None else None
            self._folded_once = other._folded_once
            self._rebuild_pending()
            self._forget_through(self._own_mark)


def _read_marks(conn: Connection) -> dict[str, int]:
    """Every chain's fold mark, by chain."""
    f = risk_folds.c
    return {str(c): int(s) for c, s in conn.execute(select(f.chain_id, f.seq))}


def _since(row: tuple[Any, ...]) -> int:
    """The last check of this process a kept row counts (0 for a row kept by `record`)."""
    return int(row[2]) if len(row) > 2 else 0


def _apply(update: Updater, value: Any, owned: bool) -> tuple[Any, float] | None:
    """`update(value)`; in place when `value` is an Activity the caller owns."""
    if owned and value is not None and isinstance(update, ActivityUpdate):
        update.apply(value)
        return value, update.expires
    return update(value)


def _counted(update: Updater, value: Any) -> Any:
    """A kept row's value with one more check counted (changed in place when it can be)."""
    if value is not None and type(update) is ActivityUpdate:  # the common case, inlined
        value.add(update.ts, update.amount, keep_amounts=update.keep)
        return value
    changed = update(value)
    return value if changed is None else changed[0]


def _rows_to_write(
    keys: list[Key],
    by_key: Mapping[Key, list[Updater]],
    kept: Mapping[Key, tuple[int, Any, float | None]],
    stored: Mapping[Key, tuple[int, Any]],
    written: dict[Key, tuple[int, Any]],
) -> list[tuple[Key, int, bytes, float]]:
    """The fold's rows to upsert (key, new version, state, expires at), each row from the
    kept value (`_kept_for_fold`) or the stored one with its checks counted in; every row
    (written or not) goes into `written` as (version, value)."""
    rows: list[tuple[Key, int, bytes, float]] = []
    for key in keys:
        found = kept.get(key)
        if found is not None:
            version, value, expires = found
        else:
            version, value = stored[key]
            expires = None
            for update in by_key[key]:
                changed = _apply(update, value, True)  # read just now: ours to change
                if changed is not None:
                    value, expires = changed
        if expires is not None:
            version += 1
            rows.append((key, version, encode_value(key[0], value), expires))
        written[key] = (version, value)
    return rows


def _time_written(value: float, updates: list[Updater]) -> tuple[bool, float | None]:
    """(whether these are all time-row updates, the expiry of the last that set the row to
    `value`): a time row's value after its updates is the time of the last that changed it
    (each sets its own), so no such update means they left it as it was (None: nothing to
    write)."""
    expires: float | None = None
    for update in updates:
        if not isinstance(update, TimeUpdate):
            return False, None
        if value == update.value:
            expires = update.expires
    return True, expires


def _same_marks(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Whether two sets of chain marks agree (a chain without a mark is at 0)."""
    return all(a.get(c, 0) == b.get(c, 0) for c in set(a) | set(b))
