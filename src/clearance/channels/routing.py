"""Who gets which message through which channel: routes, and the work a change creates.

A person's routes are their directory channels, in the order written, that this gateway has
configured; then email, when configured and the person has an address. A stage's request goes
to each person who may still vote on it; every later change refreshes the messages sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from ..approvals import escalation
from ..approvals.records import StoredApproval
from ..audit.writer import WriteTx
from ..directory import Directory, Person
from . import outbox

CHANGE_EVENTS = frozenset(
    {
        "vote.recorded",
        "stage.completed",
        "approval.approved",
        "approval.denied",
        "approval.expired",
        "approval.cancelled",
    }
)


ROUTING_EVENTS = frozenset({"approval.reminded", "approval.escalated"})


FINAL_EVENTS = frozenset(
    {"approval.approved", "approval.denied", "approval.expired", "approval.cancelled"}
)


class Router:
    def __init__(
        self,
        directory: Callable[[], Directory],
        configured: Sequence[str],
        agent_events: Mapping[str, Callable[[str | None], bool]] | None = None,
    ) -> None:
        self._directory = directory
        self.configured = tuple(configured)
        # channel name → whether it reports an agent's decided requests (webhook `agents:`)
        self.agent_events = dict(agent_events or {})

    def routes(self, person: Person) -> list[tuple[str, str]]:
        """(channel, address) pairs to try, best first."""
        out: list[tuple[str, str]] = []
        for channel, address in person.channels:
            if channel in self.configured and channel != "email":
                out.append((channel, address))
        if "email" in self.configured and person.email:
            out.append(("email", person.email))
        return out

    def on_change(
        self, tx: WriteTx, stored: StoredApproval, events: tuple[str, ...], now: datetime
    ) -> None:
        """Queue the messages a change calls for, in the change's own transaction."""
        if not self.configured:
            return
        a = stored.approval
        if a.state.value == "pending" and ({"approval.created", "stage.started"} & set(events)):
            for person in a.open_voters():
                outbox.enqueue(
                    tx.conn,
                    kind="notify",
                    now=now,
                    approval_id=a.id,
                    recipient=person,
                    payload={"stage": a.stage_index, "route": 0},
                )
        elif a.state.value == "pending" and (ROUTING_EVENTS & set(events)):
            # a reminder or an escalation: its people again (see clearance.approvals.escalation)
            for person in escalation.to_notify(a, now):
                outbox.enqueue(
                    tx.conn,
                    kind="notify",
                    now=now,
                    approval_id=a.id,
                    recipient=person,
                    payload={"stage": a.stage_index, "route": 0},
                )
        if CHANGE_EVENTS & set(events):
            outbox.enqueue(tx.conn, kind="update", now=now, approval_id=a.id)
        if FINAL_EVENTS & set(events):
            for name, wants in self.agent_events.items():
                if wants(stored.agent):
                    outbox.enqueue(
                        tx.conn,
                        kind="agent_event",
                        now=now,
                        approval_id=a.id,
                        payload={"channel": name},
                    )

    def alert(
        self, tx: WriteTx, people: Sequence[str], payload: dict[str, object], now: datetime
    ) -> None:
        """Queue a security alert (a blocked action) to each person: on their first channel that
        works, or with `every_channel` in the payload (an emergency override) on every one."""
        if not self.configured:
            return
        for person in people:
            if payload.get("every_channel"):
                found = self._directory().get(person)
                for i in range(len(self.routes(found)) if found else 0):
                    outbox.enqueue(
                        tx.conn,
                        kind="alert",
                        now=now,
                        recipient=person,
                        payload={**payload, "route": i},
                    )
                continue
            outbox.enqueue(
                tx.conn, kind="alert", now=now, recipient=person, payload={**payload, "route": 0}
            )
