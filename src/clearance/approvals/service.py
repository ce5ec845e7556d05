"""The approval service: the pure workflow, made durable and awaitable.

Every change is one unit of work in the audit writer's transaction: the approval row (with a
compare-and-set on its version), its votes and the audit entries describing the change commit
together or not at all. Waiting is event-driven: an in-process future per waiter, resolved
when a change to that approval commits; a read is the source of truth, so a waiter that
misses a wake-up (another process decided) still sees the outcome when its wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from ..audit.entry import AuditDraft, Kind
from ..audit.writer import AuditWriter, WriteTx
from ..identity import mfa
from ..store.database import Database
from ..store.reads import read
from . import jobs, records, workflow
from .model import Approval, ApprovalState, ExecutionState, Vote, VoteDecision
from .records import Conflict, StoredApproval

Clock = Callable[[], datetime]
InTransaction = Callable[[WriteTx, StoredApproval, tuple[str, ...], datetime], None]
# Further writes of one change, in its transaction, after the approval is saved (a standing
# grant, an override record); raising undoes the whole change.
AfterChange = Callable[[WriteTx, StoredApproval, datetime], None]
# (tx, the grant offer, grantor, the approved request, lifetime in seconds, now) → held?
GrantHold = Callable[[WriteTx, Any, str, StoredApproval, int, datetime], bool]


class ApprovalError(Exception):
    """A request the service refuses; `code` is stable, `message` is for people."""

    status = 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ApprovalNotFound(ApprovalError):
    status = 404

    def __init__(self, approval_id: str) -> None:
        super().__init__("not_found", f"no approval with id {approval_id!r}")


class VoteRefused(ApprovalError):
    """The workflow refused a vote (not eligible, self-approval, already decided, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = 403 if code in {"not_eligible", "self_approval", "already_counted"} else 409


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A refusal decided inside a unit of work that must still commit (its audit entry)."""

    error: ApprovalError
    stored: StoredApproval | None


class Waiters:
    """In-process futures keyed by approval id, resolved when that approval changes."""

    def __init__(self) -> None:
        self._futures: dict[str, set[asyncio.Future[None]]] = {}

    def register(self, approval_id: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(approval_id, set()).add(future)
        return future

    def discard(self, approval_id: str, future: asyncio.Future[None]) -> None:
        waiting = self._futures.get(approval_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._futures[approval_id]

    def wake(self, approval_id: str) -> None:
        for future in self._futures.pop(approval_id, ()):
            if not future.done():
                future.set_result(None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._futures.values())


class ApprovalService:
    """Create, read, decide, wait for, release and expire approvals."""

    MAX_RETRIES = 5

    def __init__(self, db: Database, writer: AuditWriter, *, clock: Clock) -> None:
        self.db = db
        self.writer = writer
        self.clock = clock
        self.waiters = Waiters()
        # After a change commits (metrics, wake-ups of dispatchers):
        self.on_change: list[Callable[[StoredApproval, tuple[str, ...]], None]] = []
        # Inside the change's transaction (queueing channel messages in the outbox):
        self.in_transaction: list[InTransaction] = []
        # The durable timer of reminders and escalations follows every change.
        self.in_transaction.append(_schedule_timer)
        # Second factors and approver location (`mfa:`, `require_context:`): the server sets
        # this from the policy's settings; the default has no encryption key and 300 s.
        self.mfa_settings: Callable[[], mfa.MfaSettings] = mfa.MfaSettings
        # Before a standing grant is created by an approval (clearance.grants): a hook that
        # returns True holds it back, in the same transaction (four eyes on long grants).
        self.grant_holds: list[GrantHold] = []

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, approval_id: str) -> StoredApproval:
        """The approval as it stands now: a pending one past its deadline is expired first."""
        stored = await self._read(approval_id)
        if (
            stored.approval.state is ApprovalState.PENDING
            and self.clock() >= stored.approval.expires_at
        ):
            return await self._expire(approval_id)
        return stored

    async def list(
        self, *, state: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[StoredApproval]:
        """Newest first: one query for the rows, one for their votes; overdue ones expired."""

        def fetch(conn: Connection) -> list[StoredApproval]:
            ids = records.list_ids(conn, state=state, agent=agent, limit=limit)
            return records.load_many(conn, ids)

        found = await read(self.db, fetch)
        now = self.clock()
        out = []
        for stored in found:
            overdue = (
                stored.approval.state is ApprovalState.PENDING and now >= stored.approval.expires_at
            )
            out.append(await self._expire(stored.approval.id) if overdue else stored)
        if state is not None:
            out = [s for s in out if s.approval.state.value == state]
        return out

    async def wait(self, approval_id: str, timeout: float) -> StoredApproval:
        """Return once the approval is decided, or after `timeout` seconds, whichever first.

        The wait also ends at the approval's deadline, so an expiry is seen at once.
        """
        stored = await self.get(approval_id)
        if stored.approval.is_final:
            return stored
        future = self.waiters.register(approval_id)
        try:
            stored = await self.get(approval_id)  # a change between the read and registering
            if stored.approval.is_final:
                return stored
            until_expiry = (stored.approval.expires_at - self.clock()).total_seconds()
            budget = max(0.0, min(timeout, until_expiry + 0.01))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), budget)
        finally:
            self.waiters.discard(approval_id, future)
        return await self.get(approval_id)

    # -- writes --------------------------------------------------------------------------------
    async def decide(
        self,
        approval_id: str,
        *,
        person: str,
        decision: str,
        comment: str | None = None,
        channel: str = "api",
        on_behalf_of: str | None = None,
        then: AfterChange | None = None,
        proof: mfa.VoteProof | None = None,
    ) -> StoredApproval:
        """Record one person's vote; the approval moves on when its stage is met. `then` runs
        in the same transaction when the vote changed the approval (see `apply`).

        `proof` is what the vote brings for a stage with `mfa:` or `require_context:` (a TOTP
        code, the inbox session, the approver's location): verified in the vote's own
        transaction (a code is used up there), and checked by the workflow; a vote without it
        is refused (`mfa_required`, `context_required`) and the refusal audited."""
        try:
            vote_decision = VoteDecision(decision)
        except ValueError:
            raise ApprovalError("invalid_decision", "decision must be approve or deny") from None
        comment = (comment or "").strip() or None
        established = mfa.Established()

        def prepare(conn: Connection, a: Approval, now: datetime) -> None:
            nonlocal established
            established = mfa.Established()
            stage = a.current_stage
            if stage is None or (stage.mfa is None and not stage.require_context):
                return
            try:
                established = mfa.establish(conn, person, stage, proof, now, self.mfa_settings())
            except mfa.MfaError as exc:
                raise workflow.VoteRejected(exc.code, exc.message) from None

        def step(a: Approval, now: datetime) -> workflow.Transition:
            vote = Vote(
                person=person,
                decision=vote_decision,
                stage_index=a.stage_index,
                at=now,
                comment=comment,
                channel=channel,
                on_behalf_of=on_behalf_of,
                factor=established.factor,
                geo=established.geo,
            )
            return workflow.cast_vote(a, vote, now)

        def refused_entry(
            stored: StoredApproval, exc: workflow.Rejected, now: datetime
        ) -> AuditDraft:
            return self.draft(
                Kind.VOTE + ".rejected",
                stored,
                now,
                approver=person,
                channel=channel,
                data={"code": exc.code, "reason": exc.message, "decision": decision},
            )

        return await self._change(
            approval_id, step, refused_entry, person=person, channel=channel, then=then,
            prepare=prepare,
        )  # fmt: skip

    async def apply(
        self,
        approval_id: str,
        step: Callable[[Approval, datetime], workflow.Transition],
        *,
        person: str | None = None,
        channel: str | None = None,
        then: AfterChange | None = None,
    ) -> StoredApproval:
        """Apply a pure `step` (e.g. an emergency override) as one unit of work: compare-and-set,
        audit entries of its events, the in-transaction hooks, and then `then(tx, after, now)`
        — all committed together, or none of it when any of them raises."""
        return await self._change(
            approval_id, step, None, person=person, channel=channel, then=then
        )

    async def release(
        self, approval_id: str, binding_hash: str, *, then: AfterChange | None = None
    ) -> StoredApproval:
        """The agent claims the approved call: only the exact call approved, only once.
        `then` writes more in the same transaction, once the release is saved."""
        return await self._change(
            approval_id, lambda a, now: workflow.release(a, binding_hash, now), None, then=then
        )

    async def report_result(
        self, approval_id: str, state: str, result: str | None = None
    ) -> StoredApproval:
        try:
            execution = ExecutionState(state)
        except ValueError:
            raise ApprovalError("invalid_state", "state must be succeeded or failed") from None
        return await self._change(
            approval_id, lambda a, now: workflow.record_result(a, execution, result, now), None
        )

    async def cancel(self, approval_id: str, reason: str, by: str | None = None) -> StoredApproval:
        return await self._change(
            approval_id, lambda a, now: workflow.cancel(a, now, reason), None, person=by
        )

    async def expire_due(self, limit: int = 500) -> int:
        """Expire every pending approval past its deadline (the scheduler's job)."""
        now = self.clock()
        due = await read(self.db, lambda c: records.due_for_expiry(c, now, limit))
        for approval_id in due:
            await self._expire(approval_id)
        return len(due)

    async def next_expiry(self) -> datetime | None:
        return await read(self.db, records.next_expiry)

    async def fire_due(self, worker: str, limit: int = 50) -> int:
        """Fire the reminders and escalations that are due (the scheduler's job; see
        `clearance.approvals.jobs`). Safe with several servers on one database: each timer is
        claimed by one, and each firing is a compare-and-set change of the approval."""
        now = self.clock()
        due = await self.writer.run(lambda tx: jobs.claim(tx.conn, worker, now, limit))
        for approval_id in due:
            after: StoredApproval | None
            try:
                after = await self._change(
                    approval_id, lambda a, at: workflow.remind_and_escalate(a, at), None
                )
            except ApprovalNotFound:
                after = None
            except ApprovalError:  # a conflict that kept losing: the lease runs out, retried
                continue
            await self.writer.run(_settle(after, approval_id, worker))
        return len(due)

    async def next_timer(self) -> datetime | None:
        """When the next reminder or escalation is due, across all approvals."""
        return await read(self.db, jobs.next_due)

    async def counts(self) -> dict[str, int]:
        return await read(self.db, records.count_by_state)

    # -- internals -----------------------------------------------------------------------------
    async def _read(self, approval_id: str) -> StoredApproval:
        stored = await read(self.db, lambda c: records.load(c, approval_id))
        if stored is None:
            raise ApprovalNotFound(approval_id)
        return stored

    async def _expire(self, approval_id: str) -> StoredApproval:
        return await self._change(approval_id, lambda a, now: workflow.expire(a, now), None)

    async def _change(
        self,
        approval_id: str,
        step: Callable[[Approval, datetime], workflow.Transition],
        refused_entry: Callable[[StoredApproval, workflow.Rejected, datetime], AuditDraft] | None,
        *,
        person: str | None = None,
        channel: str | None = None,
        then: AfterChange | None = None,
        prepare: Callable[[Connection, Approval, datetime], None] | None = None,
    ) -> StoredApproval:
        """Load, apply the pure step, save with compare-and-set and audit — one transaction.
        `prepare` runs first in the same transaction (verifying a vote's second factor) and
        may refuse with `workflow.Rejected`, audited like the step's own refusals."""
        events: tuple[str, ...] = ()

        def work(tx: WriteTx) -> StoredApproval | _Refusal:
            nonlocal events
            now = self.clock()
            stored = records.load(tx.conn, approval_id)
            if stored is None:
                return _Refusal(ApprovalNotFound(approval_id), None)
            try:
                if prepare is not None:
                    prepare(tx.conn, stored.approval, now)
                transition = step(stored.approval, now)
            except workflow.Rejected as exc:
                saved = stored
                if exc.transition is not None and exc.transition.changed:
                    saved = self._save(tx, stored, exc.transition, now, person, channel)
                    events = exc.transition.kinds
                if refused_entry is not None:
                    tx.audit(refused_entry(saved, exc, now))
                return _Refusal(VoteRefused(exc.code, exc.message), saved)
            if not transition.changed:
                return stored
            events = transition.kinds
            saved = self._save(tx, stored, transition, now, person, channel)
            if then is not None:
                then(tx, saved, now)
            return saved

        for attempt in range(self.MAX_RETRIES):
            try:
                outcome = await self.writer.run(work)
                break
            except Conflict:
                if attempt == self.MAX_RETRIES - 1:
                    raise ApprovalError(
                        "conflict", "the approval kept changing; try again"
                    ) from None
        if isinstance(outcome, _Refusal):
            if outcome.stored is not None and events:
                self._changed(outcome.stored, events)
            raise outcome.error
        if events:
            self._changed(outcome, events)
        return outcome

    def _save(
        self,
        tx: WriteTx,
        stored: StoredApproval,
        transition: workflow.Transition,
        now: datetime,
        person: str | None,
        channel: str | None,
    ) -> StoredApproval:
        records.save_transition(tx.conn, stored.approval, transition.approval)
        after = stored.replace(transition.approval)
        for event in transition.events:
            kind, data = _audit_kind(event, transition.approval)
            tx.audit(
                self.draft(
                    kind,
                    after,
                    now,
                    approver=event.person or (person if kind != Kind.APPROVAL_EXPIRED else None),
                    channel=channel,
                    data=data,
                )
            )
        for hook in self.in_transaction:
            hook(tx, after, transition.kinds, now)
        return after

    def _changed(self, stored: StoredApproval, events: tuple[str, ...]) -> None:
        if stored.approval.is_final or "approval.released" in events:
            self.waiters.wake(stored.approval.id)
        for listener in self.on_change:
            listener(stored, events)

    @staticmethod
    def draft(
        kind: str,
        stored: StoredApproval,
        now: datetime,
        *,
        approver: str | None = None,
        channel: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> AuditDraft:
        a = stored.approval
        return AuditDraft(
            kind=kind,
            ts=now,
            actor=a.requester or stored.agent,
            approver=approver,
            channel=channel,
            action=a.action,
            params_hash=stored.params_hash,
            effect=a.state.value,
            rule_ids=stored.rules,
            policy_version=stored.policy_version,
            approval_id=a.id,
            data=data or {},
        )


def _audit_kind(event: workflow.Event, approval: Approval) -> tuple[str, dict[str, Any]]:
    kind = event.kind.value
    data: dict[str, Any] = {"event": kind}
    if event.stage_index is not None:
        data["stage"] = event.stage_index
        data["stage_name"] = approval.plan.stages[event.stage_index].name
    if kind == "vote.recorded":
        vote = next((v for v in reversed(approval.votes) if v.person == event.person), None)
        if vote is not None:
            data.update(decision=vote.decision.value, comment=vote.comment)
            if vote.on_behalf_of:
                data["on_behalf_of"] = vote.on_behalf_of
                data["acting"] = vote.acting()
            if vote.factor:  # which second factor the vote came with (never the code)
                data["factor"] = vote.factor
            if vote.geo:
                data["approver_geo"] = vote.geo
        return Kind.VOTE, data
    if kind in {"approval.reminded", "approval.escalated"}:
        data.update(people=list(event.people), level=event.level)
        if kind == "approval.escalated":
            data["expires_at"] = approval.expires_at.isoformat()
        return kind, data
    if kind in {"approval.approved", "approval.denied"}:
        data["reason"] = approval.decided_reason
        return Kind.APPROVAL_DECIDED, data
    if kind == "approval.expired":
        return Kind.APPROVAL_EXPIRED, data
    if kind == "approval.cancelled":
        data["reason"] = approval.decided_reason
        return Kind.APPROVAL_CANCELLED, data
    if kind == "approval.released":
        return Kind.APPROVAL_RELEASED, data
    if kind == "execution.recorded":
        data.update(state=approval.execution_state, result=approval.execution_result)
        return Kind.EXECUTION_RESULT, data
    return kind, data


def _schedule_timer(
    tx: WriteTx, stored: StoredApproval, events: tuple[str, ...], now: datetime
) -> None:
    """Keep the approval's reminder/escalation timer in step, in the change's transaction."""
    jobs.schedule(tx.conn, stored.approval)


def _settle(
    after: StoredApproval | None, approval_id: str, worker: str
) -> Callable[[WriteTx], None]:
    approval = after.approval if after is not None else None
    return lambda tx: jobs.settle(tx.conn, approval, approval_id, worker)
