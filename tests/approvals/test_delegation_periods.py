"""Delegation periods: loops checked over the whole new period (scheduled delegations
included), a delegation not yet over replaced only when asked (and audited), and ending one
that is already over. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from clearance.audit.export import iter_entries
from clearance.audit.writer import AuditWriter
from clearance.delegation import (
    DelegationError,
    active_map,
    delegate_audited,
    get_delegation,
    list_delegations,
    set_delegation,
    undelegate_audited,
)
from clearance.policy import load_policy_text
from clearance.store.database import Database
from clearance.testing import FrozenClock

DIRECTORY = load_policy_text(
    """
version: 1
directory:
  people: [{id: alice}, {id: bob}, {id: carol}, {id: dana}, {id: erin}, {id: mike}, {id: zed}]
policies: {default: deny, rules: []}
"""
).directory
NOW = FrozenClock()()
DAY = timedelta(days=1)


def attempt(
    database: Database,
    delegator: str,
    delegate: str,
    until: datetime,
    start: datetime | None = None,
    *,
    replace: bool = True,
) -> str:
    try:
        with database.begin() as conn:
            if replace:  # the default
                set_delegation(
                    conn, DIRECTORY, delegator=delegator, delegate=delegate, until=until,
                    now=NOW, starts_at=start,
                )  # fmt: skip
            else:
                set_delegation(
                    conn, DIRECTORY, delegator=delegator, delegate=delegate, until=until,
                    now=NOW, starts_at=start, replace=False,
                )  # fmt: skip
    except DelegationError as exc:
        return f"{exc.code}: {exc.message}"
    return "ok"


def test_a_scheduled_delegation_closes_a_loop(database: Database) -> None:
    """dana → erin from tomorrow, then erin → dana from now: at tomorrow they would loop,
    so the second is refused, saying from when. erin → dana ending before dana's starts is
    fine, and so is the reverse order."""
    assert attempt(database, "dana", "erin", NOW + 30 * DAY, NOW + DAY) == "ok"
    refused = attempt(database, "erin", "dana", NOW + 30 * DAY)
    assert refused.startswith("delegation_loop: this would make a loop (erin → dana → erin)")
    assert "from 2026-11-25 14:00 UTC" in refused
    assert attempt(database, "erin", "dana", NOW + DAY) == "ok"  # over when dana's starts
    with database.connect() as conn:
        assert active_map(conn, NOW) == {"erin": "dana"}
        assert active_map(conn, NOW + DAY) == {"dana": "erin"}


def test_a_loop_through_a_chain_of_scheduled_delegations(database: Database) -> None:
    """alice → bob (days 2–5) and bob → carol (days 3–10): carol → alice now until day 4
    would loop on day 3; until day 3 it never meets bob → carol and is accepted."""
    assert attempt(database, "alice", "bob", NOW + 5 * DAY, NOW + 2 * DAY) == "ok"
    assert attempt(database, "bob", "carol", NOW + 10 * DAY, NOW + 3 * DAY) == "ok"
    refused = attempt(database, "carol", "alice", NOW + 4 * DAY)
    assert refused.startswith("delegation_loop: this would make a loop (carol → alice → bob")
    assert attempt(database, "carol", "alice", NOW + 3 * DAY) == "ok"


def test_a_delegation_not_yet_over_is_replaced_only_when_asked(database: Database) -> None:
    """mike → zed until next month; a later mike → erin for a few days is refused without
    `replace`, naming the current delegate and its end; mike → zed is still there."""
    assert attempt(database, "mike", "zed", NOW + 30 * DAY) == "ok"
    refused = attempt(database, "mike", "erin", NOW + 30 * DAY, NOW + 26 * DAY, replace=False)
    assert refused == (
        "already_delegated: mike already has a delegate: zed until 2026-12-24 14:00 UTC"
    )
    with database.connect() as conn:
        kept = get_delegation(conn, "mike")
    assert kept is not None and kept.delegate == "zed"
    # a delegation already over is no obstacle
    with database.begin() as conn:
        set_delegation(
            conn, DIRECTORY, delegator="dana", delegate="erin", until=NOW - DAY,
            now=NOW - 2 * DAY,
        )  # fmt: skip
    assert attempt(database, "dana", "erin", NOW + DAY, replace=False) == "ok"


async def test_replacing_and_ending_are_audited_and_an_ended_one_is_left_alone(
    database: Database,
) -> None:
    """A replacement is audited: `delegation.cleared` for the old one (`replaced_by`), then
    `delegation.set` naming it (`replaces`). Ending a delegation already over returns None,
    audits nothing and leaves it listed in the history."""
    writer = AuditWriter(database)

    def name(delegate: str, until: datetime, start: datetime | None, replace: bool):  # type: ignore[no-untyped-def]
        return lambda tx: delegate_audited(
            tx, DIRECTORY, delegator="mike", delegate=delegate, until=until, now=NOW,
            by="ops", channel="cli", starts_at=start, replace=replace,
        )  # fmt: skip

    await writer.run(name("zed", NOW + 30 * DAY, None, False))
    with pytest.raises(DelegationError) as info:
        await writer.run(name("erin", NOW + 30 * DAY, NOW + 26 * DAY, False))
    assert info.value.code == "already_delegated"
    await writer.run(name("erin", NOW + 30 * DAY, NOW + 26 * DAY, True))
    entries = [e for e in iter_entries(database) if e.kind.startswith("delegation")]
    assert [(e.kind, e.approver) for e in entries] == [
        ("delegation.set", "zed"),
        ("delegation.cleared", "zed"),
        ("delegation.set", "erin"),
    ]
    assert entries[1].data["replaced_by"] == "erin"
    assert entries[2].data["replaces"]["delegate"] == "zed"

    with database.begin() as conn:
        set_delegation(
            conn, DIRECTORY, delegator="dana", delegate="erin", until=NOW - DAY,
            now=NOW - 2 * DAY,
        )  # fmt: skip
    ended = await writer.run(
        lambda tx: undelegate_audited(tx, delegator="dana", now=NOW, by="ops", channel="cli")
    )
    assert ended is None
    await writer.aclose()
    kinds = [e.kind for e in iter_entries(database) if e.kind.startswith("delegation")]
    assert len(kinds) == 3
    with database.connect() as conn:
        assert [d.delegator for d in list_delegations(conn)] == ["dana", "mike"]


def test_two_servers_cannot_close_a_loop_at_once(pg_migrated_url: str) -> None:
    """alice → bob on one instance and bob → alice on another, at the same moment: each alone
    finds no loop in what the other has not committed yet, so the second waits for the first
    (a transaction-scoped advisory lock) and is then refused. On SQLite the writer's
    BEGIN IMMEDIATE serialises them the same way."""
    import threading
    import time

    from clearance.store.database import open_database

    first_db, second_db = open_database(pg_migrated_url), open_database(pg_migrated_url)
    outcome: list[str] = []
    try:
        with first_db.begin() as first:
            set_delegation(
                first, DIRECTORY, delegator="alice", delegate="bob", until=NOW + DAY, now=NOW
            )
            worker = threading.Thread(
                target=lambda: outcome.append(attempt(second_db, "bob", "alice", NOW + DAY))
            )
            worker.start()
            time.sleep(0.5)  # the other instance reads the delegations while this one is open
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert len(outcome) == 1
        assert outcome[0].startswith("delegation_loop: this would make a loop (bob → alice → bob)")
        with first_db.connect() as conn:
            assert active_map(conn, NOW) == {"alice": "bob"}
    finally:
        first_db.dispose()
        second_db.dispose()


def test_two_servers_replacing_one_delegation_audit_what_each_replaced(
    pg_migrated_url: str,
) -> None:
    """mike → zed; one instance replaces it with erin while another replaces it with carol.
    The second waits for the first, so its audit says it replaced erin's (the delegation it
    really ended), not zed's, which the first had already replaced and audited."""
    import threading

    from clearance.store.database import open_database

    first_db, second_db = open_database(pg_migrated_url), open_database(pg_migrated_url)
    first, second = AuditWriter(first_db, "one"), AuditWriter(second_db, "two")
    opened = threading.Event()

    def name(delegate: str, hold: bool = False):  # type: ignore[no-untyped-def]
        def work(tx):  # type: ignore[no-untyped-def]
            made = delegate_audited(
                tx, DIRECTORY, delegator="mike", delegate=delegate, until=NOW + 30 * DAY,
                now=NOW, by="ops", channel="cli", replace=True,
            )  # fmt: skip
            if hold:  # the other instance starts while this transaction is open
                opened.set()
                threading.Event().wait(0.5)
            return made

        return work

    try:
        first.run_sync(name("zed"))
        other = threading.Thread(target=lambda: (opened.wait(10), second.run_sync(name("carol"))))
        other.start()
        first.run_sync(name("erin", hold=True))
        other.join(timeout=30)
        assert not other.is_alive()
        sets = [
            (e.chain_id, e.approver, (e.data.get("replaces") or {}).get("delegate"))
            for e in iter_entries(first_db)
            if e.kind == "delegation.set"
        ]
        assert sorted(sets, key=str) == sorted(
            [("one", "zed", None), ("one", "erin", "zed"), ("two", "carol", "erin")], key=str
        )
    finally:
        first.close()
        second.close()
        first_db.dispose()
        second_db.dispose()
