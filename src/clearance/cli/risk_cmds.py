"""`clearance risk prune`: the risk signals' housekeeping, for a cron job beside an embedded
gateway (a running server prunes by itself every few hours)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .gateway_cmds import DatabaseOpt, with_gateway
from .output import console, fail
from .policy_cmds import ConfigOpt

if TYPE_CHECKING:
    from ..gateway import Gateway

risk_app = typer.Typer(
    help="Risk signals: housekeeping of their stored history.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(risk_app, name="risk")


@risk_app.command("prune")
def prune(config: ConfigOpt = None, database_url: DatabaseOpt = None) -> None:
    """Delete the stored risk history that no longer matters: counters older than a day,
    sightings and bank changes past their retention. The signals already ignore them; this
    only reclaims space. Safe while servers run."""

    async def work(gateway: Gateway) -> int | None:
        return await gateway.prune_risk()

    pruned = with_gateway(config, database_url, work)
    if pruned is None:
        fail(
            "this policy has no risk: section, so no risk history is kept",
            hint="add a risk: section to use the risk signals",
        )
    rows = "row" if pruned == 1 else "rows"
    console.print(f"Pruned {pruned:,} expired risk {rows}.")
