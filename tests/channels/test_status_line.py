"""The status line every channel shows: reminders and escalations say what happened."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from clearance.approvals.model import RoutingEntry
from clearance.approvals.records import StoredApproval
from clearance.channels.message import status_line
from clearance.directory import Directory, Person

from ..approvals.factories import new, two_stage

PEOPLE = Directory([Person("alice", "Alice Ng"), Person("dana", "Dana Kim")])


def _line(*log: RoutingEntry) -> str:
    approval = dataclasses.replace(new(two_stage()), routing_log=log)
    return status_line(StoredApproval(approval=approval), PEOPLE)


def test_a_plain_pending_request_just_waits() -> None:
    """Before any reminder: which stage it waits for."""
    assert _line() == "Waiting for manager (stage 1 of 2)"


def test_a_reminder_says_it_is_one() -> None:
    """A re-sent message starts with "Reminder:" and says since when it waits."""
    approval = new(two_stage())
    at = approval.created_at + timedelta(hours=1)
    line = _line(RoutingEntry("reminder", 0, 1, at, ("alice",)))
    since = approval.created_at.strftime("%H:%M")
    assert line == f"Reminder: still waiting since {since}. Waiting for manager (stage 1 of 2)"


def test_an_escalation_says_more_people_are_asked() -> None:
    """People reached by an escalation read why they got it; a reminder of another stage
    does not count."""
    approval = new(two_stage())
    at = approval.created_at + timedelta(hours=2)
    line = _line(
        RoutingEntry("reminder", 1, 1, at, ("dana",)),
        RoutingEntry("escalation", 0, 1, at, ("dana",)),
    )
    assert line.startswith("Escalated: nobody answered since")
    assert _line(RoutingEntry("reminder", 1, 1, at, ("dana",))).startswith("Waiting for")
