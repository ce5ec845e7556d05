"""`clearance users delegate | delegates | undelegate`, as an operator runs them."""

from __future__ import annotations

import json

import pytest

from clearance.audit.export import iter_entries
from clearance.store.database import open_database

from .enterprise import run


def test_delegate_list_and_undelegate(db: str) -> None:
    """A delegation is made, listed (table and JSON), ended, and each change is audited."""
    code, out = run(db, "users", "delegate", "alice", "--to", "bob", "--until", "2099-12-01")
    assert code == 0, out
    assert "bob decides for alice" in out and "2099-12-01 00:00" in out
    code, out = run(db, "users", "delegates", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(d["delegator"], d["delegate"], d["created_by"]) for d in listed] == [
        ("alice", "bob", "cli")
    ]
    code, out = run(db, "users", "delegates")
    assert code == 0 and "alice" in out and "bob" in out
    code, out = run(db, "users", "undelegate", "alice")
    assert code == 0 and "no longer go to bob" in out
    code, out = run(db, "users", "delegates")
    assert code == 0 and "no delegations" in out
    database = open_database(db)
    kinds = [e.kind for e in iter_entries(database) if e.kind.startswith("delegation")]
    database.dispose()
    assert kinds == ["delegation.set", "delegation.cleared"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice", "--to", "zed", "--until", "2099-01-01"], "'zed' is not in the directory"),
        (["zed", "--to", "bob", "--until", "2099-01-01"], "'zed' is not in the directory"),
        (["alice", "--to", "alice", "--until", "2099-01-01"], "cannot delegate to themselves"),
        (["alice", "--to", "bob", "--until", "2001-01-01"], "is not in the future"),
        (["alice", "--to", "bob", "--until", "next week"], "is not a date"),
        (
            ["alice", "--to", "bob", "--until", "2099-01-01", "--from", "2099-02-01"],
            "ends before it starts",
        ),
    ],
)
def test_bad_delegations_fail_with_a_reason(db: str, args: list[str], message: str) -> None:
    """Unknown people, oneself, a past or unreadable date and an empty period exit 1 and say
    why; nothing is recorded."""
    code, out = run(db, "users", "delegate", *args)
    assert code == 1 and message in out, out
    code, out = run(db, "users", "delegates", "--json")
    assert json.loads(out) == []


def test_delegation_loop_is_refused(db: str) -> None:
    """a→b then b→a would loop: refused, naming the chain."""
    assert run(db, "users", "delegate", "alice", "--to", "bob", "--until", "2099-01-01")[0] == 0
    code, out = run(db, "users", "delegate", "bob", "--to", "alice", "--until", "2099-01-01")
    assert code == 1 and "bob → alice → bob" in out


def test_undelegate_without_a_delegation_fails(db: str) -> None:
    """Ending a delegation that does not exist exits 1."""
    code, out = run(db, "users", "undelegate", "alice")
    assert code == 1 and "alice has no delegate" in out
