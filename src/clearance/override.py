"""Emergency override (break-glass): release an action at once, then review it.

Rules (configured with `controls: {override: {role, alert, review_by, rate_limit}}`; without
that section every override is refused):

- Only a person with the configured role (`emergency` by default, from the directory's
  `roles:`) may override, and only with a reason. The override releases a **pending**
  approval (`approval_id`), or one **not yet requested**: the emergency person submits the
  action, parameters and actor exactly as the agent will send them, and an approval is created
  already approved by the override, bound to that call's binding hash. When the agent then
  checks that exact call (same idempotency key, or simply the same action, parameters and
  actor), the check returns that approval, which the agent releases once like any other.
- Break-glass releases what the policy *holds for approval*. A request the policy denies or
  blocks is refused (deny and block rules are never overridden), and one it allows needs no
  override.
- Overrides are rate limited per person (`rate_limit: 3/24h`), counted inside the override's
  own transaction (serialised per person with an advisory lock on PostgreSQL), so concurrent
  attempts cannot exceed it.
- Each override, in one transaction: the approval change (compare-and-set), an
  `override.used` audit entry, an alert to every `alert` person on every channel they have
  (and to the reviewers), and an open review request. Someone listed in `review_by`, other
  than the overrider, marks it `justified` or `flagged` (a flag needs a comment and alerts
  again). Every refusal — no reason, wrong role, over the limit, self-review — is audited.
- Overrides have their own section in the audit export (`clearance audit export
  --section overrides`, `clearance overrides export`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from .approvals import records, workflow
from .approvals.model import Approval, ApprovalState
from .approvals.records import StoredApproval
from .approvals.service import ApprovalError
from .audit.entry import AuditDraft, Kind
from .audit.writer import WriteTx
from .canonical import binding_hash, params_hash, redact
from .policy import Effect, Request
from .policy.model import Controls, OverrideSettings
from .store.database import Database
from .store.reads import read
from .store.schema import approvals, overrides

if TYPE_CHECKING:
    from .gateway import Gateway

OVERRIDE_USED = "override.used"
OVERRIDE_REFUSED = "override.refused"
OVERRIDE_REVIEWED = "override.reviewed"
REVIEW_REFUSED = "override.review_refused"
VERDICTS = ("justified", "flagged")


class OverrideRefused(ApprovalError):
    """An override or review refused (and audited); `code` says why."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(code, message)
        self.status = status


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    id: str
    approval_id: str
    person: str
    reason: str
    action: str
    binding_hash: str
    created_at: datetime
    review_state: str
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_comment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "approval_id": self.approval_id,
            "person": self.person,
            "reason": self.reason,
            "action": self.action,
            "binding_hash": self.binding_hash,
            "created_at": self.created_at.isoformat(),
            "review_state": self.review_state,
            "reviewed_by": self.reviewed_by,
            "reviewed_at": self.reviewed_at.isoformat() if self.reviewed_at else None,
            "review_comment": self.review_comment,
        }


@dataclass(frozen=True, slots=True)
class OverrideResult:
    override: OverrideRecord
    approval: StoredApproval


# ---------------------------------------------------------------------------------------------
# The pure step

#: The gateway's own administration (policy, directory and standing-grant changes) is
#: decided by other admins, never by break-glass: an override would be four eyes by one.
GATEWAY_ACTIONS_PREFIX = "clearance."
_NOT_OVERRIDABLE = (
    "changes to the gateway itself (policy, directory, standing grants) need another admin's "
    "approval; an emergency override cannot release them"
)


def is_gateway_action(action: str) -> bool:
    return action.startswith(GATEWAY_ACTIONS_PREFIX)


def release_by_override(
    approval: Approval, *, person: str, reason: str, now: datetime
) -> workflow.Transition:
    """A pending approval, approved at once by an emergency override (pure)."""
    if approval.state is ApprovalState.PENDING and now >= approval.expires_at:
        raise workflow.Rejected(
            "expired",
            "this request expired before the override; ask the agent to request it again, or "
            "override it as a new request",
            transition=workflow.expire(approval, now),
        )
    if approval.is_final:
        raise workflow.Rejected(
            "already_decided", f"cannot override: the request is already {approval.state.value}"
        )
    if is_gateway_action(approval.action):
        raise workflow.Rejected("not_overridable", _NOT_OVERRIDABLE)
    approved = replace(
        approval,
        state=ApprovalState.APPROVED,
        decided_at=now,
        decided_reason=f"emergency override by {person}: {reason}",
        version=approval.version + 1,
    )
    event = workflow.Event(workflow.EventKind.APPROVED, person, approval.stage_index)
    return workflow.Transition(approved, (event,))


# ---------------------------------------------------------------------------------------------
# Store


def new_override_id() -> str:
    return "ovr_" + secrets.token_hex(12)


def find_ready(conn: Connection, bind: str, now: datetime) -> str | None:
    """The approval an override created ahead of this exact call, approved and not released."""
    row = conn.execute(
        select(approvals.c.id)
        .select_from(overrides.join(approvals, approvals.c.id == overrides.c.approval_id))
        .where(
            and_(
                overrides.c.binding_hash == bind,
                approvals.c.state == "approved",
                approvals.c.released_at.is_(None),
                approvals.c.expires_at > now,
            )
        )
        .order_by(overrides.c.created_at.desc())
        .limit(1)
    ).first()
    return str(row[0]) if row is not None else None


def load(conn: Connection, override_id: str) -> OverrideRecord | None:
    row = conn.execute(select(overrides).where(overrides.c.id == override_id)).mappings().first()
    return _record(row) if row is not None else None


def list_records(
    conn: Connection,
    *,
    review_state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = 500,
) -> list[OverrideRecord]:
    query = select(overrides).order_by(overrides.c.created_at)
    if review_state:
        query = query.where(overrides.c.review_state == review_state)
    if since is not None:
        query = query.where(overrides.c.created_at >= since)
    if until is not None:
        query = query.where(overrides.c.created_at < until)
    if limit is not None:
        query = query.limit(limit)
    return [_record(r) for r in conn.execute(query).mappings()]


def _record(row: Any) -> OverrideRecord:
    return OverrideRecord(
        id=row["id"],
        approval_id=row["approval_id"],
        person=row["person"],
        reason=row["reason"],
        action=row["action"],
        binding_hash=row["binding_hash"],
        created_at=row["created_at"],
        review_state=row["review_state"],
        reviewed_by=row["reviewed_by"],
        reviewed_at=row["reviewed_at"],
        review_comment=row["review_comment"],
    )


def _serialise_person(conn: Connection, person: str) -> None:
    """On PostgreSQL, one override at a time per person (the rate limit's count stays true
    across instances). SQLite transactions are serialised already."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"override:{person}".encode()).digest()[:8], "big")
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key - (1 << 63)})


def _check_rate(conn: Connection, settings: OverrideSettings, person: str, now: datetime) -> None:
    _serialise_person(conn, person)
    since = now - timedelta(seconds=settings.rate_window_s)
    used = conn.execute(
        select(func.count())
        .select_from(overrides)
        .where(and_(overrides.c.person == person, overrides.c.created_at > since))
    ).scalar_one()
    if int(used) >= settings.rate_limit:
        raise OverrideRefused(
            "rate_limited",
            f"{person} has used {used} overrides in the last {_span(settings.rate_window_s)} "
            f"(the limit is {settings.rate_limit}); ask someone else with the "
            f"{settings.role} role, or an approver",
            429,
        )


# ---------------------------------------------------------------------------------------------
# Overriding


def settings_of(gateway: Gateway) -> OverrideSettings | None:
    controls = gateway.policy.settings.get("controls")
    return controls.override if isinstance(controls, Controls) else None


async def override(
    gateway: Gateway,
    *,
    person: str,
    reason: str | None,
    approval_id: str | None = None,
    request: Request | None = None,
    channel: str = "api",
    idempotency_key: str | None = None,
) -> OverrideResult:
    """Release a pending approval (`approval_id`) or a call not yet requested (`request`) at
    once, by emergency override. Refusals raise OverrideRefused, after auditing them."""
    now = gateway.clock()
    subject = approval_id or (request.action if request else None)
    settings = settings_of(gateway)
    why = (reason or "").strip()
    try:
        if (approval_id is None) == (request is None):
            raise OverrideRefused(
                "invalid_request", "give either a pending approval's id or an action", 400
            )
        if settings is None:
            raise OverrideRefused(
                "overrides_disabled",
                "emergency overrides are not enabled: the policy has no controls.override",
            )
        if not why:
            raise OverrideRefused(
                "reason_required",
                "an emergency override needs a reason: say why it cannot wait",
                400,
            )
        if not gateway.policy.directory.has_role(person, settings.role):
            raise OverrideRefused(
                "not_permitted",
                f"{person} does not have the {settings.role} role, which an override needs",
            )
        if request is not None and is_gateway_action(request.action):
            raise OverrideRefused("not_overridable", _NOT_OVERRIDABLE)
        if request is None:
            return await _override_pending(
                gateway, settings, approval_id or "", person, why, channel
            )
        return await _override_ahead(
            gateway, settings, request, person, why, channel, idempotency_key
        )
    except ApprovalError as exc:
        await gateway.writer.append(
            AuditDraft(
                kind=OVERRIDE_REFUSED,
                ts=now,
                approver=person,
                channel=channel,
                action=request.action if request else None,
                approval_id=approval_id,
                data={"code": exc.code, "reason": exc.message, "given_reason": why or None,
                      "subject": subject},
            )
        )  # fmt: skip
        if isinstance(exc, OverrideRefused):
            raise
        raise OverrideRefused(exc.code, exc.message, exc.status) from exc


async def _override_pending(
    gateway: Gateway,
    settings: OverrideSettings,
    approval_id: str,
    person: str,
    reason: str,
    channel: str,
) -> OverrideResult:
    made: list[OverrideRecord] = []

    def then(tx: WriteTx, after: StoredApproval, now: datetime) -> None:
        _check_rate(tx.conn, settings, person, now)
        made.append(_record_override(gateway, tx, settings, after, person, reason, channel, now))

    stored = await gateway.approvals.apply(
        approval_id,
        lambda a, now: release_by_override(a, person=person, reason=reason, now=now),
        person=person,
        channel=channel,
        then=then,
    )
    return OverrideResult(made[0], stored)


async def _override_ahead(
    gateway: Gateway,
    settings: OverrideSettings,
    request: Request,
    person: str,
    reason: str,
    channel: str,
    idempotency_key: str | None,
) -> OverrideResult:
    decision = gateway.engine.evaluate(request)
    if decision.effect is Effect.ALLOW:
        raise OverrideRefused(
            "not_needed", "the policy allows this request already: no override is needed", 409
        )
    if decision.effect is not Effect.APPROVE or decision.approval is None:
        raise OverrideRefused(
            "not_overridable",
            f"the policy says {decision.effect.value} ({'; '.join(decision.reasons)}); an "
            "override releases only requests held for approval, never denied or blocked ones",
        )
    now = gateway.clock()
    shown = redact(request.params, decision.redact) if decision.redact else request.params
    bind = binding_hash(request.action, request.params, request.actor)
    opened = workflow.open_approval(
        approval_id="apr_" + secrets.token_hex(12),
        action=request.action,
        params=shown,
        binding_hash=bind,
        actor=request.actor,
        plan=decision.approval,
        now=now,
    )
    transition = release_by_override(opened, person=person, reason=reason, now=now)
    approval = transition.approval
    stored = StoredApproval(
        approval=approval,
        agent=request.actor.get("agent"),
        context=dict(request.context),
        labels=tuple(request.labels),
        decision=decision.to_json(),
        rules=decision.rules,
        reasons=decision.reasons,
        policy_version=decision.policy_version,
        params_hash=params_hash(shown),
        idempotency_key=idempotency_key,
    )

    def work(tx: WriteTx) -> OverrideRecord:
        _check_rate(tx.conn, settings, person, now)
        records.insert_approval(tx.conn, stored)
        base = dict(
            ts=now,
            actor=approval.requester or stored.agent,
            channel=channel,
            action=approval.action,
            params_hash=stored.params_hash,
            rule_ids=decision.rules,
            policy_version=decision.policy_version,
            approval_id=approval.id,
        )
        tx.audit(
            AuditDraft(
                kind=Kind.APPROVAL_CREATED,
                effect="pending",
                data={"plan": decision.approval.to_json() if decision.approval else None,
                      "binding_hash": bind, "by_override": True},
                **base,  # type: ignore[arg-type]
            )
        )  # fmt: skip
        tx.audit(
            AuditDraft(
                kind=Kind.APPROVAL_DECIDED,
                effect="approved",
                approver=person,
                data={"event": "approval.approved", "reason": approval.decided_reason},
                **base,  # type: ignore[arg-type]
            )
        )
        return _record_override(gateway, tx, settings, stored, person, reason, channel, now)

    try:
        record = await gateway.writer.run(work)
    except IntegrityError:
        raise OverrideRefused(
            "idempotency_conflict",
            "this idempotency key already names a request; use the agent's new key",
            409,
        ) from None
    return OverrideResult(record, stored)


def _record_override(
    gateway: Gateway,
    tx: WriteTx,
    settings: OverrideSettings,
    stored: StoredApproval,
    person: str,
    reason: str,
    channel: str,
    now: datetime,
) -> OverrideRecord:
    """The override row, its audit entry and the alerts — inside the override's transaction."""
    a = stored.approval
    record = OverrideRecord(
        id=new_override_id(),
        approval_id=a.id,
        person=person,
        reason=reason,
        action=a.action,
        binding_hash=a.binding_hash,
        created_at=now,
        review_state="open",
    )
    tx.conn.execute(
        insert(overrides).values(
            id=record.id,
            approval_id=a.id,
            person=person,
            reason=reason,
            action=a.action,
            binding_hash=a.binding_hash,
            created_at=now,
            review_state="open",
        )
    )
    told = tuple(dict.fromkeys((*settings.alert, *settings.review_by)))
    tx.audit(
        AuditDraft(
            kind=OVERRIDE_USED,
            ts=now,
            actor=a.requester or stored.agent,
            approver=person,
            channel=channel,
            action=a.action,
            params_hash=stored.params_hash,
            effect="approved",
            rule_ids=stored.rules,
            policy_version=stored.policy_version,
            approval_id=a.id,
            data={
                "override_id": record.id,
                "reason": reason,
                "alerted": list(told),
                "review_by": list(settings.review_by),
                "self_override": person == a.requester,
            },
        )
    )
    name = gateway.policy.directory.display_name(person)
    _alert(
        gateway,
        tx,
        told,
        {
            "kind": "override",
            "action": a.action,
            "requester": a.requester,
            "agent": stored.agent,
            "decision_id": a.id,
            "reasons": [f"Emergency override by {name}: {reason}"],
            "text": (
                f"EMERGENCY OVERRIDE: {name} released {a.action} (request {a.id}) without "
                f"approval. Reason: {reason}. A review is required (override {record.id})."
            ),
        },
        now,
    )
    return record


def _alert(
    gateway: Gateway, tx: WriteTx, people: tuple[str, ...], payload: dict[str, Any], now: datetime
) -> None:
    for hook in gateway.on_alert:
        hook(tx, people, {**payload, "every_channel": True}, now)


# ---------------------------------------------------------------------------------------------
# Review


async def review(
    gateway: Gateway,
    override_id: str,
    *,
    person: str,
    verdict: str,
    comment: str | None = None,
    channel: str = "api",
) -> OverrideRecord:
    """Close an override's review as `justified` or `flagged` (a flag needs a comment). The
    reviewer is listed in `review_by` and is not the overrider. Refusals are audited."""
    now = gateway.clock()
    note = (comment or "").strip() or None
    record = await read(gateway.db, lambda c: load(c, override_id))
    try:
        if record is None:
            raise OverrideRefused("not_found", f"no override with id {override_id!r}", 404)
        if verdict not in VERDICTS:
            raise OverrideRefused("invalid_verdict", "a review is justified or flagged", 400)
        if person == record.person:
            raise OverrideRefused(
                "self_review",
                f"{person} made this override and cannot review it; ask another reviewer",
            )
        settings = settings_of(gateway)
        reviewers = settings.review_by if settings else _admins(gateway)
        if person not in reviewers:
            raise OverrideRefused(
                "not_reviewer",
                f"{person} may not review overrides; reviewers: {', '.join(reviewers) or 'nobody'}",
            )
        if verdict == "flagged" and not note:
            raise OverrideRefused(
                "comment_required", "a flag needs a comment: say what was wrong", 400
            )
        found = record

        def work(tx: WriteTx) -> OverrideRecord:
            done = tx.conn.execute(
                update(overrides)
                .where(and_(overrides.c.id == override_id, overrides.c.review_state == "open"))
                .values(
                    review_state=verdict, reviewed_by=person, reviewed_at=now, review_comment=note
                )
            )
            if done.rowcount != 1:
                raise OverrideRefused("already_reviewed", "this override was reviewed already", 409)
            tx.audit(
                AuditDraft(
                    kind=OVERRIDE_REVIEWED,
                    ts=now,
                    actor=found.person,
                    approver=person,
                    channel=channel,
                    action=found.action,
                    effect=verdict,
                    approval_id=found.approval_id,
                    data={"override_id": override_id, "verdict": verdict, "comment": note},
                )
            )
            if verdict == "flagged" and settings is not None:
                name = gateway.policy.directory.display_name(person)
                _alert(
                    gateway,
                    tx,
                    settings.alert,
                    {
                        "kind": "override.flagged",
                        "action": found.action,
                        "requester": found.person,
                        "decision_id": found.approval_id,
                        "reasons": [f"Override {override_id} flagged by {name}: {note}"],
                        "text": f"OVERRIDE FLAGGED: {name} flagged override {override_id} "
                        f"by {found.person} ({found.action}): {note}",
                    },
                    now,
                )
            return replace(
                found,
                review_state=verdict,
                reviewed_by=person,
                reviewed_at=now,
                review_comment=note,
            )

        return await gateway.writer.run(work)
    except OverrideRefused as exc:
        await gateway.writer.append(
            AuditDraft(
                kind=REVIEW_REFUSED,
                ts=now,
                approver=person,
                channel=channel,
                approval_id=record.approval_id if record else None,
                data={"override_id": override_id, "code": exc.code, "reason": exc.message},
            )
        )
        raise


async def list_overrides(
    db: Database, *, review_state: str | None = None, limit: int = 500
) -> list[OverrideRecord]:
    return await read(db, lambda c: list_records(c, review_state=review_state, limit=limit))


def _admins(gateway: Gateway) -> tuple[str, ...]:
    return tuple(p.id for p in gateway.policy.directory.people.values() if "admin" in p.roles)


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


__all__ = [
    "OVERRIDE_REFUSED",
    "OVERRIDE_REVIEWED",
    "OVERRIDE_USED",
    "OverrideRecord",
    "OverrideRefused",
    "OverrideResult",
    "find_ready",
    "list_overrides",
    "override",
    "release_by_override",
    "review",
]
