"""The status line every channel shows: reminders and escalations say what happened."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from clearance.approvals import Approval
from clearance.approvals.model import RoutingEntry
from clearance.approvals.records import StoredApproval
from clearance.channels.message import status_line
from clearance.directory import Directory, Person

from ..approvals.factories import SOON, approve, new, plan, req, run, stage, two_stage

PEOPLE = Directory(
    [Person("alice", "Alice Ng"), Person("bob", "Bob Ortiz"), Person("dana", "Dana Kim")]
)


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


def _status(approval: Approval, *log: RoutingEntry) -> str:
    approval = dataclasses.replace(approval, routing_log=(*approval.routing_log, *log))
    return status_line(StoredApproval(approval=approval), PEOPLE)


def test_a_reminder_after_an_approval_still_says_it_is_one() -> None:
    """Stage 1 approved at 09:05, a stage-2 reminder at 10:05: the line says it is a reminder
    and counts from when stage 2 started (09:05), not from the request (09:00); an escalation
    likewise. A vote after the reminder is the news again."""
    a = run(new(two_stage()), approve("alice"))
    later = SOON + timedelta(hours=1)
    assert _status(a) == (
        "Approved by Alice Ng at 09:05 — stage 1 of 2 done; waiting for finance-director"
    )
    assert _status(a, RoutingEntry("reminder", 1, 1, later, ("dana",))) == (
        "Reminder: still waiting since 09:05. Waiting for finance-director (stage 2 of 2)"
    )
    assert _status(a, RoutingEntry("escalation", 1, 1, later, ("dana",))) == (
        "Escalated: nobody answered since 09:05, so more people are asked. "
        "Waiting for finance-director (stage 2 of 2)"
    )
    # a reminder of stage 1 (before alice approved) is old news
    assert _status(a, RoutingEntry("reminder", 0, 1, later, ("bob",))).startswith("Approved by")


def test_a_reminder_on_a_half_met_stage_counts_its_approvals() -> None:
    """Two of [alice, bob, dana] needed, alice approved: a reminder says 1 of 2 so far; an
    approval cast after the reminder is shown instead of it."""
    a = run(new(plan(stage("pair", req("alice", "bob", "dana", required=2)))), approve("alice"))
    reminder = RoutingEntry("reminder", 0, 1, SOON + timedelta(hours=1), ("bob", "dana"))
    assert _status(a, reminder) == (
        "Reminder: still waiting since 09:00. Waiting for pair (stage 1 of 1): "
        "1 of 2 approvals so far"
    )
    earlier = dataclasses.replace(reminder, at=SOON - timedelta(minutes=1))
    assert _status(a, earlier).startswith("Approved by Alice Ng at 09:05")


def test_an_approval_short_of_its_stage_is_not_a_stage_done() -> None:
    """1 of 2 approvals on a one-stage request: no "stage 0 of 1 done", but the count."""
    a = run(new(plan(stage("pair", req("alice", "bob", required=2)))), approve("alice"))
    assert _status(a) == "Approved by Alice Ng at 09:05 — 1 of 2 approvals for pair (stage 1 of 1)"


def test_a_delegates_approval_names_both() -> None:
    """bob approving for alice reads "Bob Ortiz for Alice Ng", pending and final."""
    a = new(plan(stage("manager", req("alice")), stage("fd", req("dana"))))
    a = dataclasses.replace(a, delegations=(("alice", "bob"),))
    after_bob = run(a, approve("bob"))
    assert _status(after_bob).startswith("Approved by Bob Ortiz for Alice Ng at 09:05 — stage 1")
    done = run(after_bob, approve("dana"))
    assert _status(done) == "Approved by Bob Ortiz for Alice Ng, Dana Kim at 09:05 — stage 2 of 2"
