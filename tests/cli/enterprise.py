"""The CLI on the enterprise example and a test database, as the CLI tests run it."""

from __future__ import annotations

from typer.testing import CliRunner

from clearance.cli import app

from ..fixtures import ENTERPRISE

runner = CliRunner()


def run(db: str, *args: str, input: str | None = None) -> tuple[int, str]:
    """`clearance ARGS --config <enterprise> --database-url DB`: (exit code, output)."""
    result = runner.invoke(
        app, [*args, "--config", str(ENTERPRISE), "--database-url", db], input=input
    )
    return result.exit_code, result.output
