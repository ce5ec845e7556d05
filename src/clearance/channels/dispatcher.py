"""The dispatcher: takes jobs from the outbox and talks to the channels.

- `notify`: send one person the request through their route number `route`; on repeated
  failure, fall back to their next route (ending with email), and when a stage has nobody
  left to reach, say so at once: audit it, log it, show it on the request.
- `update`: refresh every message sent for a request after it changed.
- `alert`: tell a security person that an action was blocked (or an override was used),
  recovered after a crash the same way as a request (below).

A job is done (`sent_at`) only after the platform accepted it and the delivery is recorded in
the same transaction, so a crash after the platform's answer but before our commit is the
only window in which a message can go out twice. To close it where the platform allows, the
dispatcher notes each attempt in the job (committed before the platform is called) and gives
the channel a stable `Message.delivery_id`. A job found with an attempt whose outcome is
unknown (a crash, a timeout) is recovered by platform: Discord sends it as an enforced nonce
(a repeat returns the first message), the webhook as `webhook-id`; Slack attaches it as
message metadata and `find_sent` looks it up in the conversation's history before posting
again; Teams, Telegram, WhatsApp and email have neither, so the request is sent again with
`RESENT_NOTE` in its status (both copies' buttons work; only the new one is kept updated).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from ..approvals.records import StoredApproval
from ..approvals.service import ApprovalNotFound, ApprovalService
from ..audit.entry import AuditDraft
from ..audit.writer import WriteTx
from ..gateway import Gateway
from ..store.reads import read
from . import deliveries, outbox, tokens
from .base import RESENT_NOTE, Channel, ChannelError, Message, Sent, StageView
from .message import build
from .routing import Router

log = structlog.get_logger("clearance.channels")

MAX_ATTEMPTS = 4
BACKOFF_S = (1.0, 5.0, 30.0, 120.0)
IDLE_SLEEP_S = 30.0


class Dispatcher:
    def __init__(
        self,
        gateway: Gateway,
        channels: Mapping[str, Channel],
        router: Router,
        public_url: str,
        *,
        worker: str | None = None,
    ) -> None:
        self.gateway = gateway
        self.channels = dict(channels)
        self.router = router
        self.public_url = public_url
        self.worker = worker or f"{os.getpid()}-{secrets.token_hex(3)}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: process due jobs, then sleep until the next is due or someone wakes us."""
        while True:
            try:
                busy = await self.run_once()
            except Exception as exc:  # the database may be away: keep going
                log.warning("dispatcher_error", error=repr(exc))
                busy = False
            if busy:
                continue
            delay = IDLE_SLEEP_S
            with contextlib.suppress(Exception):
                due = await self._next_due()
                if due is not None:
                    delay = min(delay, max(0.0, (due - self.gateway.clock()).total_seconds()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay + 0.01)

    async def run_once(self, limit: int = 20) -> bool:
        """Process the jobs due now; True when there were any."""
        now = self.gateway.clock()
        jobs = await self.gateway.writer.run(
            lambda tx: outbox.claim(tx.conn, self.worker, now, limit)
        )
        for job in jobs:
            try:
                await self._process(job)
            except Exception as exc:
                log.error("job_failed", job=job.id, kind=job.kind, error=repr(exc))
                await self._retry(job, f"internal error: {exc!r}")
        return bool(jobs)

    async def _next_due(self) -> datetime | None:
        return await read(self.gateway.db, outbox.next_due)

    # -- jobs ----------------------------------------------------------------------------------
    async def _process(self, job: outbox.Job) -> None:
        if job.kind == "notify":
            await self._notify(job)
        elif job.kind == "update":
            await self._update(job)
        elif job.kind == "alert":
            await self._alert(job)
        elif job.kind == "agent_event":
            await self._agent_event(job)
        else:
            await self._done(job)

    async def _agent_event(self, job: outbox.Job) -> None:
        """Tell the agent's system its request was decided (webhook `agents:`)."""
        channel = self.channels.get(str(job.payload.get("channel")))
        send = getattr(channel, "send_agent_event", None)
        try:
            stored = await self.gateway.approvals.get(job.approval_id or "")
        except ApprovalNotFound:
            stored = None
        if send is None or stored is None:
            await self._done(job)
            return
        from ..server.schemas import approval_out  # the API's shape; imported late (layers)

        approval = approval_out(stored, self.gateway.policy.directory).model_dump(mode="json")
        try:
            await send(approval)
        except ChannelError as exc:
            if exc.retry and job.attempts + 1 < MAX_ATTEMPTS:
                await self._retry(job, str(exc))
                return
            log.error("agent_event_failed", approval=stored.approval.id, error=str(exc))
        await self._done(job)

    async def _notify(self, job: outbox.Job) -> None:
        directory = self.gateway.policy.directory
        try:
            stored = await self.gateway.approvals.get(job.approval_id or "")
        except ApprovalNotFound:
            await self._done(job)
            return
        a = stored.approval
        stage = int(job.payload.get("stage", 0))
        person = directory.get(job.recipient or "")
        if a.state.value != "pending" or a.stage_index != stage or person is None:
            await self._done(job)  # moved on: nothing to send any more
            return
        routes = self.router.routes(person)
        route = int(job.payload.get("route", 0))
        if route >= len(routes):
            await self._unroutable(job, stored, person.id, stage)
            return
        channel_name, address = routes[route]
        channel = self.channels[channel_name]
        now = self.gateway.clock()
        token = await self.gateway.writer.run(
            lambda tx: tokens.issue(
                tx.conn,
                approval_id=a.id,
                person=person.id,
                channel=channel_name,
                now=now,
                expires_at=a.expires_at,
            )
        )
        attempt = job.payload.get("attempt") or {}
        earlier = _when(attempt.get("at"))
        message = replace(
            build(stored, directory, public_url=self.public_url, recipient=person, token=token),
            delivery_id=delivery_id(a.id, stage, person.id, channel_name),
            earlier_attempt_at=earlier,
        )
        recovered = False
        if earlier is not None:
            # An earlier attempt may have reached the platform (we crashed, or its answer was
            # lost): where the platform can tell, look for it before sending again.
            found, failed = await self._find_sent(channel, message, address, earlier)
            if failed is not None and job.attempts + 1 < MAX_ATTEMPTS:
                await self._retry(job, failed)
                return  # (after that, send: a possible duplicate beats no request at all)
            if found is not None:
                await self._record_sent(job, stored, person.id, channel_name, stage, found, True)
                return
            recovered = bool(attempt.get("open"))
            window = float(getattr(channel, "dedupes_sends_within", 0.0))
            if recovered and (now - earlier).total_seconds() >= window:
                message = replace(message, status_line=message.status_line + RESENT_NOTE)
        # Note the attempt before calling the platform: a crash from here on leaves the job
        # marked as possibly delivered, and its recovery looks before it sends again.
        started = {"at": (earlier or now).isoformat(), "open": True}
        payload = {**job.payload, "attempt": started}
        await self.gateway.writer.run(lambda tx: outbox.set_payload(tx.conn, job.id, payload))
        job = replace(job, payload=payload)
        try:
            sent = await channel.send(message, address)
        except ChannelError as exc:
            # The platform answered (unless it timed out): this attempt did not deliver.
            settled = {**payload, "attempt": {**started, "open": exc.uncertain}}
            await self._send_failed(
                replace(job, payload=settled),
                stored,
                person.id,
                channel_name,
                stage,
                str(exc),
                exc.retry,
            )
            return
        await self._record_sent(job, stored, person.id, channel_name, stage, sent, recovered)

    async def _find_sent(
        self, channel: Channel, message: Message, address: str, since: datetime
    ) -> tuple[Sent | None, str | None]:
        """(what the platform says was sent, None), or (None, an error worth retrying)."""
        find = getattr(channel, "find_sent", None)
        if not callable(find):
            return None, None
        try:
            found = await find(message, address, since)
        except ChannelError as exc:
            if exc.retry:
                return None, f"looking for an earlier attempt: {exc}"
            log.warning("find_sent_failed", channel=channel.name, error=str(exc))
            return None, None  # cannot look (a missing scope): send, marked as a re-send
        return (found if isinstance(found, Sent) else None), None

    async def _record_sent(
        self,
        job: outbox.Job,
        stored: StoredApproval,
        person: str,
        channel_name: str,
        stage: int,
        sent: Sent,
        recovered: bool,
    ) -> None:
        done_at = self.gateway.clock()
        route = int(job.payload.get("route", 0))
        data: dict[str, Any] = {"stage": stage, "route": route}
        if recovered:
            data["after_interrupted_attempt"] = True

        def record(tx: WriteTx) -> None:
            deliveries.record(
                tx.conn,
                approval_id=stored.approval.id,
                person=person,
                channel=channel_name,
                stage_index=stage,
                status="sent",
                now=done_at,
                message_ref=sent.ref,
                attempts=job.attempts + 1,
            )
            outbox.complete(tx.conn, job.id, done_at)
            tx.audit(self._draft("delivery.sent", stored, done_at, person, channel_name, data))

        await self.gateway.writer.run(record)

    async def _send_failed(
        self,
        job: outbox.Job,
        stored: StoredApproval,
        person: str,
        channel: str,
        stage: int,
        error: str,
        retry: bool,
    ) -> None:
        if retry and job.attempts + 1 < MAX_ATTEMPTS:
            await self._retry(job, error, job.payload)
            return
        now = self.gateway.clock()
        route = int(job.payload.get("route", 0))

        def give_up(tx: WriteTx) -> None:
            deliveries.record(
                tx.conn,
                approval_id=stored.approval.id,
                person=person,
                channel=channel,
                stage_index=stage,
                status="failed",
                now=now,
                attempts=job.attempts + 1,
                error=error,
            )
            outbox.complete(tx.conn, job.id, now)
            tx.audit(
                self._draft(
                    "delivery.failed",
                    stored,
                    now,
                    person,
                    channel,
                    {"stage": stage, "error": error[:500], "route": route},
                )
            )
            outbox.enqueue(
                tx.conn,
                kind="notify",
                now=now,
                approval_id=stored.approval.id,
                recipient=person,
                payload={"stage": stage, "route": route + 1},
            )

        log.warning(
            "delivery_failed",
            approval=stored.approval.id,
            person=person,
            channel=channel,
            error=error,
        )
        await self.gateway.writer.run(give_up)

    async def _unroutable(
        self, job: outbox.Job, stored: StoredApproval, person: str, stage: int
    ) -> None:
        """Nobody could reach `person`. If nobody in the stage can be reached, say so loudly."""
        now = self.gateway.clock()
        sent = await read(self.gateway.db, lambda c: deliveries.for_approval(c, stored.approval.id))
        reachable = {d.person for d in sent if d.status == "sent" and d.stage_index == stage}
        data: dict[str, Any] = {"stage": stage, "person": person}
        kind = "delivery.unreachable"
        if not reachable:
            waiting = await read(
                self.gateway.db, lambda c: _other_jobs(c, stored.approval.id, job.id)
            )
            if not waiting:
                kind = "delivery.no_route"
                data["message"] = (
                    "no approver of this stage could be reached on any channel; decide in the "
                    "web inbox or fix the channel settings"
                )
                log.error("no_route", approval=stored.approval.id, stage=stage)

        def record(tx: WriteTx) -> None:
            outbox.complete(tx.conn, job.id, now)
            tx.audit(self._draft(kind, stored, now, person, None, data))

        await self.gateway.writer.run(record)

    async def _update(self, job: outbox.Job) -> None:
        directory = self.gateway.policy.directory
        try:
            stored = await self.gateway.approvals.get(job.approval_id or "")
        except ApprovalNotFound:
            await self._done(job)
            return
        sent = await read(self.gateway.db, lambda c: deliveries.for_approval(c, stored.approval.id))
        errors: list[str] = []
        for delivery in sent:
            if delivery.status != "sent" or delivery.message_ref is None:
                continue
            channel = self.channels.get(delivery.channel)
            person = directory.get(delivery.person)
            if channel is None or person is None:
                continue
            token = None
            if stored.approval.state.value == "pending" and stored.approval.pending_on(person.id):
                token = await self._token(stored, person.id, delivery.channel)
            message = build(
                stored, directory, public_url=self.public_url, recipient=person, token=token
            )
            try:
                await channel.update(delivery.message_ref, message)
            except ChannelError as exc:
                errors.append(f"{delivery.channel}/{delivery.person}: {exc}")
        if errors and job.attempts + 1 < MAX_ATTEMPTS:
            await self._retry(job, "; ".join(errors))
            return
        await self._done(job)

    async def _alert(self, job: outbox.Job) -> None:
        person = self.gateway.policy.directory.get(job.recipient or "")
        routes = self.router.routes(person) if person else []
        route = int(job.payload.get("route", 0))
        if person is None or route >= len(routes):
            await self._done(job)
            return
        channel_name, address = routes[route]
        text = str(job.payload.get("text") or "") or (  # an override alert brings its own
            f"BLOCKED: {job.payload.get('action')} requested by "
            f"{job.payload.get('requester') or job.payload.get('agent') or 'an agent'}. "
            + " ".join(str(r) for r in job.payload.get("reasons", []))
        )
        message = Message(
            approval_id=str(job.payload.get("decision_id", "")),
            action=str(job.payload.get("action")),
            params={},
            reasons=tuple(str(r) for r in job.payload.get("reasons", [])),
            requester=_text(job.payload.get("requester")),
            agent=_text(job.payload.get("agent")),
            stage=_NO_STAGE,
            expires_at=self.gateway.clock(),
            state="blocked",
            alert_kind="override" if job.payload.get("kind") == "override" else "blocked",
            status_line=text,
            inbox_url=f"{self.public_url.rstrip('/')}/ui",
            recipient=person,
            delivery_id=delivery_id(f"alert:{job.id}", -1, person.id, channel_name),
        )
        channel = self.channels[channel_name]
        # As for requests (see `_notify`): an earlier attempt that may have reached the
        # platform is looked for, or deduped, before the alert is sent again.
        attempt = job.payload.get("attempt") or {}
        earlier = _when(attempt.get("at"))
        now = self.gateway.clock()
        if earlier is not None:
            message = replace(message, earlier_attempt_at=earlier)
            found, failed = await self._find_sent(channel, message, address, earlier)
            if failed is not None and job.attempts + 1 < MAX_ATTEMPTS:
                await self._retry(job, failed)
                return
            if found is not None:
                await self._done(job)
                return
            window = float(getattr(channel, "dedupes_sends_within", 0.0))
            if attempt.get("open") and (now - earlier).total_seconds() >= window:
                message = replace(message, status_line=message.status_line + RESENT_NOTE)
        started = {"at": (earlier or now).isoformat(), "open": True}
        payload = {**job.payload, "attempt": started}
        await self.gateway.writer.run(lambda tx: outbox.set_payload(tx.conn, job.id, payload))
        try:
            await channel.send(message, address)
        except ChannelError as exc:
            if exc.retry and job.attempts + 1 < MAX_ATTEMPTS:
                settled = {**payload, "attempt": {**started, "open": exc.uncertain}}
                await self._retry(job, str(exc), settled)
                return
            if job.payload.get("every_channel"):  # each channel has a job of its own
                await self._done(job)
                return
            now = self.gateway.clock()

            def fallback(tx: WriteTx) -> None:
                outbox.complete(tx.conn, job.id, now)
                nxt = {k: v for k, v in job.payload.items() if k != "attempt"}
                outbox.enqueue(
                    tx.conn,
                    kind="alert",
                    now=now,
                    recipient=person.id,
                    payload={**nxt, "route": route + 1},
                )

            await self.gateway.writer.run(fallback)
            return
        await self._done(job)

    # -- helpers -------------------------------------------------------------------------------
    async def _token(self, stored: StoredApproval, person: str, channel: str) -> str:
        now = self.gateway.clock()
        a = stored.approval

        def issue(tx: WriteTx) -> str:
            return tokens.issue(
                tx.conn,
                approval_id=a.id,
                person=person,
                channel=channel,
                now=now,
                expires_at=a.expires_at,
            )

        return await self.gateway.writer.run(issue)

    async def _done(self, job: outbox.Job) -> None:
        now = self.gateway.clock()
        await self.gateway.writer.run(lambda tx: outbox.complete(tx.conn, job.id, now))

    async def _retry(
        self, job: outbox.Job, error: str, payload: dict[str, Any] | None = None
    ) -> None:
        delay = BACKOFF_S[min(job.attempts, len(BACKOFF_S) - 1)]
        at = self.gateway.clock() + timedelta(seconds=delay)
        await self.gateway.writer.run(
            lambda tx: outbox.retry_later(tx.conn, job.id, error, at, payload)
        )

    @staticmethod
    def _draft(
        kind: str,
        stored: StoredApproval,
        now: datetime,
        person: str | None,
        channel: str | None,
        data: dict[str, Any],
    ) -> AuditDraft:
        return ApprovalService.draft(kind, stored, now, approver=person, channel=channel, data=data)


def _other_jobs(conn: Any, approval_id: str, job_id: int) -> bool:
    from sqlalchemy import and_, select

    from ..store.schema import outbox as table

    row = conn.execute(
        select(table.c.id).where(
            and_(
                table.c.approval_id == approval_id,
                table.c.kind == "notify",
                table.c.sent_at.is_(None),
                table.c.id != job_id,
            )
        )
    ).first()
    return row is not None


_NO_STAGE = StageView(0, "alert", 1)


def delivery_id(approval_id: str, stage: int, person: str, channel: str) -> str:
    """The stable id of one delivery (24 characters: fits Discord's 25-character nonce)."""
    seed = f"{approval_id}\x00{stage}\x00{person}\x00{channel}"
    return "d" + hashlib.sha256(seed.encode()).hexdigest()[:23]


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return None if value is None else str(value)
