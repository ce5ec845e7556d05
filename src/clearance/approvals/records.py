"""Approvals in the database: rows ↔ `Approval`, and the compare-and-set update.

Plain functions over a SQLAlchemy *sync* `Connection`. Writes run inside the audit writer's
transaction (so an approval, its votes and their audit entries commit together); async readers
call the same functions through `AsyncConnection.run_sync`, so there is one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update

from ..policy.model import ResolvedPlan
from ..store.schema import UTCDateTime, approval_people, approvals, votes
from .model import Approval, ApprovalState, ExecutionState, RoutingEntry, Vote, VoteDecision


class Conflict(Exception):
    """Someone else changed the approval first (compare-and-set lost); re-read and retry."""


@dataclass(frozen=True, slots=True)
class StoredApproval:
    """An approval with what the store keeps beside it: the request and the policy's reasons."""

    approval: Approval
    agent: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    decision: dict[str, Any] = field(default_factory=dict)
    rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    policy_version: str = ""
    params_hash: str = ""
    idempotency_key: str | None = None

    def replace(self, approval: Approval) -> StoredApproval:
        return StoredApproval(
            approval,
            self.agent,
            self.context,
            self.labels,
            self.decision,
            self.rules,
            self.reasons,
            self.policy_version,
            self.params_hash,
            self.idempotency_key,
        )


# Statements built once: SQLAlchemy caches their compiled form, where a fresh
# `insert(...).values(...)` per call costs ~1 ms of cache-key work (measured).
_INSERT = insert(approvals)
_INSERT_PEOPLE = insert(approval_people)
_INSERT_VOTES = insert(votes)
_CAS = (
    update(approvals)
    .where(and_(approvals.c.id == bindparam("b_id"), approvals.c.version == bindparam("b_version")))
    .values(
        state=bindparam("state"),
        stage_index=bindparam("stage_index"),
        decided_at=bindparam("decided_at"),
        decided_reason=bindparam("decided_reason"),
        released_at=bindparam("released_at"),
        execution_state=bindparam("execution_state"),
        execution_result=bindparam("execution_result"),
        executed_at=bindparam("executed_at"),
        version=bindparam("version"),
        plan_json=bindparam("plan_json"),  # widened by an escalation
        expires_at=bindparam("expires_at"),  # moved by `on_timeout: escalate`
        routing_json=bindparam("routing_json"),
    )
)
_BY_ID = select(approvals).where(approvals.c.id == bindparam("id"))
_VOTES_OF = select(votes).where(votes.c.approval_id == bindparam("id")).order_by(votes.c.id)


def approval_values(stored: StoredApproval) -> dict[str, Any]:
    """The column values of one approval row (for `insert_approval`, or an executemany)."""
    a = stored.approval
    return {
        "id": a.id,
        "state": a.state.value,
        "action": a.action,
        "params_json": a.params,
        "params_hash": stored.params_hash,
        "binding_hash": a.binding_hash,
        "actor_json": a.actor,
        "context_json": stored.context,
        "labels_json": list(stored.labels),
        "requester": a.requester,
        "agent": stored.agent,
        "plan_json": a.plan.to_json(),
        "stage_index": a.stage_index,
        "decision_json": stored.decision,
        "rules_json": list(stored.rules),
        "reasons_json": list(stored.reasons),
        "policy_version": stored.policy_version,
        "idempotency_key": stored.idempotency_key,
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "version": a.version,
        "routing_json": routing_json(a),
    }


def routing_json(a: Approval) -> dict[str, Any] | None:
    """The delegations and the reminder/escalation log of an approval (None when empty)."""
    if not a.delegations and not a.routing_log:
        return None
    return {
        "delegations": [list(d) for d in a.delegations],
        "log": [e.to_json() for e in a.routing_log],
    }


def insert_approval(conn: Connection, stored: StoredApproval) -> None:
    conn.execute(_INSERT, approval_values(stored))
    _add_people(conn, stored.approval.id, people_of(stored.approval))


def people_of(a: Approval) -> set[str]:
    """Everyone who may ever vote on `a`: its approvers, the rest of a group `pick` held back,
    and delegates. The inbox finds a person's requests through this (`approval_people`)."""
    people = {
        p
        for stage in a.plan.stages
        for req in stage.requirements
        for p in (*req.approvers, *req.reserve)
    }
    people.update(delegate for _, delegate in a.delegations)
    return people


def ids_for_person(conn: Connection, person_id: str, limit: int) -> list[str]:
    """The newest pending approvals `person_id` may be asked about (one indexed lookup)."""
    t, p = approvals, approval_people
    rows = conn.execute(
        select(t.c.id)
        .join(p, p.c.approval_id == t.c.id)
        .where(p.c.person_id == person_id, t.c.state == "pending")
        .order_by(t.c.created_at.desc())
        .limit(limit)
    ).scalars()
    return [str(i) for i in rows]


def _add_people(conn: Connection, approval_id: str, people: set[str]) -> None:
    if people:
        conn.execute(
            _INSERT_PEOPLE,
            [{"person_id": p, "approval_id": approval_id} for p in sorted(people)],
        )


def save_transition(conn: Connection, before: Approval, after: Approval) -> None:
    """Write `after` only if the row still holds `before`'s version; add any new votes."""
    result = conn.execute(
        _CAS,
        {
            "b_id": before.id,
            "b_version": before.version,
            "state": after.state.value,
            "stage_index": after.stage_index,
            "decided_at": after.decided_at,
            "decided_reason": after.decided_reason,
            "released_at": after.released_at,
            "execution_state": after.execution_state.value if after.execution_state else None,
            "execution_result": after.execution_result,
            "executed_at": after.executed_at,
            "version": after.version,
            "plan_json": after.plan.to_json(),
            "expires_at": after.expires_at,
            "routing_json": routing_json(after),
        },
    )
    if result.rowcount != 1:
        raise Conflict(f"approval {before.id} changed concurrently")
    if after.plan is not before.plan or after.delegations != before.delegations:
        _add_people(conn, after.id, people_of(after) - people_of(before))  # e.g. escalated
    known = {(v.person, v.decision) for v in before.votes}
    fresh = [v for v in after.votes if (v.person, v.decision) not in known]
    if fresh:
        conn.execute(
            _INSERT_VOTES,
            [
                {
                    "approval_id": after.id,
                    "person": v.person,
                    "decision": v.decision.value,
                    "comment": v.comment,
                    "channel": v.channel,
                    "stage_index": v.stage_index,
                    "on_behalf_of": v.on_behalf_of,
                    "at": v.at,
                    "factor": v.factor,
                    "geo": v.geo,
                }
                for v in fresh
            ],
        )


def load(conn: Connection, approval_id: str) -> StoredApproval | None:
    row = conn.execute(_BY_ID, {"id": approval_id}).mappings().first()
    if row is None:
        return None
    vote_rows = conn.execute(_VOTES_OF, {"id": approval_id}).mappings()
    return _stored(row, [_vote(v) for v in vote_rows])


def load_many(conn: Connection, ids: Sequence[str]) -> list[StoredApproval]:
    """Several approvals in the order of `ids`, with two queries whatever their number."""
    if not ids:
        return []
    rows = {
        r["id"]: r
        for r in conn.execute(select(approvals).where(approvals.c.id.in_(ids))).mappings()
    }
    by_approval: dict[str, list[Vote]] = {}
    for v in conn.execute(
        select(votes).where(votes.c.approval_id.in_(ids)).order_by(votes.c.id)
    ).mappings():
        by_approval.setdefault(v["approval_id"], []).append(_vote(v))
    return [_stored(rows[i], by_approval.get(i, [])) for i in ids if i in rows]


def find_id_by_idempotency_key(conn: Connection, key: str) -> str | None:
    value = conn.execute(
        select(approvals.c.id).where(approvals.c.idempotency_key == key)
    ).scalar_one_or_none()
    return str(value) if value is not None else None


def list_ids(
    conn: Connection,
    *,
    state: str | None = None,
    agent: str | None = None,
    limit: int = 100,
    before: datetime | None = None,
) -> list[str]:
    query = select(approvals.c.id).order_by(approvals.c.created_at.desc()).limit(limit)
    if state:
        query = query.where(approvals.c.state == state)
    if agent:
        query = query.where(approvals.c.agent == agent)
    if before:
        query = query.where(approvals.c.created_at < before)
    return [str(x) for x in conn.execute(query).scalars()]


def due_for_expiry(conn: Connection, now: datetime, limit: int = 500) -> list[str]:
    return [
        str(x)
        for x in conn.execute(
            select(approvals.c.id)
            .where(and_(approvals.c.state == "pending", approvals.c.expires_at <= now))
            .order_by(approvals.c.expires_at)
            .limit(limit)
        ).scalars()
    ]


def next_expiry(conn: Connection) -> datetime | None:
    value = conn.execute(
        select(func.min(approvals.c.expires_at)).where(approvals.c.state == "pending")
    ).scalar_one_or_none()
    if value is None:
        return None
    # min() loses the column's type in SQLite (it comes back as text): convert it ourselves.
    converted = UTCDateTime().process_result_value(value, conn.dialect)
    return converted if isinstance(converted, datetime) else None


def count_by_state(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(approvals.c.state, func.count()).group_by(approvals.c.state))
    return {str(state): int(n) for state, n in rows}


def _vote(row: Any) -> Vote:
    return Vote(
        person=row["person"],
        decision=VoteDecision(row["decision"]),
        stage_index=int(row["stage_index"]),
        at=row["at"],
        comment=row["comment"],
        channel=row["channel"],
        on_behalf_of=row["on_behalf_of"],
        factor=row["factor"],
        geo=row["geo"],
    )


def _stored(row: Any, vote_list: Sequence[Vote]) -> StoredApproval:
    execution = row["execution_state"]
    routing = row["routing_json"] or {}
    approval = Approval(
        id=row["id"],
        action=row["action"],
        params=row["params_json"],
        binding_hash=row["binding_hash"],
        actor=row["actor_json"],
        requester=row["requester"],
        plan=ResolvedPlan.from_json(row["plan_json"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        state=ApprovalState(row["state"]),
        stage_index=int(row["stage_index"]),
        votes=tuple(vote_list),
        decided_at=row["decided_at"],
        decided_reason=row["decided_reason"],
        released_at=row["released_at"],
        execution_state=ExecutionState(execution) if execution else None,
        execution_result=row["execution_result"],
        executed_at=row["executed_at"],
        version=int(row["version"]),
        delegations=tuple((str(a), str(b)) for a, b in routing.get("delegations", ())),
        routing_log=tuple(RoutingEntry.from_json(e) for e in routing.get("log", ())),
    )
    return StoredApproval(
        approval=approval,
        agent=row["agent"],
        context=row["context_json"],
        labels=tuple(row["labels_json"]),
        decision=row["decision_json"],
        rules=tuple(row["rules_json"]),
        reasons=tuple(row["reasons_json"]),
        policy_version=row["policy_version"],
        params_hash=row["params_hash"],
        idempotency_key=row["idempotency_key"],
    )
