"""Directory operations as text edits: only the person's entry changes, and the result loads."""

from __future__ import annotations

import pytest
import yaml

from clearance.admin_changes import ChangeRefused, edit_directory
from clearance.policy import load_policy_text

from ..fixtures import ENTERPRISE

TEXT = ENTERPRISE.read_text(encoding="utf-8")


def person(text: str, person_id: str) -> dict[str, object]:
    people = yaml.safe_load(text)["directory"]["people"]
    found: dict[str, object] = next(p for p in people if p["id"] == person_id)
    return found


def test_granting_a_role_in_the_enterprise_example() -> None:
    """Granting `admin` to frank changes one line; every comment and other line stays."""
    edited, summary = edit_directory(TEXT, {"op": "grant_role", "person": "frank", "role": "admin"})
    assert summary == "grant role admin to frank"
    assert person(edited, "frank")["roles"] == ["emergency", "admin"]
    before, after = TEXT.splitlines(), edited.splitlines()
    assert len(before) == len(after)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
    assert load_policy_text(edited).directory.has_role("frank", "admin")


def test_group_membership_and_new_people() -> None:
    """Removing bob from managers and adding a new person both give a loadable policy."""
    edited, _ = edit_directory(
        TEXT, {"op": "remove_from_group", "person": "bob", "group": "managers"}
    )
    assert "groups" not in person(edited, "bob")
    added, summary = edit_directory(
        edited,
        {"op": "add_person", "person": "pia", "name": "Pia Ruiz", "groups": ["managers"]},
    )
    assert summary == "add pia to the directory"
    policy = load_policy_text(added)
    assert policy.directory.groups["managers"] == ("alice", "pia")
    assert added.startswith(TEXT.split("directory:")[0])  # the header comments are intact


@pytest.mark.parametrize(
    ("op", "code"),
    [
        ({"op": "grant_role", "person": "nobody", "role": "admin"}, "unknown_person"),
        ({"op": "grant_role", "person": "ivan", "role": "admin"}, "no_change"),
        ({"op": "revoke_role", "person": "alice", "role": "admin"}, "no_change"),
        ({"op": "add_person", "person": "alice"}, "person_exists"),
        ({"op": "add_to_group", "person": "alice", "group": "bad name!"}, "invalid_op"),
        ({"op": "delete_everyone", "person": "alice"}, "invalid_op"),
        ({"op": "grant_role", "person": "{x: 1}", "role": "admin"}, "invalid_op"),
    ],
)
def test_bad_operations_are_refused(op: dict[str, object], code: str) -> None:
    """Unknown people, no-op changes, odd names and unknown operations are refused by code."""
    with pytest.raises(ChangeRefused) as refused:
        edit_directory(TEXT, op)
    assert refused.value.code == code


def test_a_flow_style_directory_is_refused_with_advice() -> None:
    """A file whose people are one flow list cannot be edited in place: propose the text."""
    text = "version: 1\ndirectory: {people: [{id: a}]}\n"
    with pytest.raises(ChangeRefused, match="propose the policy text instead"):
        edit_directory(text, {"op": "grant_role", "person": "a", "role": "admin"})
