"""`clearance users delegate | delegates | undelegate`: out-of-office delegates.

Added to `gateway_cmds.users_app` when this module is imported (by `clearance.cli`). The rules
of delegation are in `clearance.delegation`; every change is audited.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from .gateway_cmds import DatabaseOpt, open_gateway, users_app, with_gateway
from .output import console, fail, print_json
from .policy_cmds import ConfigOpt

if TYPE_CHECKING:
    from ..audit.writer import WriteTx
    from ..delegation import Delegation
    from ..gateway import Gateway


def parse_when(value: str, option: str, zone: tzinfo = UTC) -> datetime:
    """`YYYY-MM-DD` (00:00 that day: for --until, the day they are back) or an ISO date-time,
    in `zone` when it names none (`server.timeparse.parse_when`), as a UTC time; a value that
    is neither fails the command."""
    from ..server.timeparse import parse_when as parse

    try:
        return parse(value, zone)
    except ValueError:
        day = _example_day()
        fail(f"{option} {value!r} is not a date", hint=f"write {day} or {day}T17:00Z")


def _example_day() -> str:
    """A week from today (UTC), for examples in hints: never a date already past."""
    return (datetime.now(UTC) + timedelta(days=7)).date().isoformat()


@users_app.command("delegate")
def delegate(
    person: Annotated[str, typer.Argument(help="Who is away")],
    to: Annotated[str, typer.Option("--to", help="Who decides in their place")],
    until: Annotated[
        str,
        typer.Option(
            "--until",
            help="When it ends: YYYY-MM-DD (00:00 that day, the day they are back) or an ISO "
            "time such as YYYY-MM-DDT17:00Z; a date or time without a zone is in PERSON's "
            "directory timezone (else UTC)",
        ),
    ],
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="When it starts: YYYY-MM-DD or ISO time, as --until (default: now)",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Replace PERSON's current or scheduled delegation"),
    ] = False,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Route PERSON's requests to a delegate until a date. A person has one delegation at a
    time: one not yet over is refused unless --replace (the replacement is audited)."""
    from ..delegation import (
        DelegationError,
        clock_text,
        delegate_audited,
        get_delegation,
        zone_of,
    )

    parse_when(until, "--until")  # a typo is reported before anything is opened
    if start:
        parse_when(start, "--from")
    gateway = open_gateway(config, database_url)
    now = gateway.clock()
    directory = gateway.policy.directory
    zone = zone_of(directory, person)  # the days of the person away
    ends = parse_when(until, "--until", zone)
    begins = parse_when(start, "--from", zone) if start else None

    def work(tx: WriteTx) -> tuple[Delegation | None, Delegation]:
        before = get_delegation(tx.conn, person)
        made = delegate_audited(
            tx,
            directory,
            delegator=person,
            delegate=to,
            until=ends,
            now=now,
            by="cli",
            channel="cli",
            starts_at=begins,
            replace=replace,
        )
        return (before if before is not None and before.until > now else None), made

    try:
        replaced, made = gateway.writer.run_sync(work)
    except DelegationError as exc:
        _close(gateway)
        if exc.code == "until_in_past":
            fail(f"--until {until} is not in the future", hint=_hint(exc.code, person))
        fail(exc.message, hint=_hint(exc.code, person))
    _close(gateway)
    local = ""
    if zone is not UTC:  # the same period on the away person's own clock
        local = f" ({clock_text(made.starts_at, zone)} to {clock_text(made.until, zone)})"
    console.print(
        f"{made.delegate} decides for {made.delegator} from {clock_text(made.starts_at)} "
        f"until {clock_text(made.until)}{local}"
    )
    if replaced is not None:
        console.print(
            f"(replaces {replaced.delegate}, who was to decide for {person} until "
            f"{clock_text(replaced.until)})"
        )


@users_app.command("undelegate")
def undelegate(
    person: Annotated[str, typer.Argument(help="Who is back")],
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """End PERSON's delegation (in force or scheduled): their requests come to them again."""
    from ..delegation import get_delegation, undelegate_audited

    gateway = open_gateway(config, database_url, existing=True)
    now = gateway.clock()
    known = gateway.policy.directory.get(person) is not None

    def work(tx: WriteTx) -> tuple[Delegation | None, Delegation | None]:
        before = get_delegation(tx.conn, person)
        return before, undelegate_audited(tx, delegator=person, now=now, by="cli", channel="cli")

    before, ended = gateway.writer.run_sync(work)
    _close(gateway)
    if ended is None:
        if before is not None:
            fail(
                f"{person} has no delegate in force: the delegation to {before.delegate} "
                f"ended {before.until:%Y-%m-%d %H:%M} UTC; nothing to end",
                hint="see `clearance users delegates --all`",
            )
        if not known:
            fail(f"{person!r} is not in the directory", hint=_hint("unknown_person", person))
        fail(
            f"{person} has no delegate in force or scheduled",
            hint="see `clearance users delegates`",
        )
    console.print(f"{person}'s requests no longer go to {ended.delegate}")


@users_app.command("delegates")
def delegates(
    show_all: Annotated[bool, typer.Option("--all", help="Include ended delegations")] = False,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List delegations (current and upcoming; --all for ended ones too)."""
    from ..delegation import clock_text, list_delegations
    from ..store.reads import read

    async def work(gateway: Gateway) -> list[Delegation]:
        now = gateway.clock()
        return await read(gateway.db, lambda c: list_delegations(c, None if show_all else now))

    items = with_gateway(config, database_url, work, existing=True)
    if as_json:
        print_json([d.to_json() for d in items])
        return
    if not items:
        console.print("no delegations")
        return
    table = Table("person", "delegate", "from (UTC)", "until (UTC)", "set by")
    for d in items:
        table.add_row(
            d.delegator,
            d.delegate,
            clock_text(d.starts_at, named=False),
            clock_text(d.until, named=False),
            d.created_by or "",
        )
    console.print(table)


def _close(gateway: Gateway) -> None:
    asyncio.run(gateway.aclose())


def _hint(code: str, person: str) -> str | None:
    return {
        "unknown_person": "people come from the policy's directory: section",
        "until_in_past": f"--until takes a future date, e.g. {_example_day()}",
        "delegation_loop": "see `clearance users delegates`",
        "self_delegation": "name someone else with --to",
        "already_delegated": (
            f"end it first with `clearance users undelegate {person}`, or add --replace "
            "to replace it"
        ),
    }.get(code)


__all__ = ["delegate", "delegates", "undelegate"]
