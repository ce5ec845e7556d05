"""`clearance users mfa enroll | list | reset` (second factors) and `clearance admin changes`.

Added to `gateway_cmds.users_app` when this module is imported (by `clearance.cli`).
`enroll` prints the `otpauth://` URI and a QR code for the authenticator app, then asks for a
first code (or takes `--code`) and confirms the factor only if it is right. The secret is
shown only here, once; it is stored encrypted when `server.mfa.secret_key` is set. Every
enrolment and reset is audited (never the secret). Security keys (WebAuthn) are registered
in the web inbox (Security), where the browser can talk to them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from .gateway_cmds import DatabaseOpt, open_gateway, users_app
from .output import console, fail, print_json
from .policy_cmds import ConfigOpt

if TYPE_CHECKING:
    from ..audit.writer import WriteTx
    from ..gateway import Gateway

mfa_app = typer.Typer(
    help="Second factors for approvers (TOTP, security keys).", no_args_is_help=True
)
users_app.add_typer(mfa_app, name="mfa")


def _gateway_for(
    person: str, config: ConfigOpt, database_url: str | None, *, existing: bool = False
) -> Gateway:
    gateway = open_gateway(config, database_url, existing=existing)
    if gateway.policy.directory.get(person) is None:
        asyncio.run(gateway.aclose())
        fail(
            f"no person {person!r} in the directory",
            hint="people come from the policy's directory: section",
        )
    return gateway


@mfa_app.command("enroll")
def enroll(
    person: Annotated[str, typer.Argument(help="The approver to enrol")],
    code: Annotated[
        str | None, typer.Option(help="The first code from the app (asked for when omitted)")
    ] = None,
    qr: Annotated[bool, typer.Option(help="Print a QR code in the terminal")] = True,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Enrol an authenticator app (TOTP) for PERSON: scan the QR code, type the first code."""
    from ..audit.entry import AuditDraft
    from ..identity import mfa

    gateway = _gateway_for(person, config, database_url)
    try:
        settings = mfa.MfaSettings.from_settings(gateway.policy.settings)
    except ValueError as exc:
        asyncio.run(gateway.aclose())
        fail(str(exc))
    now = gateway.clock()
    try:
        started = gateway.writer.run_sync(
            lambda tx: mfa.start_totp(tx.conn, person, now, settings, label="authenticator app")
        )
    except mfa.MfaError as exc:
        asyncio.run(gateway.aclose())
        fail(exc.message)
    console.print(f"Add this account to {person}'s authenticator app:")
    console.print(f"  {started.uri}", markup=False)
    if qr:
        mfa.terminal_qr(started.uri, lambda text: print(text, end=""))
    first = code if code is not None else typer.prompt("code shown by the app")
    when = gateway.clock()

    def confirm(tx: WriteTx) -> str | None:
        try:
            mfa.confirm_totp(tx.conn, person, first, when, settings)
        except mfa.MfaError as exc:
            tx.audit(AuditDraft(kind="mfa.failed", ts=when, actor="clearance users mfa",
                                approver=person, channel="cli",
                                data={"method": "totp", "code": exc.code}))  # fmt: skip
            return exc.message
        tx.audit(AuditDraft(kind="mfa.enrolled", ts=when, actor="clearance users mfa",
                            approver=person, channel="cli", data={"method": "totp"}))  # fmt: skip
        return None

    try:
        problem = gateway.writer.run_sync(confirm)
    finally:
        asyncio.run(gateway.aclose())
    if problem is not None:
        fail(f"not enrolled: {problem}", hint="run the command again and type the current code")
    console.print(f"authenticator app enrolled for {person}")


@mfa_app.command("list")
def list_factors(
    person: Annotated[str, typer.Argument(help="The approver")],
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List PERSON's second factors (never their secrets)."""
    from ..identity import mfa

    gateway = _gateway_for(person, config, database_url, existing=True)
    try:
        with gateway.db.connect() as conn:
            found = mfa.factors(conn, person)
    finally:
        asyncio.run(gateway.aclose())
    rows = [
        {"id": f.id, "kind": f.kind, "label": f.label, "created_at": f.created_at.isoformat(),
         "confirmed": f.confirmed_at is not None}
        for f in found
    ]  # fmt: skip
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"{person} has no second factor")
    for row in rows:
        state = "active" if row["confirmed"] else "unconfirmed"
        console.print(f"{row['id']}  {row['kind']:<9} {state:<12} {row['label'] or ''}")


@mfa_app.command("reset")
def reset(
    person: Annotated[str, typer.Argument(help="The approver")],
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Remove every second factor of PERSON (a lost phone or key); they enrol again."""
    from ..audit.entry import AuditDraft
    from ..identity import mfa

    gateway = _gateway_for(person, config, database_url, existing=True)
    now = gateway.clock()

    def work(tx: WriteTx) -> int:
        removed = mfa.reset(tx.conn, person)
        tx.audit(AuditDraft(kind="mfa.reset", ts=now, actor="clearance users mfa",
                            approver=person, channel="cli", data={"removed": removed}))  # fmt: skip
        return removed

    try:
        removed = gateway.writer.run_sync(work)
    finally:
        asyncio.run(gateway.aclose())
    console.print(f"removed {removed} second factor{'' if removed == 1 else 's'} of {person}")


def register(app: typer.Typer) -> None:
    """`clearance admin changes | change ID`: the four-eyes changes (read-only: a change is
    proposed through the API or the web inbox, by an admin, with their own credentials)."""
    admin_app = typer.Typer(help="Policy and directory changes (four eyes).", no_args_is_help=True)
    app.add_typer(admin_app, name="admin")

    @admin_app.command("changes")
    def changes(
        limit: Annotated[int, typer.Option(help="At most this many")] = 50,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """List proposed changes, newest first, with what became of them."""
        from ..admin_changes import list_changes

        gateway = open_gateway(config, database_url, existing=True)
        try:
            with gateway.db.connect() as conn:
                found = list_changes(conn, limit)
        finally:
            asyncio.run(gateway.aclose())
        if as_json:
            print_json([c.to_json() for c in found])
            return
        if not found:
            console.print("no changes proposed yet")
        for c in found:
            console.print(
                f"{c.id}  {c.state:<8} {c.created_at:%Y-%m-%d %H:%M}  {c.author:<12} {c.summary}"
                f"  (approval {c.approval_id})",
                markup=False,
            )

    @admin_app.command("change")
    def change(
        change_id: Annotated[str, typer.Argument(help="The change's id (chg_…)")],
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """Show one change: who proposed it, its approval, its state and its diff."""
        from ..admin_changes import load_change

        gateway = open_gateway(config, database_url, existing=True)
        try:
            with gateway.db.connect() as conn:
                found = load_change(conn, change_id)
        finally:
            asyncio.run(gateway.aclose())
        if found is None:
            fail(f"no change {change_id!r}", hint="list them with `clearance admin changes`")
        console.print(f"{found.summary}", markup=False)
        console.print(
            f"  {found.action} by {found.author} — {found.state}"
            f"{f' ({found.error})' if found.error else ''}; approval {found.approval_id}",
            markup=False,
        )
        if found.diff:
            print(found.diff, end="" if found.diff.endswith("\n") else "\n")
