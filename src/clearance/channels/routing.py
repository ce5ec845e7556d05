"""Who gets which message through which channel: routes, and the work a change creates.

A person's routes are their directory channels, in the order written, that this gateway has
configured; then email, when configured and the person has an address. A stage's request goes
to each person it is routed to (`Approval.open_voters`: an approver not yet counted, or their
delegate when the delegate can fill their seat); every later change refreshes the messages
sent. A delegator whose delegate holds a seat of the same stage himself is routed to (and
sent the request) from the start: one person counts once, so he cannot fill both. A change
that routes her seat back to her later sends it to her then: a vote that leaves her delegate
needed for a later stage (`rerouted`), or an escalation that gives him a seat of his own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from ..approvals import escalation
from ..approvals.model import Approval, unique
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


def rerouted(approval: Approval) -> tuple[str, ...]:
    """Who the open stage is routed to after the approval's latest vote (cast on it: the
    stage did not change) and was not before it — the people that vote newly calls on."""
    if approval.current_stage is None or not approval.votes:
        return ()
    last = approval.votes[-1]
    if last.stage_index != approval.stage_index:
        return ()
    before = set(replace(approval, votes=approval.votes[:-1]).open_voters())
    return tuple(p for p in approval.open_voters() if p not in before)


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
        notify: tuple[str, ...] = ()
        if a.state.value == "pending" and ({"approval.created", "stage.started"} & set(events)):
            notify = a.open_voters()
        elif a.state.value == "pending":
            # a reminder or an escalation: its people again (see clearance.approvals.escalation)
            if ROUTING_EVENTS & set(events):
                reached = escalation.to_notify(a, now)
                # a delegate given a seat of his own no longer fills his delegator's
                notify = unique(
                    (*reached, *(p for p in a.open_voters() if a.delegate_of(p) in reached))
                )
            if "vote.recorded" in events:
                notify = unique((*notify, *rerouted(a)))
        for person in notify:
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
