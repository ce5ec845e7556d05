"""The `clearance` command line. Each group of commands lives in its own module."""

from __future__ import annotations

import typer

from . import (  # noqa: F401 - registers
    control_cmds,
    delegation_cmds,
    gateway_cmds,
    mcp_cmds,
    mfa_cmds,  # users mfa enroll|list|reset; admin changes
    policy_cmds,
    risk_cmds,  # risk show | prune
)

app = typer.Typer(
    name="clearance",
    help="Clearance: an approval gateway for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

policy_cmds.register(app)
gateway_cmds.register(app)
control_cmds.register(app)  # override, overrides, grants
mcp_cmds.register(app)
mfa_cmds.register(app)  # admin changes | change
risk_cmds.register(app)


def main() -> None:
    app()
