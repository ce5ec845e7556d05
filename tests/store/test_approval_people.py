"""The index of who may vote on what: kept on create and on change, backfilled by its
migration, and what the inbox reads (so no pending request falls out of view)."""

from __future__ import annotations

import dataclasses

from alembic import command
from sqlalchemy import insert, select

from clearance.approvals.records import (
    StoredApproval,
    approval_values,
    ids_for_person,
    insert_approval,
    save_transition,
)
from clearance.policy.model import ResolvedRequirement
from clearance.store.database import Database, open_database
from clearance.store.migrations import alembic_config
from clearance.store.schema import approval_people, approvals

from ..approvals.factories import new, plan, req, stage, two_stage


def _people(database: Database, approval_id: str) -> set[str]:
    with database.connect() as conn:
        rows = conn.execute(
            select(approval_people.c.person_id).where(approval_people.c.approval_id == approval_id)
        ).scalars()
        return set(rows)


def test_creating_and_escalating_keep_the_index(database: Database) -> None:
    """Everyone of every stage is indexed at creation; people an escalation adds, and the
    rest of a picked group, join when the plan changes."""
    approval = new(plan(stage("manager", ResolvedRequirement(("alice",), 1, ("bob",)))))
    with database.connect() as conn, conn.begin():
        insert_approval(conn, StoredApproval(approval=approval))
    assert _people(database, approval.id) == {"alice", "bob"}
    wider = plan(stage("manager", req("alice", "bob", "dana")))
    after = dataclasses.replace(approval, plan=wider, version=approval.version + 1)
    with database.connect() as conn, conn.begin():
        save_transition(conn, approval, after)
    assert _people(database, approval.id) == {"alice", "bob", "dana"}
    with database.connect() as conn:
        assert ids_for_person(conn, "dana", 10) == [approval.id]
        assert ids_for_person(conn, "erin", 10) == []


def test_a_request_behind_many_newer_ones_is_still_found(database: Database) -> None:
    """Alice's one old request is found behind 600 newer pending ones for other people."""
    old = new(two_stage())
    with database.connect() as conn, conn.begin():
        insert_approval(conn, StoredApproval(approval=old))
        for i in range(600):
            other = dataclasses.replace(
                new(plan(stage("clinical", req("grace")))),
                id=f"apr_n{i}",
                created_at=old.created_at.replace(microsecond=i + 1),
            )
            insert_approval(conn, StoredApproval(approval=other))
    with database.connect() as conn:
        assert ids_for_person(conn, "alice", 500) == [old.id]
        assert len(ids_for_person(conn, "grace", 500)) == 500


def test_the_migration_backfills_stored_approvals(tmp_path: object) -> None:
    """Approvals stored before the index existed are indexed by its migration."""
    db = open_database(f"sqlite:///{tmp_path}/old.db")
    try:
        with db.sync_engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0007_login_throttle")
            approval = new(plan(stage("manager", req("alice", "bob"))))
            conn.execute(insert(approvals), approval_values(StoredApproval(approval=approval)))
        db.migrate()
        assert _people(db, approval.id) == {"alice", "bob"}
    finally:
        db.dispose()
