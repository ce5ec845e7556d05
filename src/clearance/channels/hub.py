"""The channels of one gateway: loaded from its settings, routed, dispatched, and the shared
handling of every callback (verify → dedupe → identify → decide → acknowledge)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, insert
from sqlalchemy.exc import IntegrityError

from .. import grants
from ..approvals.service import ApprovalError
from ..audit.entry import AuditDraft
from ..gateway import Gateway
from ..store.reads import read
from ..store.schema import channel_events
from . import tokens
from .base import CallbackRejected, Channel, Interaction, Outcome, Parsed, RawRequest
from .dispatcher import Dispatcher
from .message import build
from .registry import load_channel
from .routing import Router

log = structlog.get_logger("clearance.channels")
# Refusals of a vote that lacked a second factor or a location: answered with the inbox link.
STEP_UP_CODES = frozenset({"mfa_required", "context_required", "context_mismatch"})


class ChannelHub:
    def __init__(self, gateway: Gateway, channels: Mapping[str, Channel], public_url: str) -> None:
        self.gateway = gateway
        self.channels = dict(channels)
        self.public_url = public_url
        agent_events = {
            name: wants
            for name, channel in self.channels.items()
            if (wants := getattr(channel, "wants_agent", None)) is not None
        }
        self.router = Router(lambda: gateway.policy.directory, list(self.channels), agent_events)
        self.dispatcher = Dispatcher(gateway, self.channels, self.router, public_url)
        for channel in self.channels.values():
            attach = getattr(channel, "attach", None)
            if callable(attach):  # channels that read the store themselves (email's page)
                attach(gateway)
        gateway.approvals.in_transaction.append(self.router.on_change)
        gateway.on_alert.append(self.router.alert)
        gateway.approvals.on_change.append(lambda _s, _e: self.dispatcher.wake())
        gateway.on_check.append(lambda r: self.dispatcher.wake() if r.approval else None)

    @classmethod
    def from_settings(cls, gateway: Gateway) -> ChannelHub:
        settings = gateway.policy.settings
        server = settings.get("server") or {}
        public_url = str(server.get("public_url") or "http://127.0.0.1:8750")
        configured = settings.get("channels") or {}
        channels = {
            name: load_channel(name, conf or {}, public_url) for name, conf in configured.items()
        }
        return cls(gateway, channels, public_url)

    def background(self) -> list[Any]:
        """Coroutines to run beside the dispatcher: long polling for channels that poll
        (Telegram with `mode: polling`, for a gateway that has no public URL)."""
        out: list[Any] = []
        for name, channel in self.channels.items():
            run_polling = getattr(channel, "run_polling", None)
            if getattr(channel, "mode", None) == "polling" and callable(run_polling):
                out.append(run_polling(lambda raw, n=name: self.handle(n, raw)))
        return out

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()

    # -- callbacks -----------------------------------------------------------------------------
    async def handle(self, name: str, request: RawRequest) -> Parsed:
        """Verify and act on one callback; raises CallbackRejected (after auditing it)."""
        channel = self.channels[name]
        try:
            parsed = await channel.parse_callback(request)
        except CallbackRejected as exc:
            await self._audit_rejection(name, str(exc), request.received_at)
            raise
        reply = parsed.reply
        for interaction in parsed.interactions:
            outcome = await self._apply(name, interaction, request.received_at)
            try:
                answer = await channel.acknowledge(outcome)
            except Exception as exc:  # an answer that could not be shown changes nothing
                log.warning("acknowledge_failed", channel=name, error=repr(exc))
                continue
            if answer is not None:
                reply = answer
        return Parsed(parsed.interactions, reply)

    async def _apply(self, name: str, interaction: Interaction, now: datetime) -> Outcome:
        directory = self.gateway.policy.directory
        fresh = await self.gateway.writer.run(
            lambda tx: _first_time(tx.conn, name, interaction.event_id, now)
        )
        if not fresh:
            await self._audit_rejection(name, f"replayed event {interaction.event_id}", now)
            return Outcome(interaction, False, "This click was already handled.")
        approval_id = interaction.approval_id
        if interaction.token:
            info = await read(self.gateway.db, lambda c: tokens.lookup(c, interaction.token or ""))
            if info is None or info.channel != name:
                await self._audit_rejection(name, "unknown button token", now)
                return Outcome(interaction, False, "This button is not valid.")
            approval_id = info.approval_id
        person = directory.by_channel(name, interaction.user_id)
        if person is None:
            await self._audit_rejection(
                name, f"unknown {name} user {interaction.user_id!r}", now, approval_id
            )
            return Outcome(interaction, False, "You are not in Clearance's directory.")
        if not approval_id or interaction.decision not in ("approve", "deny", "always"):
            return Outcome(interaction, False, "Use: /approve <id> approve|deny|always [reason]")
        try:
            if interaction.decision == "always":  # approve, and grant the rule's scope
                stored, _ = await grants.approve_always(
                    self.gateway.approvals,
                    self.gateway.policy,
                    approval_id,
                    person=person.id,
                    comment=interaction.comment,
                    channel=name,
                )
            else:
                stored = await self.gateway.approvals.decide(
                    approval_id,
                    person=person.id,
                    decision=interaction.decision,
                    comment=interaction.comment,
                    channel=name,
                )
        except ApprovalError as exc:
            if exc.code in STEP_UP_CODES:  # this channel cannot carry the proof: link the inbox
                url = f"{self.public_url.rstrip('/')}/ui/approvals/{approval_id}"
                return Outcome(interaction, False, f"{exc.message}. Vote here: {url}")
            return Outcome(interaction, False, exc.message)
        message = build(stored, directory, public_url=self.public_url, recipient=person)
        return Outcome(interaction, True, message.status_line, message)

    async def _audit_rejection(
        self, name: str, reason: str, now: datetime, approval_id: str | None = None
    ) -> None:
        log.warning("callback_rejected", channel=name, reason=reason)
        draft = AuditDraft(
            kind="channel.rejected",
            ts=now,
            channel=name,
            approval_id=approval_id,
            data={"reason": reason[:500]},
        )
        await self.gateway.writer.append(draft)


def _first_time(conn: Connection, channel: str, event_id: str, now: datetime) -> bool:
    """Record a platform event id; False when it was seen before (a replay)."""
    savepoint = conn.begin_nested()
    try:
        conn.execute(
            insert(channel_events).values(channel=channel, event_id=event_id, received_at=now)
        )
    except IntegrityError:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True
