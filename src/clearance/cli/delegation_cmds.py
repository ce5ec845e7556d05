"""`clearance users delegate | delegates | undelegate`: out-of-office delegates.

Added to `gateway_cmds.users_app` when this module is imported (by `clearance.cli`). The rules
of delegation are in `clearance.delegation`; every change is audited.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
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


def parse_when(value: str, option: str) -> datetime:
    """`YYYY-MM-DD` (00:00 UTC that day: for --until, the day they are back) or an ISO
    date-time (UTC when it names no zone)."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        day = _example_day()
        fail(f"{option} {value!r} is not a date", hint=f"write {day} or {day}T17:00Z")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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
            help="When it ends: YYYY-MM-DD (00:00 UTC that day, the day they are back) or an "
            "ISO time such as YYYY-MM-DDT17:00Z",
        ),
    ],
    start: Annotated[
        str | None,
        typer.Option("--from", help="When it starts: YYYY-MM-DD or ISO time (default: now)"),
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
    from ..delegation import DelegationError, delegate_audited, get_delegation

    ends = parse_when(until, "--until")
    begins = parse_when(start, "--from") if start else None
    gateway = open_gateway(config, database_url)
    now = gateway.clock()
    directory = gateway.policy.directory

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
    console.print(
        f"{made.delegate} decides for {made.delegator} from {made.starts_at:%Y-%m-%d %H:%M} "
        f"until {made.until:%Y-%m-%d %H:%M} UTC"
    )
    if replaced is not None:
        console.print(
            f"(replaces {replaced.delegate}, who was to decide for {person} until "
            f"{replaced.until:%Y-%m-%d %H:%M} UTC)"
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
    from ..delegation import list_delegations
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
