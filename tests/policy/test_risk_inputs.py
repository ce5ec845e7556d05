"""What people type about risk and time zones is checked where they type it: a policy test's
`risk:` map, `clearance check --risk`, a person's `timezone`; errors are plain text."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from clearance.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "enterprise" / "clearance.yaml"
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_a_misspelt_or_mistyped_signal_in_a_policy_test_is_an_error(tmp_path: Path) -> None:
    """`scroe: 85` used to leave the score at rest and the test passing for the wrong reason;
    `new_device: "false"` would have failed later inside CEL. Both are errors at their line."""
    for risk, wanted in (
        ("{scroe: 85}", "risk.scroe: unknown key"),
        ('{new_device: "false"}', "valid boolean"),
    ):
        suite = tmp_path / "t.yaml"
        suite.write_text(
            f"policy: {EXAMPLE}\n"
            "tests:\n"
            "  - name: typo\n"
            "    action: payments.transfer\n"
            "    params: {amount: 100, destination_country: US}\n"
            f"    risk: {risk}\n"
            "    expect: {effect: allow}\n"
        )
        code, out = run("policy", "test", str(suite))
        assert code == 1, out
        assert f"{suite}:6:" in out and wanted in out


def test_a_well_typed_risk_map_still_decides(tmp_path: Path) -> None:
    """Known signals with the right types pass through to the policy."""
    code, out = run(
        "check", "payments.transfer", "--config", str(EXAMPLE),
        "-p", "amount=100", "-p", "destination_country=US", "--risk", '{"score": 90}', "--json",
    )  # fmt: skip
    assert code == 0 and '"block"' in out
    code, out = run(
        "check", "payments.transfer", "--config", str(EXAMPLE), "--risk",
        '{"scroe": 90}',
    )  # fmt: skip
    assert code == 1 and "scroe: unknown signal" in out and "hint" in out


def test_an_unknown_timezone_of_a_person_is_a_lint_error(tmp_path: Path) -> None:
    """Found by `policy lint`, at the person's line, rather than when the server starts."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\n"
        "directory:\n"
        "  people:\n"
        "    - {id: carol, timezone: Mars/Base}\n"
        "policies:\n  rules:\n    - {id: ok, actions: [pay], effect: allow}\n"
    )
    code, out = run("policy", "lint", str(policy))
    assert code == 1
    assert f"{policy}:4:" in out and "unknown time zone 'Mars/Base'" in out and "carol" in out


def test_square_brackets_in_errors_are_printed_as_written(tmp_path: Path) -> None:
    """Error text is never read as Rich markup: a hint about `[group:…]`, or a name a person
    typed, is shown whole."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\n"
        "policies:\n  rules:\n    - {id: '[red]x[/red]', actions: [pay], effect: allow}\n"
        "    - {id: '[red]x[/red]', actions: [pay], effect: allow}\n"
    )
    code, out = run("policy", "lint", str(policy))
    assert code == 1 and "[red]x[/red]" in out


def test_the_risk_map_a_test_gives_has_every_signal_the_engine_knows() -> None:
    """`RiskIn` lists the signals again, with their types: it must name exactly those of
    `DEFAULT_RISK`, with the same values at rest, so the two cannot drift apart."""
    from clearance.policy.model import DEFAULT_RISK
    from clearance.policy.testing import RiskIn

    assert set(RiskIn.model_fields) == set(DEFAULT_RISK)
    assert RiskIn().risk() == DEFAULT_RISK
