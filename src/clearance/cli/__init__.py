"""The `clearance` command line. Each group of commands lives in its own module."""

from __future__ import annotations

import typer

from . import gateway_cmds, mcp_cmds, policy_cmds

app = typer.Typer(
    name="clearance",
    help="Clearance: an approval gateway for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

policy_cmds.register(app)
gateway_cmds.register(app)
mcp_cmds.register(app)


def main() -> None:
    app()
