"""Delegation (out of office) and stage routing (`pick`): the routing decisions that read the
store, applied when the gateway creates an approval.

Delegation: a person names a delegate until a date (`clearance users delegate alice --to bob
--until <date>`, or the web inbox's Delegation page). While it is in force, requests that
would go to alice are routed to bob, who votes in alice's seat (the vote records
`on_behalf_of`, the audit says "bob for alice"). Rules:
- the delegate must be in the directory, someone else, with an end in the future, and no
  loop (a→b while b→a) may form at any time of the new period, counting scheduled
  delegations (changes are made one at a time, across servers too, so that two made at once
  cannot close a loop between them); a person has one delegation at a time: one not yet over
  is replaced only when the caller says so (`replace`), and the replacement is audited
  (`delegation.cleared` with `replaced_by`, then `delegation.set` with `replaces`);
- chains are followed (a→b and b→c routes a's requests to c), never onto the requester: a
  delegate who requested the action is skipped and the request goes to the delegator;
- the delegator keeps the right to vote; the delegator and the delegate count once (whoever
  votes first), a person may not vote twice under two names;
- delegations are captured when the request is created, for every person who could be asked
  (approvers, the reserve `pick` held back, and the escalation levels): a later change applies
  to later requests.

Stage routing (`pick`): when a stage's single requirement lists more people than it needs,
`round_robin` pages the `required` people of the group paged longest ago (never paged first,
ties in name order: a rotation). The rotation is one per stage name, whoever asks and
whichever rules matched (another approve rule matching too, or a stage added before it, does
not start a new one): the requester, already taken out of the group by the engine, is passed
over and keeps their place. Its state is durable (`routing_cursors`: a page counter,
locked while it moves so several servers share one rotation, and each person's last page).
`least_loaded` pages those whose requests would reach someone (the person, or their delegate
in force) with the fewest pending requests waiting on them through a pick; picks are recorded
against the person the request is routed to, one pick at a time across servers (so that two
made at once do not count the same loads; see `_ROUTING_LOCK`). The rest of the group is kept
as the requirement's `reserve` and joins at `escalate_after`. A pick that would make the plan
impossible (one person counts once across stages) is not applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Connection,
    RowMapping,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from .approvals.model import Approval
from .approvals.records import StoredApproval
from .audit.entry import AuditDraft
from .audit.writer import WriteTx
from .directory import Directory
from .matching import feasible
from .policy.model import Pick, ResolvedPlan, ResolvedRequirement
from .store.schema import approvals, delegations, routing_cursors, routing_picks, votes

MAX_CHAIN = 8
#: The PostgreSQL advisory lock (any constant shared by every instance: "RTNG") taken, until
#: the transaction ends, by whatever changes routing state: a delegation set or ended, a
#: `pick`. One lock, always first (`_lock_routing`), so that two servers cannot deadlock
#: over the rows under it (two rotations' cursors taken in opposite orders) and cannot decide
#: from what the other has not committed (a loop closed from both ends, the same load
#: counted twice). SQLite needs none: the writer's BEGIN IMMEDIATE serialises every write.
_ROUTING_LOCK = 0x52544E47


class DelegationError(ValueError):
    """A delegation that cannot be made; `code` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Delegation:
    delegator: str
    delegate: str
    starts_at: datetime
    until: datetime
    created_by: str | None
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.until

    def to_json(self) -> dict[str, str | None]:
        return {
            "delegator": self.delegator,
            "delegate": self.delegate,
            "starts_at": self.starts_at.isoformat(),
            "until": self.until.isoformat(),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


# -- delegations -------------------------------------------------------------------------------


def zone_of(directory: Directory, person: str) -> tzinfo:
    """The time zone in which `person`'s delegation dates are meant: their directory
    `timezone`, else UTC (a date typed by someone in Tokyo is a day in Tokyo)."""
    found = directory.get(person)
    name = found.timezone if found is not None else None
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - checked when loaded
        return UTC


def _lock_routing(conn: Connection) -> None:
    """Take the routing lock (see `_ROUTING_LOCK`) on PostgreSQL; held until commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ROUTING_LOCK})


def day_start(day: date, zone: tzinfo) -> datetime:
    """00:00 of `day` in `zone`, as a UTC time."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def set_delegation(
    conn: Connection,
    directory: Directory,
    *,
    delegator: str,
    delegate: str,
    until: datetime,
    now: datetime,
    by: str | None = None,
    starts_at: datetime | None = None,
    replace: bool = True,
) -> Delegation:
    """Name `delegate` for `delegator` from `starts_at` (default now) to `until`.

    A delegation of `delegator` not yet over is replaced only with `replace` (else
    `already_delegated`); `delegate_audited` audits the replacement. Messages name no CLI flag
    or web field: the callers say how to fix it in their own words (see `code`)."""
    for who in (delegator, delegate):
        if directory.get(who) is None:
            raise DelegationError("unknown_person", f"{who!r} is not in the directory")
    if delegate == delegator:
        raise DelegationError("self_delegation", f"{delegator} cannot delegate to themselves")
    start = starts_at or now
    if until <= now:
        raise DelegationError(
            "until_in_past",
            f"the end, {clock_text(until)}, is not in the future; pick a later date",
        )
    if until <= start:
        raise DelegationError("empty_period", "the delegation ends before it starts")
    # One change at a time across servers: two made at once (a→b here, b→a on another
    # instance) would each find no loop in what the other had not committed yet.
    _lock_routing(conn)
    existing = get_delegation(conn, delegator)
    if existing is not None and existing.until > now and not replace:
        raise DelegationError(
            "already_delegated",
            f"{delegator} already has a delegate: {existing.delegate} {_period(existing, now)}",
        )
    _refuse_loops(conn, delegator=delegator, delegate=delegate, start=start, until=until, now=now)
    conn.execute(delete(delegations).where(delegations.c.delegator == delegator))
    conn.execute(
        insert(delegations).values(
            delegator=delegator,
            delegate=delegate,
            starts_at=start,
            until=until,
            created_by=by,
            created_at=now,
        )
    )
    return Delegation(delegator, delegate, start, until, by, now)


def _refuse_loops(
    conn: Connection,
    *,
    delegator: str,
    delegate: str,
    start: datetime,
    until: datetime,
    now: datetime,
) -> None:
    """Raise `delegation_loop` when `delegator` → `delegate` would close a loop at any time of
    [start, until) with the other delegations in force or scheduled then. The delegations in
    force change only when one starts: a loop at time t is also there at the latest start
    among its delegations (or at the new period's start), so those instants are checked."""
    lo = max(start, now)
    others = [
        d for d in list_delegations(conn, lo) if d.delegator != delegator and d.starts_at < until
    ]
    instants = sorted({lo, *(d.starts_at for d in others if lo < d.starts_at < until)})
    for t in instants:
        current = {d.delegator: d.delegate for d in others if d.active(t)}
        current[delegator] = delegate
        seen = [delegator]
        cursor = delegate
        while cursor in current and len(seen) <= MAX_CHAIN:
            seen.append(cursor)
            cursor = current[cursor]
            if cursor == delegator:
                chain = " → ".join([*seen, delegator])
                when = f" from {clock_text(t)}" if t > now else ""
                raise DelegationError(
                    "delegation_loop",
                    f"this would make a loop ({chain}){when}; end {seen[1]}'s delegation first",
                )


def clear_delegation(
    conn: Connection, delegator: str, now: datetime | None = None
) -> Delegation | None:
    """End `delegator`'s delegation; returns it, or None when there was none. With `now`, one
    already over counts as none (it is left as it is, for `users delegates --all`)."""
    _lock_routing(conn)
    found = get_delegation(conn, delegator)
    if found is None or (now is not None and found.until <= now):
        return None
    conn.execute(delete(delegations).where(delegations.c.delegator == delegator))
    return found


def get_delegation(conn: Connection, delegator: str) -> Delegation | None:
    row = (
        conn.execute(select(delegations).where(delegations.c.delegator == delegator))
        .mappings()
        .first()
    )
    return _delegation(row) if row is not None else None


def list_delegations(conn: Connection, now: datetime | None = None) -> list[Delegation]:
    """Every delegation, or only those not yet over at `now`; by delegator."""
    query = select(delegations).order_by(delegations.c.delegator)
    if now is not None:
        query = query.where(delegations.c.until > now)
    return [_delegation(r) for r in conn.execute(query).mappings()]


def active_map(
    conn: Connection, now: datetime, people: Iterable[str] | None = None
) -> dict[str, str]:
    """delegator → delegate for the delegations in force at `now` (of `people`, if given)."""
    query = select(delegations.c.delegator, delegations.c.delegate).where(
        and_(delegations.c.starts_at <= now, delegations.c.until > now)
    )
    if people is not None:
        wanted = list(dict.fromkeys(people))
        if not wanted:
            return {}
        query = query.where(delegations.c.delegator.in_(wanted))
    return {str(a): str(b) for a, b in conn.execute(query)}


def resolve_delegates(
    active: Mapping[str, str], people: Iterable[str], requester: str | None
) -> tuple[tuple[str, str], ...]:
    """(delegator, delegate) for each of `people` with a delegate in force: chains followed
    to their end, never onto the requester (that person keeps the request)."""
    out: list[tuple[str, str]] = []
    for person in dict.fromkeys(people):
        target: str | None = None
        cursor = person
        seen = {person}
        while cursor in active and len(seen) <= MAX_CHAIN:
            nxt = active[cursor]
            if nxt in seen or nxt == requester:
                break
            seen.add(nxt)
            target = cursor = nxt
        if target is not None and person != requester:
            out.append((person, target))
    return tuple(out)


def _chain_people(conn: Connection, now: datetime, people: Iterable[str]) -> dict[str, str]:
    """The delegations in force for `people` and for their delegates, down the chains."""
    found: dict[str, str] = {}
    frontier = list(dict.fromkeys(people))
    for _ in range(MAX_CHAIN):
        fresh = active_map(conn, now, [p for p in frontier if p not in found])
        if not fresh:
            break
        found.update(fresh)
        frontier = list(fresh.values())
    return found


def delegate_audited(
    tx: WriteTx,
    directory: Directory,
    *,
    delegator: str,
    delegate: str,
    until: datetime,
    now: datetime,
    by: str | None,
    channel: str,
    starts_at: datetime | None = None,
    replace: bool = False,
) -> Delegation:
    """`set_delegation` and its audit entry (`delegation.set`), in one transaction. A
    delegation not yet over is replaced only with `replace`; the replaced one is audited as
    `delegation.cleared` (with `replaced_by`) and the new entry names it (`replaces`)."""
    # Locked before reading what is replaced, so that the audit names the delegation this
    # change ends, not one another server replaced meanwhile (`set_delegation` locks again:
    # the lock is held once per transaction).
    _lock_routing(tx.conn)
    before = get_delegation(tx.conn, delegator)
    made = set_delegation(
        tx.conn,
        directory,
        delegator=delegator,
        delegate=delegate,
        until=until,
        now=now,
        by=by,
        starts_at=starts_at,
        replace=replace,
    )
    replaced = before if before is not None and before.until > now else None
    if replaced is not None:
        summary = f"{made.delegate} for {delegator} replaces {replaced.delegate}"
        _audit_cleared(tx, replaced, now, by, channel, replaced_by=made.delegate, summary=summary)
    data: dict[str, object] = {**made.to_json(), "summary": f"{delegate} for {delegator}"}
    if replaced is not None:
        data["replaces"] = replaced.to_json()
    tx.audit(
        AuditDraft(
            kind="delegation.set",
            ts=now,
            actor=by,
            approver=delegate,
            channel=channel,
            data=data,
        )
    )
    return made


def _audit_cleared(
    tx: WriteTx,
    ended: Delegation,
    now: datetime,
    by: str | None,
    channel: str,
    **more: object,
) -> None:
    """The `delegation.cleared` entry of `ended` (`more`: why, when it was replaced)."""
    tx.audit(
        AuditDraft(
            kind="delegation.cleared",
            ts=now,
            actor=by,
            approver=ended.delegate,
            channel=channel,
            data={**ended.to_json(), **more},
        )
    )


def undelegate_audited(
    tx: WriteTx, *, delegator: str, now: datetime, by: str | None, channel: str
) -> Delegation | None:
    """`clear_delegation` and its audit entry (`delegation.cleared`) when there was one in
    force or scheduled; one already over is not touched nor audited (returns None)."""
    ended = clear_delegation(tx.conn, delegator, now)
    if ended is not None:
        _audit_cleared(tx, ended, now, by, channel)
    return ended


# -- routing a new approval --------------------------------------------------------------------


def route(conn: Connection, stored: StoredApproval, now: datetime) -> StoredApproval:
    """The approval as it should be created: `pick` applied to each stage that asks for it,
    and the delegations in force captured. In the creating transaction."""
    a = stored.approval
    plan = _pick(conn, a, now)
    people = [
        p
        for stage in plan.stages
        for p in (
            *(q for r in stage.requirements for q in (*r.approvers, *r.reserve)),
            *(q for level in (stage.routing.escalate_to if stage.routing else ()) for q in level),
        )
    ]
    found = _chain_people(conn, now, people)
    pairs = resolve_delegates(found, people, a.requester) if found else ()
    if plan == a.plan and not pairs:
        return stored
    return stored.replace(dataclasses.replace(a, plan=plan, delegations=pairs))


def audit_data(approval: Approval) -> dict[str, object]:
    """What the approval's creation entry says about routing: picks and delegations."""
    out: dict[str, object] = {}
    if approval.delegations:
        out["delegations"] = [f"{b} for {a}" for a, b in approval.delegations]
    picked = {
        s.name: [p for r in s.requirements for p in r.approvers]
        for s in approval.plan.stages
        if any(r.reserve for r in s.requirements)
    }
    if picked:
        out["picked"] = picked
    return out


def load(conn: Connection, people: Iterable[str]) -> dict[str, int]:
    """How many pending requests wait on each person through a pick (their current stage,
    and the seat is not filled: neither they nor the approver they stand in for has voted).
    A pick is recorded against the person the request is routed to: the delegate in force for
    a picked person who is away (who may still vote in their own seat)."""
    wanted = list(dict.fromkeys(people))
    picks = routing_picks.c
    voted = exists().where(
        and_(
            votes.c.approval_id == picks.approval_id,
            or_(votes.c.person == picks.person, votes.c.person == picks.seat),
        )
    )
    query = (
        select(routing_picks.c.person, func.count())
        .select_from(
            routing_picks.join(
                approvals,
                and_(
                    approvals.c.id == routing_picks.c.approval_id,
                    approvals.c.stage_index == routing_picks.c.stage_index,
                ),
            )
        )
        .where(and_(routing_picks.c.person.in_(wanted), approvals.c.state == "pending", ~voted))
        .group_by(routing_picks.c.person)
    )
    counts = {str(p): int(n) for p, n in conn.execute(query)}
    return {p: counts.get(p, 0) for p in wanted}


def _pick(conn: Connection, a: Approval, now: datetime) -> ResolvedPlan:
    stages = list(a.plan.stages)
    for i, stage in enumerate(stages):
        routing = stage.routing
        if routing is None or routing.pick is Pick.ALL or len(stage.requirements) != 1:
            continue
        req = stage.requirements[0]
        pool = tuple(p for p in dict.fromkeys(req.approvers) if p != a.requester)
        if len(pool) <= req.required:
            continue
        # One pick at a time across servers, until this transaction commits: else two
        # least_loaded picks at once count the same loads and page the same person, and two
        # rotations' cursors taken in opposite orders deadlock.
        _lock_routing(conn)
        routed = _routed(conn, now, pool, a.requester)
        if routing.pick is Pick.ROUND_ROBIN:
            rotation = stage.name  # not the rules that matched: they vary by request
            chosen = _round_robin(conn, rotation, pool, req.required, now)
        else:
            loads = load(conn, routed.values())
            ranked = sorted(pool, key=lambda p: (loads[routed[p]], pool.index(p)))
            chosen = _distinct_seats(ranked, routed, req.required)
        picked = tuple(p for p in pool if p in chosen)
        narrowed = dataclasses.replace(
            stage,
            requirements=(
                ResolvedRequirement(
                    picked, req.required, tuple(p for p in pool if p not in chosen)
                ),
            ),
        )
        trial = list(stages)
        trial[i] = narrowed
        if feasible(dataclasses.replace(a.plan, stages=tuple(trial)), a.requester) is None:
            stages[i] = narrowed
            seats: dict[str, str] = {}  # whom each pick reaches → the first seat it fills
            for q in picked:
                seats.setdefault(routed[q], q)
            conn.execute(
                insert(routing_picks),
                [
                    {
                        "approval_id": a.id,
                        "stage_index": i,
                        "person": p,
                        "seat": seat,
                        "picked_at": now,
                    }
                    for p, seat in seats.items()
                ],
            )
    return dataclasses.replace(a.plan, stages=tuple(stages))


def _routed(
    conn: Connection, now: datetime, pool: tuple[str, ...], requester: str | None
) -> dict[str, str]:
    """Who each of `pool` would be routed to now: their delegate in force (chains followed,
    as `route` captures them), else themselves."""
    found = _chain_people(conn, now, pool)
    routed = {p: p for p in pool}
    if found:
        routed.update(resolve_delegates(found, pool, requester))
    return routed


def _distinct_seats(ranked: list[str], routed: Mapping[str, str], k: int) -> list[str]:
    """The first `k` of `ranked`, passing over one whose request would reach the same person
    as one already chosen (a delegate holds one seat), unless there are too few others."""
    chosen: list[str] = []
    reached: set[str] = set()
    for p in ranked:
        if len(chosen) < k and routed[p] not in reached:
            chosen.append(p)
            reached.add(routed[p])
    for p in ranked:
        if len(chosen) < k and p not in chosen:
            chosen.append(p)
    return chosen


def _round_robin(
    conn: Connection, rotation: str, candidates: tuple[str, ...], k: int, now: datetime
) -> list[str]:
    """The `k` candidates paged longest ago in this rotation (never paged first, ties in name
    order): over a fixed group, each in turn. The requester is not among the candidates: they
    are passed over and keep their place, and the rotation is the same whoever asks.

    State (`routing_cursors`): `rr:<rotation>` counts the pages, locked while it moves (one
    rotation shared by several servers); `rr:<rotation>:<person>` is that count when each was
    last paged."""
    key = f"rr:{_digest(rotation)}"
    savepoint = conn.begin_nested()
    try:
        conn.execute(insert(routing_cursors).values(key=key, position=0, updated_at=now))
    except IntegrityError:
        savepoint.rollback()
    else:
        savepoint.commit()
    query = select(routing_cursors.c.position).where(routing_cursors.c.key == key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    paged = int(conn.execute(query).scalar_one())
    keys = {p: f"{key}:{_digest(p)}" for p in candidates}
    last = {
        str(row_key): int(n)
        for row_key, n in conn.execute(
            select(routing_cursors.c.key, routing_cursors.c.position).where(
                routing_cursors.c.key.in_(list(keys.values()))
            )
        )
    }
    chosen = sorted(candidates, key=lambda p: (last.get(keys[p], 0), p))[:k]
    for p in chosen:
        paged += 1
        moved = conn.execute(
            update(routing_cursors)
            .where(routing_cursors.c.key == keys[p])
            .values(position=paged, updated_at=now)
        )
        if moved.rowcount == 0:
            conn.execute(
                insert(routing_cursors).values(key=keys[p], position=paged, updated_at=now)
            )
    conn.execute(
        update(routing_cursors)
        .where(routing_cursors.c.key == key)
        .values(position=paged, updated_at=now)
    )
    return chosen


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def clock_text(at: datetime, zone: tzinfo = UTC, *, named: bool = True) -> str:
    """`at` in `zone`, to the minute, followed by the zone's name unless not `named`:
    `2026-12-01 00:00 UTC`, `2026-12-01 09:00 Asia/Tokyo`."""
    text = f"{at.astimezone(zone):%Y-%m-%d %H:%M}"
    return f"{text} {zone}" if named else text


def _period(d: Delegation, now: datetime) -> str:
    if d.starts_at > now:
        return f"from {clock_text(d.starts_at)} until {clock_text(d.until)}"
    return f"until {clock_text(d.until)}"


def _delegation(row: RowMapping) -> Delegation:
    by = row["created_by"]
    return Delegation(
        delegator=str(row["delegator"]),
        delegate=str(row["delegate"]),
        starts_at=row["starts_at"],
        until=row["until"],
        created_by=str(by) if by is not None else None,
        created_at=row["created_at"],
    )
