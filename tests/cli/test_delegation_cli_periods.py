"""`clearance users delegate | undelegate` with periods: a scheduled loop is refused, a
delegation not yet over is not replaced silently, hints give dates that are not past, and
`undelegate` tells apart an unknown person and a delegation already over."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from clearance.audit.export import iter_entries
from clearance.cli import app
from clearance.delegation import get_delegation, set_delegation
from clearance.policy import load_policy
from clearance.store.database import open_database

from ..fixtures import ENTERPRISE
from .enterprise import run, runner


def kinds(db: str) -> list[tuple[str, str | None]]:
    database = open_database(db)
    try:
        return [(e.kind, e.approver) for e in iter_entries(database) if e.kind.startswith("dele")]
    finally:
        database.dispose()


def day(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


def test_a_scheduled_delegation_that_would_loop_is_refused(db: str) -> None:
    """dana → erin from tomorrow; erin → dana from now would loop from tomorrow: refused."""
    code, out = run(db, "users", "delegate", "dana", "--to", "erin", "--from", day(1),
                    "--until", day(60))  # fmt: skip
    assert code == 0, out
    code, out = run(db, "users", "delegate", "erin", "--to", "dana", "--until", day(60))
    assert code == 1 and "erin → dana → erin" in out, out
    assert kinds(db) == [("delegation.set", "erin")]


def test_a_later_delegation_does_not_silently_replace_the_current_one(db: str) -> None:
    """alice → bob until day 60; alice → erin for days 20–24 is refused, saying who and until
    when, and how to replace it; with --replace it replaces it, says so, and the audit has
    the old one cleared (replaced_by) before the new one."""
    assert run(db, "users", "delegate", "alice", "--to", "bob", "--until", day(60))[0] == 0
    code, out = run(db, "users", "delegate", "alice", "--to", "erin", "--from", day(20),
                    "--until", day(24))  # fmt: skip
    assert code == 1, out
    flat = " ".join(out.split())
    assert f"alice already has a delegate: bob until {day(60)} 00:00 UTC" in flat
    assert "clearance users undelegate alice" in flat and "--replace" in flat
    listed = json.loads(run(db, "users", "delegates", "--json")[1])
    assert [(d["delegator"], d["delegate"]) for d in listed] == [("alice", "bob")]
    code, out = run(db, "users", "delegate", "alice", "--to", "erin", "--from", day(20),
                    "--until", day(24), "--replace")  # fmt: skip
    assert code == 0 and "replaces bob" in out, out
    assert kinds(db) == [
        ("delegation.set", "bob"),
        ("delegation.cleared", "bob"),
        ("delegation.set", "erin"),
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["alice", "--to", "bob", "--until", "2001-01-01"],
        ["alice", "--to", "bob", "--until", "next week"],
    ],
)
def test_hints_give_example_dates_that_are_not_past(db: str, args: list[str]) -> None:
    """The example date in a hint is after today, whatever today is."""
    code, out = run(db, "users", "delegate", *args)
    assert code == 1
    hint = out[out.index("hint:") :]
    examples = re.findall(r"\d{4}-\d{2}-\d{2}", hint)
    assert examples and all(date.fromisoformat(d) > datetime.now(UTC).date() for d in examples)


def test_undelegate_an_unknown_person_says_so(db: str) -> None:
    code, out = run(db, "users", "undelegate", "ghost")
    assert code == 1 and "'ghost' is not in the directory" in out, out


def test_undelegate_a_delegation_already_over_is_not_a_success(db: str) -> None:
    """A delegation that ended is not "ended" again: exit 1, "no delegate in force", nothing
    audited, and it stays in `users delegates --all`."""
    assert run(db, "users", "delegates")[0] == 0  # creates the database
    database = open_database(db)
    past = datetime(2020, 1, 1, tzinfo=UTC)
    with database.begin() as conn:
        set_delegation(
            conn, load_policy(ENTERPRISE).directory, delegator="alice", delegate="bob",
            until=past + timedelta(days=7), now=past,
        )  # fmt: skip
    database.dispose()
    code, out = run(db, "users", "undelegate", "alice")
    assert code == 1 and "alice has no delegate in force" in out, out
    assert "ended 2020-01-08" in out and "no longer go to" not in out
    assert kinds(db) == []
    listed = json.loads(run(db, "users", "delegates", "--all", "--json")[1])
    assert [d["delegator"] for d in listed] == ["alice"]


ZONED = """
version: 1
directory:
  people:
    - {id: kenji, timezone: Asia/Tokyo}
    - {id: nora, timezone: America/New_York}
    - {id: uma}
    - {id: bob}
policies: {default: deny, rules: []}
"""


def test_dates_are_days_of_the_person_away(db: str, tmp_path: Path) -> None:
    """A date (or a time without a zone) is meant in the away person's directory timezone:
    kenji back on 2099-01-10 in Tokyo is 15:00 UTC the day before; nora's New York midnight is
    05:00 UTC in winter and 04:00 UTC in summer (daylight saving); uma has no timezone: UTC.
    A time naming its zone is taken as written. The answer gives both clocks."""
    config = tmp_path / "zoned.yaml"
    config.write_text(ZONED)

    def delegate(*args: str) -> tuple[int, str]:
        result = runner.invoke(
            app, ["users", "delegate", *args, "--replace", "--config", str(config),
                  "--database-url", db],
        )  # fmt: skip
        return result.exit_code, result.output

    def until(person: str) -> datetime:
        database = open_database(db)
        try:
            with database.connect() as conn:
                found = get_delegation(conn, person)
        finally:
            database.dispose()
        assert found is not None
        return found.until.astimezone(UTC)

    code, out = delegate("kenji", "--to", "bob", "--until", "2099-01-10")
    assert code == 0, out
    assert until("kenji") == datetime(2099, 1, 9, 15, tzinfo=UTC)
    assert "until 2099-01-09 15:00 UTC" in out and "2099-01-10 00:00 Asia/Tokyo" in out, out
    assert delegate("kenji", "--to", "bob", "--until", "2099-01-10T17:00")[0] == 0
    assert until("kenji") == datetime(2099, 1, 10, 8, tzinfo=UTC)
    assert delegate("kenji", "--to", "bob", "--until", "2099-01-10T17:00Z")[0] == 0
    assert until("kenji") == datetime(2099, 1, 10, 17, tzinfo=UTC)
    assert delegate("nora", "--to", "bob", "--until", "2099-01-10")[0] == 0
    assert until("nora") == datetime(2099, 1, 10, 5, tzinfo=UTC)
    assert delegate("nora", "--to", "bob", "--until", "2099-07-10")[0] == 0
    assert until("nora") == datetime(2099, 7, 10, 4, tzinfo=UTC)
    code, out = delegate("uma", "--to", "bob", "--until", "2099-01-10")
    assert code == 0 and until("uma") == datetime(2099, 1, 10, tzinfo=UTC)
    assert "until 2099-01-10 00:00 UTC" in out and "(" not in out, out
    code, out = delegate("nora", "--to", "bob", "--until", "2099-13-01")
    assert code == 1 and "is not a date" in out
