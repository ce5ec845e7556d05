"""The policy commands as a user runs them: init, check, policy lint, policy test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clearance.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "enterprise" / "clearance.yaml"
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_check_prints_a_human_summary() -> None:
    """`check` explains the decision: effect, reasons, stages with names, expiry."""
    code, out = run(
        "check",
        "payments.transfer",
        "-p",
        "amount=7200",
        "-p",
        "destination_country=US",
        "--actor",
        "carol",
        "--config",
        str(EXAMPLE),
    )
    assert code == 0, out
    assert out.startswith("APPROVE payments.transfer")
    assert "stage 1 manager: 1 of Alice Ng, Bob Ortiz" in out
    assert "stage 2 finance-director: 1 of Dana Kim, Erin Park" in out
    assert "expires after 8h" in out


def test_check_shows_routing_and_step_up_in_words() -> None:
    """Reminders, escalation, paging in turn and a second factor are spelled out."""
    base = ["check", "payments.transfer", "-p", "destination_country=US", "--actor", "carol"]
    code, out = run(*base, "-p", "amount=7200", "--config", str(EXAMPLE))
    assert code == 0, out
    assert "pages only as many people as required, in turn" in out
    assert "reminds who has not voted every 1h" in out
    assert "escalates after 2h: Dana Kim, Erin Park" in out
    code, out = run(*base, "-p", "amount=70000", "--config", str(EXAMPLE))
    assert code == 0, out
    assert "stage 2 finance-director: 1 of Dana Kim, Erin Park — second factor (totp)" in out


def test_check_json_is_the_decision_contract() -> None:
    """`check --json` prints the decision JSON; -p values parse as JSON when they can."""
    code, out = run(
        "check",
        "payments.transfer",
        "-p",
        "amount=100",
        "--params",
        '{"destination_country": "US"}',
        "--json",
        "--config",
        str(EXAMPLE),
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["effect"] == "allow" and data["rules"] == ["payments-small"]
    code, out = run(
        "check",
        "payments.transfer",
        "-p",
        "amount=100",
        "-p",
        "destination_country=US",
        "-p",
        "note=not json {",
        "--json",
        "--config",
        str(EXAMPLE),
    )
    assert json.loads(out)["effect"] == "allow"


def test_check_context_labels_and_bad_json() -> None:
    """--context feeds conditions; malformed --context is a clear error with exit 1."""
    code, out = run(
        "check",
        "payments.transfer",
        "-p",
        "amount=1",
        "-p",
        "destination_country=US",
        "--context",
        '{"suspicious": true}',
        "--config",
        str(EXAMPLE),
    )
    assert code == 0 and out.startswith("BLOCK") and "alert: Frank Li, Sam Rivera" in out
    code, out = run("check", "x", "--context", "{nope", "--config", str(EXAMPLE))
    assert code == 1 and "--context is not valid JSON" in out
    code, out = run("check", "x", "-p", "novalue", "--config", str(EXAMPLE))
    assert code == 1 and "is not key=value" in out


def test_check_with_a_missing_config_says_how_to_fix_it(tmp_path: Path) -> None:
    """No policy file: exit 1, naming the file and suggesting `clearance init`."""
    code, out = run("check", "x", "--config", str(tmp_path / "none.yaml"))
    assert code == 1 and "file not found" in out and "clearance init" in out


def test_lint_ok_and_errors(tmp_path: Path) -> None:
    """lint reports success with counts, and every error with file:line and exit 1."""
    code, out = run("policy", "lint", str(EXAMPLE))
    assert code == 0 and out.startswith("ok:") and "rules" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "policies:\n  rules:\n    - {id: r, actions: [x], effect: approve,"
        " approval: {approvers: [group:finance-director]}, when: 'amout > 1'}\n"
    )
    code, out = run("policy", "lint", str(bad))
    assert code == 1
    assert f"{bad}:3:" in out and "unknown variable 'amout'" in out
    assert "unknown group 'finance-director'" in out and "2 problems" in out


def test_policy_test_runs_the_enterprise_suite() -> None:
    """The enterprise example's policy tests all pass through the CLI."""
    code, out = run("policy", "test", str(EXAMPLE.parent / "tests.yaml"))
    assert code == 0, out
    assert "0 failed" in out


def test_policy_test_reports_a_failure(tmp_path: Path) -> None:
    """A failing case is listed with what was wanted and what came, and exit 1."""
    suite = tmp_path / "t.yaml"
    suite.write_text(
        f"policy: {EXAMPLE}\n"
        "tests:\n"
        "  - name: wrong on purpose\n"
        "    action: payments.transfer\n"
        "    params: {amount: 100, destination_country: US}\n"
        "    expect: {effect: deny}\n"
    )
    code, out = run("policy", "test", str(suite))
    assert code == 1
    assert "wrong on purpose" in out and "want deny, got allow" in out and "1 failed" in out


def test_policy_test_file_errors_have_locations(tmp_path: Path) -> None:
    """A malformed test file is an error naming the file and line."""
    suite = tmp_path / "t.yaml"
    suite.write_text(f"policy: {EXAMPLE}\ntests:\n  - name: x\n    acton: y\n")
    code, out = run("policy", "test", str(suite))
    assert code == 1 and f"{suite}:4:" in out


def test_init_writes_the_example_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init writes a loadable starter policy, then refuses to overwrite it."""
    monkeypatch.chdir(tmp_path)
    code, out = run("init")
    assert code == 0 and (tmp_path / "clearance.yaml").exists()
    assert (tmp_path / "clearance.yaml").read_text() == EXAMPLE.read_text()
    code, out = run("policy", "lint")
    assert code == 0, out
    code, out = run("init")
    assert code == 1 and "already exists" in out
