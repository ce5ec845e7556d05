"""Loading policies: every kind of bad input is an error with file, line and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearance.policy import PolicyError, load_policy, load_policy_text

from .helpers import PEOPLE, policy


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def one_rule(rule: str) -> str:
    return PEOPLE + "policies:\n  rules:\n" + "\n".join("    " + ln for ln in rule.splitlines())


def test_malformed_yaml_names_the_line() -> None:
    """A YAML syntax error is reported at its line and column."""
    (msg,) = problems("policies:\n  rules: [\n")
    assert msg.startswith("p.yaml:3:1:") and "invalid YAML" in msg


def test_unknown_key_with_suggestion() -> None:
    """A misspelt key is an error with the closest known key as a hint."""
    (msg,) = problems(one_rule("- {id: r, actions: [x], effect: allow, whne: 'true'}"))
    assert "unknown key 'whne'" in msg and "did you mean 'when'" in msg and "[rule r]" in msg
    assert msg.startswith("p.yaml:12:")


def test_unknown_top_level_key() -> None:
    """An unknown top-level section is an error."""
    (msg,) = problems("polices: {}\n")
    assert "unknown key 'polices'" in msg and "did you mean 'policies'" in msg


def test_duplicate_rule_id() -> None:
    """Two rules with one id: the second is named, pointing at the first."""
    (msg,) = problems(
        one_rule("- {id: r, actions: [x], effect: allow}\n- {id: r, actions: [y], effect: deny}")
    )
    assert "duplicate rule id 'r'" in msg and "first defined at p.yaml:12" in msg


def test_duplicate_yaml_key() -> None:
    """A key written twice in one mapping is an error, not a silent overwrite."""
    (msg,) = problems("policies:\n  default: deny\n  default: allow\n")
    assert "duplicate key 'default'" in msg


def test_cel_syntax_error_points_into_the_condition() -> None:
    """A CEL syntax error is located at the file column of the broken token."""
    (msg,) = problems(one_rule("- {id: r, actions: [x], effect: allow, when: 'params.a < 5 &&'}"))
    assert "Syntax error" in msg and "[rule r]" in msg
    assert msg.startswith("p.yaml:12:")


def test_cel_unknown_variable_and_type_error() -> None:
    """Undeclared variables and type mismatches are caught at load, with hints."""
    msgs = problems(
        one_rule(
            "- {id: a, actions: [x], effect: allow, when: 'amout > 5'}\n"
            '- {id: b, actions: [x], effect: allow, when: "actor.user > 3"}\n'
            "- {id: c, actions: [x], effect: allow, when: 'paramz.a == 1'}"
        )
    )
    assert "unknown variable 'amout'" in msgs[0] and "params.amout" in msgs[0]
    assert "type error: '>' cannot be applied to (string, int)" in msgs[1]
    assert "did you mean 'params'" in msgs[2]


def test_condition_must_be_boolean() -> None:
    """A condition that can only produce a number is rejected."""
    (msg,) = problems(one_rule("- {id: r, actions: [x], effect: allow, when: '1 + 2'}"))
    assert "must be true or false" in msg


def test_unknown_group_lists_known_ones() -> None:
    """An unknown group names the close match and the known groups."""
    (msg,) = problems(
        one_rule(
            "- {id: r, actions: [x], effect: approve,"
            " approval: {approvers: [group:finance-director]}}"
        )
    )
    assert "unknown group 'finance-director'" in msg
    assert "did you mean 'finance-directors'" in msg and "managers" in msg


def test_unknown_person_and_group_written_as_person() -> None:
    """A bare group name is an unknown person, with the hint to write group:."""
    (msg,) = problems(
        one_rule("- {id: r, actions: [x], effect: approve, approval: {approvers: [managers]}}")
    )
    assert "unknown person 'managers'" in msg and "write group:managers" in msg


@pytest.mark.parametrize("required", [0, -1])
def test_required_must_be_positive(required: int) -> None:
    """required below one is an error."""
    (msg,) = problems(
        one_rule(
            "- {id: r, actions: [x], effect: approve,"
            f" approval: {{stages: [{{name: s, approvers: [alice], required: {required}}}]}}}}"
        )
    )
    assert "required must be at least 1" in msg


def test_required_cannot_exceed_people_listed() -> None:
    """Asking for more approvers than the listed people exist is an error at load."""
    (msg,) = problems(
        one_rule(
            "- {id: r, actions: [x], effect: approve,"
            " approval: {stages: [{name: s, approvers: [group:security], required: 2}]}}"
        )
    )
    assert "required is 2" in msg and "only 1 person" in msg


def test_unknown_effect() -> None:
    """An effect outside allow/deny/approve/block is an error listing the four."""
    (msg,) = problems(one_rule("- {id: r, actions: [x], effect: allwo}"))
    assert "unknown effect 'allwo'" in msg and "allow, deny, approve, block" in msg


def test_approve_needs_an_approval_and_others_must_not_have_one() -> None:
    """approve without approval:, and approval: on a non-approve rule, are both errors."""
    msgs = problems(
        one_rule(
            "- {id: a, actions: [x], effect: approve}\n"
            "- {id: b, actions: [x], effect: allow, approval: {approvers: [alice]}}"
        )
    )
    assert "needs an approval" in msgs[0]
    assert "only applies to approve rules" in msgs[1]


def test_default_cannot_be_approve() -> None:
    """A default of approve names nobody to ask and is rejected."""
    (msg,) = problems("policies: {default: approve}\n")
    assert "default cannot be approve" in msg


def test_every_problem_is_reported_not_just_the_first() -> None:
    """Problems in several rules are all reported, in file order."""
    msgs = problems(
        one_rule(
            "- {id: a, actions: [x], effect: allwo}\n"
            "- {id: b, actions: [x], effect: allow, when: 'nope > 1'}\n"
            "- {id: c, actions: [x], effect: approve, approval: {approvers: [group:nobody]}}"
        )
    )
    assert len(msgs) == 3
    assert [m.split(":")[1] for m in msgs] == ["12", "13", "14"]


def test_invalid_timeout() -> None:
    """A timeout must be a positive duration."""
    (msg,) = problems(
        one_rule(
            "- {id: r, actions: [x], effect: approve,"
            " approval: {approvers: [alice], timeout: soon}}"
        )
    )
    assert "not a duration" in msg


def test_environment_variables_are_substituted_and_missing_ones_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """${VAR} is replaced from the environment; a missing one is a load error naming it."""
    monkeypatch.setenv("CLEARANCE_TEST_URL", "sqlite:///x.db")
    p = load_policy_text("server: {database_url: '${CLEARANCE_TEST_URL}'}\n")
    assert p.settings["server"]["database_url"] == "sqlite:///x.db"
    monkeypatch.delenv("CLEARANCE_TEST_URL")
    (msg,) = problems("server: {database_url: '${CLEARANCE_TEST_URL}'}\n")
    assert "CLEARANCE_TEST_URL is not set" in msg


def test_several_files_merge(tmp_path: Path) -> None:
    """People and rules from several files are merged; duplicates across files are errors."""
    (tmp_path / "people.yaml").write_text(PEOPLE)
    (tmp_path / "rules.yaml").write_text(
        "policies:\n  rules:\n    - {id: r, actions: [x], effect: approve,"
        " approval: {approvers: [group:managers]}}\n"
    )
    p = load_policy([tmp_path / "people.yaml", tmp_path / "rules.yaml"])
    assert [r.id for r in p.rules] == ["r"] and "alice" in p.directory.people
    (tmp_path / "dup.yaml").write_text("directory:\n  people: [{id: alice}]\n")
    with pytest.raises(PolicyError) as info:
        load_policy([tmp_path / "people.yaml", tmp_path / "dup.yaml"])
    assert "person 'alice' is defined twice" in str(info.value)


def test_missing_file() -> None:
    """A missing file is an error with a hint to create one."""
    with pytest.raises(PolicyError) as info:
        load_policy("/nonexistent/clearance.yaml")
    assert "file not found" in str(info.value) and "clearance init" in str(info.value)


def test_policy_version_changes_with_content() -> None:
    """The version hash is stable for the same policy and changes when a rule changes."""
    a = policy("- {id: r, actions: [x], effect: allow}")
    b = policy("- {id: r, actions: [x], effect: allow}")
    c = policy("- {id: r, actions: [y], effect: allow}")
    assert a.version == b.version != c.version
