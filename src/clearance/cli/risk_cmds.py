"""`clearance risk show | prune`: what the risk signals know about someone, and their
housekeeping (for a cron job beside an embedded gateway; a running server prunes by itself
every few hours)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from .gateway_cmds import DatabaseOpt, with_gateway
from .output import console, fail, print_json
from .policy_cmds import ConfigOpt

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..risk.store import SubjectRow

risk_app = typer.Typer(
    help="Risk signals: what they know about someone; their housekeeping.", no_args_is_help=True
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

    pruned = with_gateway(config, database_url, work, existing=True)
    if pruned is None:
        fail(
            "this policy has no risk: section, so no risk history is kept",
            hint="add a risk: section to use the risk signals",
        )
    rows = "row" if pruned == 1 else "rows"
    console.print(f"Pruned {pruned:,} expired risk {rows}.")


_SEEN = {"seen_geo": "country", "seen_device": "device", "seen_payee": "payee"}


@risk_app.command("show")
def show(
    subject: Annotated[
        str, typer.Argument(help="A person, an agent or a payee, as requests name them")
    ],
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout")] = False,
) -> None:
    """What the risk signals know about SUBJECT now: its requests in each window, the
    countries, devices and payees it is known for, a payee's bank-details change, an agent's
    recent denials. For investigating why a request was flagged."""
    from ..risk import store
    from ..risk.facts import ident
    from ..store.reads import read

    subject = ident(subject) or subject  # as the signals name it (stripped, NFKC)

    async def work(gateway: Gateway) -> list[SubjectRow]:
        await gateway.fold_risk()  # every process's latest checks, not only what was folded
        return await read(gateway.db, lambda conn: store.subject_rows(conn, subject))

    rows = with_gateway(config, database_url, work, existing=True)
    now = datetime.now(UTC)
    report = _report(subject, rows, now)
    if as_json:
        print_json(report)
        return
    if not rows:
        console.print(f"Nothing is stored about {subject}: no request of theirs has been checked")
        console.print("with risk signals, or what there was has expired. A payee has something")
        console.print("of its own only once its bank details changed; who paid it is kept with")
        console.print("each person (`clearance risk show PERSON` lists the payees they paid).")
        return
    console.print(f"What the risk signals know about [bold]{subject}[/] (as of {_when(now)}):")
    if report["requests"]:
        table = Table(
            "action", "as", "last minute", "last hour", "last 24 h", "24 h amount", "amounts kept"
        )
        for r in report["requests"]:
            table.add_row(
                r["action"],
                r["as"],
                str(r["last_minute"]),
                str(r["last_hour"]),
                str(r["last_24h"]),
                "-" if r["amount_24h"] is None else f"{r['amount_24h']:,.2f}",
                str(r["amounts_kept"]),
            )
        console.print(table)
    if report["known"]:
        table = Table("known", "value", "last seen", "known until (UTC)")
        for k in report["known"]:
            table.add_row(
                k["kind"],
                k["value"],
                _ago(now, k["last_seen"]),
                k["known_until"][:16].replace("T", " "),
            )
        console.print(table)
    if report["bank_details_changed"]:
        changed = report["bank_details_changed"]
        console.print(
            f"Bank details changed: {_ago(now, changed)} ({changed[:16].replace('T', ' ')} UTC)"
        )
    if report["recent_denials"]:
        times = report["recent_denials"]
        console.print(
            f"Recent denied or blocked requests: {len(times)}, the last {_ago(now, times[-1])}"
        )


def _report(subject: str, rows: list[SubjectRow], now: datetime) -> dict[str, Any]:
    """The JSON of `risk show` (the table view prints the same)."""
    from ..risk.activity import Activity

    ts = now.timestamp()
    requests: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    bank: str | None = None
    denials: list[str] = []
    for row in rows:
        if isinstance(row.value, Activity):
            totals = row.value.totals(ts)
            requests.append(
                {
                    "action": row.item,
                    "as": "agent" if row.kind == "agent_action" else "requester",
                    "last_minute": totals.per_minute,
                    "last_hour": totals.per_hour,
                    "last_24h": totals.per_day,
                    "amount_24h": round(totals.amount_24h, 2)
                    if math.isfinite(totals.amount_24h)
                    else None,
                    "amounts_kept": len(row.value.amounts),
                }
            )
        elif row.kind in _SEEN:
            known.append(
                {
                    "kind": _SEEN[row.kind],
                    "value": row.item,
                    "last_seen": _iso(row.value),
                    "known_until": row.expires_at.isoformat(),
                }
            )
        elif row.kind == "payee_bank":
            bank = _iso(row.value)
        elif row.kind == "agent_denials":
            denials = [_iso(t) for t in row.value]
    return {
        "subject": subject,
        "as_of": now.isoformat(),
        "requests": requests,
        "known": known,
        "bank_details_changed": bank,
        "recent_denials": denials,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _when(now: datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M UTC")


def _ago(now: datetime, iso: str) -> str:
    from ..risk.signals import ago

    return ago((now - datetime.fromisoformat(iso)).total_seconds())
