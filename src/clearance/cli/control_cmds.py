"""`clearance override`, `clearance overrides list|review|export`, `clearance grants
list|revoke`: the controls from the command line.

These commands open the database directly (like `keys` and `users`): whoever runs them holds
the database's authority, and `--as PERSON` names the directory person acting. The same
checks as everywhere else still apply to that person — the emergency role and a reason to
override, the rate limit, a reviewer other than the overrider, the grantor or an admin to
revoke — and every action and refusal is audited with channel `cli`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from .gateway_cmds import DatabaseOpt, with_gateway
from .output import console, fail, print_json
from .policy_cmds import ConfigOpt, parse_json_object, parse_kv

if TYPE_CHECKING:
    from ..gateway import Gateway

AsOpt = Annotated[str, typer.Option("--as", help="The directory person acting")]


def register(app: typer.Typer) -> None:
    overrides_app = typer.Typer(help="Emergency overrides and their reviews.", no_args_is_help=True)
    grants_app = typer.Typer(help="Standing grants (approve always).", no_args_is_help=True)
    app.add_typer(overrides_app, name="overrides")
    app.add_typer(grants_app, name="grants")

    @app.command("override")
    def override_cmd(
        action: Annotated[str | None, typer.Argument(help="An action not yet requested")] = None,
        approval: Annotated[
            str | None, typer.Option("--approval", help="A pending approval's id")
        ] = None,
        reason: Annotated[str, typer.Option(help="Why this cannot wait (required)")] = "",
        as_person: AsOpt = "",
        param: Annotated[list[str] | None, typer.Option("-p", "--param")] = None,
        params: Annotated[str | None, typer.Option(help="Parameters as JSON")] = None,
        actor: Annotated[str | None, typer.Option(help="actor.user, as the agent sends it")] = None,
        agent: Annotated[
            str | None, typer.Option(help="actor.agent, as the agent sends it")
        ] = None,
        context: Annotated[str | None, typer.Option(help="Context as JSON")] = None,
        idempotency_key: Annotated[str | None, typer.Option(help="The agent's key")] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Break glass: release a pending approval, or an action not yet requested, at once."""
        from .. import override as ovr
        from ..policy import Request

        if not as_person:
            fail("say who is overriding", hint="--as PERSON (a person with the emergency role)")
        if (action is None) == (approval is None):
            fail("give either an ACTION or --approval ID")
        request = None
        if action is not None:
            merged = parse_json_object("--params", params)
            merged.update(parse_kv(param or []))
            who = {k: v for k, v in (("user", actor), ("agent", agent)) if v}
            request = Request(action, merged, who, parse_json_object("--context", context))

        async def go(gateway: Gateway) -> ovr.OverrideResult:
            return await ovr.override(
                gateway,
                person=as_person,
                reason=reason,
                approval_id=approval,
                request=request,
                channel="cli",
                idempotency_key=idempotency_key,
            )

        try:
            result = with_gateway(config, database_url, go)
        except ovr.OverrideRefused as exc:
            fail(f"refused ({exc.code}): {exc.message}")
        a = result.approval.approval
        if as_json:
            print_json(
                {
                    "override": result.override.to_json(),
                    "approval_id": a.id,
                    "binding_hash": a.binding_hash,
                    "state": a.state.value,
                }
            )
            return
        console.print(f"[bold]{result.override.id}[/]: {a.action} released at once ({a.id})")
        console.print(f"  {a.decided_reason}")
        console.print("  security has been alerted; a review is open")

    @overrides_app.command("list")
    def overrides_list(
        state: Annotated[str | None, typer.Option(help="open, justified or flagged")] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """List emergency overrides, oldest first."""
        from .. import override as ovr

        found = with_gateway(
            config,
            database_url,
            lambda g: ovr.list_overrides(g.db, review_state=state),
            existing=True,
        )
        if as_json:
            print_json([o.to_json() for o in found])
            return
        if not found:
            console.print("no overrides" + (f" in review state {state}" if state else ""))
            return
        table = Table("id", "when", "by", "action", "approval", "review", "reason", box=None)
        for o in found:
            table.add_row(
                o.id,
                o.created_at.strftime("%Y-%m-%d %H:%M"),
                o.person,
                o.action,
                o.approval_id,
                o.review_state + (f" by {o.reviewed_by}" if o.reviewed_by else ""),
                o.reason,
            )
        console.print(table)

    @overrides_app.command("review")
    def overrides_review(
        override_id: str,
        as_person: AsOpt = "",
        justified: Annotated[bool, typer.Option("--justified", help="It was warranted")] = False,
        flag: Annotated[bool, typer.Option("--flag", help="It was not (needs -m)")] = False,
        comment: Annotated[str | None, typer.Option("--comment", "-m")] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """Close an override's review: --justified or --flag, by someone other than the
        overrider."""
        from .. import override as ovr

        if justified == flag:
            fail("give exactly one of --justified or --flag")
        if not as_person:
            fail("say who is reviewing", hint="--as PERSON")
        verdict = "justified" if justified else "flagged"
        try:
            done = with_gateway(
                config,
                database_url,
                lambda g: ovr.review(
                    g, override_id, person=as_person, verdict=verdict, comment=comment,
                    channel="cli",
                ),
                existing=True,
            )  # fmt: skip
        except ovr.OverrideRefused as exc:
            fail(f"refused ({exc.code}): {exc.message}")
        console.print(f"{done.id}: {done.review_state} by {done.reviewed_by}")

    @overrides_app.command("export")
    def overrides_export(
        since: Annotated[str | None, typer.Option(help="From this time (inclusive)")] = None,
        until: Annotated[str | None, typer.Option(help="Up to this time (exclusive)")] = None,
        output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """The overrides section of the audit export (JSON lines)."""
        from ..audit.export import export_overrides
        from ..server.timeparse import parse_when

        try:
            start = parse_when(since) if since else None
            end = parse_when(until) if until else None
        except ValueError as exc:
            fail(str(exc))

        async def go(gateway: Gateway) -> int:
            if output is None:
                return export_overrides(gateway.db, sys.stdout, start, end)
            with output.open("w", encoding="utf-8") as stream:
                return export_overrides(gateway.db, stream, start, end)

        count = with_gateway(config, database_url, go, existing=True)
        if output is not None:
            console.print(f"wrote {count:,} overrides to {output}")

    @grants_app.command("list")
    def grants_list(
        all_: Annotated[bool, typer.Option("--all", help="Also revoked and expired")] = False,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """List standing grants (live ones unless --all), newest first."""
        from .. import grants

        async def go(gateway: Gateway) -> list[dict[str, object]]:
            now = gateway.clock()
            found = await grants.list_grants(gateway.db, now=now, live_only=not all_)
            return [g.to_json(now) for g in found]

        found = with_gateway(config, database_url, go, existing=True)
        if as_json:
            print_json(found)
            return
        if not found:
            console.print("no live grants" if not all_ else "no grants")
            return
        table = Table("id", "action", "scope", "grantor", "expires", "state", box=None)
        for g in found:
            scope = ", ".join(f"{k}={v}" for k, v in dict(g["scope"]).items())  # type: ignore[call-overload]
            state = "live" if g["live"] else ("revoked" if g["revoked_at"] else "expired")
            table.add_row(
                str(g["id"]),
                str(g["action"]),
                scope,
                str(g["grantor"]),
                str(g["expires_at"]),
                state,
            )
        console.print(table)

    @grants_app.command("revoke")
    def grants_revoke(
        grant_id: str,
        as_person: AsOpt = "",
        reason: Annotated[str | None, typer.Option(help="Why (recorded)")] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """End a standing grant at once (its grantor or an admin)."""
        from .. import grants

        if not as_person:
            fail("say who is revoking", hint="--as PERSON (the grantor or an admin)")

        async def go(gateway: Gateway) -> grants.Grant:
            grant = await grants.get(gateway.db, grant_id)
            if grant.grantor != as_person and not gateway.policy.directory.has_role(
                as_person, "admin"
            ):
                raise grants.GrantError(
                    "forbidden", "only the grant's grantor or an admin can revoke it", 403
                )
            return await grants.revoke(
                gateway.db,
                gateway.writer,
                grant_id,
                by=as_person,
                reason=reason,
                now=gateway.clock(),
                channel="cli",
            )

        try:
            done = with_gateway(config, database_url, go, existing=True)
        except grants.GrantError as exc:
            fail(f"{exc.code}: {exc.message}")
        console.print(f"revoked {done.id} ({done.action}, granted by {done.grantor})")
