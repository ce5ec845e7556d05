"""`clearance users delegate | delegates | undelegate`: out-of-office delegates.

Added to `gateway_cmds.users_app` when this module is imported (by `clearance.cli`). The rules
of delegation are in `clearance.delegation`; every change is audited.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from .gateway_cmds import DatabaseOpt, open_gateway, users_app, with_gateway
from .output import console, fail, print_json
from .policy_cmds import ConfigOpt

if TYPE_CHECKING:
    from ..delegation import Delegation
    from ..gateway import Gateway


def parse_when(value: str, option: str) -> datetime:
    """`2026-12-01` (00:00 UTC that day: back at work then) or an ISO date-time (UTC when it
    names no zone)."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date", hint="write 2026-12-01 or 2026-12-01T17:00Z")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@users_app.command("delegate")
def delegate(
    person: Annotated[str, typer.Argument(help="Who is away")],
    to: Annotated[str, typer.Option("--to", help="Who decides in their place")],
    until: Annotated[str, typer.Option("--until", help="When it ends: 2026-12-01 or ISO time")],
    start: Annotated[
        str | None, typer.Option("--from", help="When it starts (default: now)")
    ] = None,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Route PERSON's requests to a delegate until a date (replaces an earlier delegation)."""
    from ..delegation import DelegationError, delegate_audited

    ends = parse_when(until, "--until")
    begins = parse_when(start, "--from") if start else None
    gateway = open_gateway(config, database_url)
    now = gateway.clock()
    directory = gateway.policy.directory
    try:
        made = gateway.writer.run_sync(
            lambda tx: delegate_audited(
                tx,
                directory,
                delegator=person,
                delegate=to,
                until=ends,
                now=now,
                by="cli",
                channel="cli",
                starts_at=begins,
            )
        )
    except DelegationError as exc:
        _close(gateway)
        fail(exc.message, hint=_hint(exc.code))
    _close(gateway)
    console.print(
        f"{made.delegate} decides for {made.delegator} from {made.starts_at:%Y-%m-%d %H:%M} "
        f"until {made.until:%Y-%m-%d %H:%M} UTC"
    )


@users_app.command("undelegate")
def undelegate(
    person: Annotated[str, typer.Argument(help="Who is back")],
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """End PERSON's delegation: their requests come to them again."""
    from ..delegation import undelegate_audited

    gateway = open_gateway(config, database_url)
    now = gateway.clock()
    ended = gateway.writer.run_sync(
        lambda tx: undelegate_audited(tx, delegator=person, now=now, by="cli", channel="cli")
    )
    _close(gateway)
    if ended is None:
        fail(f"{person} has no delegate", hint="see `clearance users delegates`")
    console.print(f"{person}'s requests no longer go to {ended.delegate}")


@users_app.command("delegates")
def delegates(
    show_all: Annotated[bool, typer.Option("--all", help="Include ended delegations")] = False,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List delegations (current and upcoming; --all for ended ones too)."""
    from ..delegation import list_delegations
    from ..store.reads import read

    async def work(gateway: Gateway) -> list[Delegation]:
        now = gateway.clock()
        return await read(gateway.db, lambda c: list_delegations(c, None if show_all else now))

    items = with_gateway(config, database_url, work)
    if as_json:
        print_json([d.to_json() for d in items])
        return
    if not items:
        console.print("no delegations")
        return
    table = Table("person", "delegate", "from", "until", "set by")
    for d in items:
        table.add_row(
            d.delegator,
            d.delegate,
            f"{d.starts_at:%Y-%m-%d %H:%M}",
            f"{d.until:%Y-%m-%d %H:%M}",
            d.created_by or "",
        )
    console.print(table)


def _close(gateway: Gateway) -> None:
    asyncio.run(gateway.aclose())


def _hint(code: str) -> str | None:
    return {
        "unknown_person": "people come from the policy's directory: section",
        "until_in_past": "--until takes a future date, e.g. 2026-12-01",
        "delegation_loop": "see `clearance users delegates`",
        "self_delegation": "name someone else with --to",
    }.get(code)


__all__ = ["delegate", "delegates", "undelegate"]
