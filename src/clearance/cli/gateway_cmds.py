"""Commands that run or administer a gateway: serve, demo, keys, users, approvals, audit."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.table import Table

from ..policy import PolicyError
from .output import console, errors, fail, print_json, report_policy_error
from .policy_cmds import ConfigOpt, config_paths, parse_json_object, parse_kv

if TYPE_CHECKING:  # the gateway and the store load only for the commands that use them
    from ..approvals.records import StoredApproval
    from ..gateway import Gateway
    from ..identity.keys import NewKey

T = TypeVar("T")
DEMO_PASSWORD = "clearance-demo"  # noqa: S105 - the documented demo password for `make run`
DEMO_AGENT = "demo-agent"
DEMO_KEY_FILE = Path(".clearance/demo-agent.key")

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="CLEARANCE_DATABASE_URL",
        help="Overrides server.database_url from the config",
    ),
]


def open_gateway(
    config: list[Path] | None, database_url: str | None = None, *, existing: bool = False
) -> Gateway:
    """Open the gateway, with plain-language errors. `existing`: for a command that looks at
    (or changes) what a gateway stored, the database must already exist: pointed elsewhere
    (another directory's `.clearance/`, a mistyped URL), it says so instead of creating an
    empty one and reporting on that — an audit trail that "verifies" because there is none."""
    from ..gateway import Gateway
    from ..store.errors import DatabaseNotFound, StoreUnavailable

    try:
        return Gateway.open(config_paths(config), database_url=database_url, existing=existing)
    except PolicyError as exc:
        report_policy_error(exc)
    except StoreUnavailable as exc:
        fail(f"the database is unavailable: {exc}")
    except DatabaseNotFound as exc:
        fail(
            f"{exc}; nothing was created or changed",
            hint="run this where the gateway runs (beside its .clearance/ directory), or pass "
            "--database-url (or set CLEARANCE_DATABASE_URL) to the gateway's database",
        )


def with_gateway(
    config: list[Path] | None,
    database_url: str | None,
    work: Callable[[Gateway], Awaitable[T]],
    *,
    existing: bool = False,
) -> T:
    """Open the gateway, run `work` on an event loop, close it — with plain-language errors
    (`existing`: see `open_gateway`)."""
    from ..store.errors import StoreUnavailable

    gateway = open_gateway(config, database_url, existing=existing)

    async def main() -> T:
        try:
            return await work(gateway)
        finally:
            await gateway.aclose()

    try:
        return asyncio.run(main())
    except StoreUnavailable as exc:
        fail(f"the database is unavailable: {exc}")


def start_fake(name: str, gateway_url: str) -> tuple[Path, str]:
    """Run a platform's fake (and its clickable page) beside the demo, and write the channel
    settings that point at it."""
    from ..testing.fakes import demo

    if name not in demo.DEMOS:
        fail(f"no demo fake named {name!r}", hint=f"available: {', '.join(demo.NAMES)}")
    running = demo.start(name, gateway_url)
    path = Path(f".clearance/demo-{name}.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = json.dumps({"channels": {name: running.settings}}, indent=2)  # JSON is YAML
    path.write_text(
        f"# Written by `clearance demo --fake {name}`: the channel, pointed at its fake.\n"
        + settings
        + "\n",
        encoding="utf-8",
    )
    return path, running.note


users_app = typer.Typer(help="Approvers: sign-in, delegates, second factors.", no_args_is_help=True)
"""`clearance users …`: other command modules add their commands to this group."""


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(help="API keys for agents and approvers.", no_args_is_help=True)
    approvals_app = typer.Typer(help="List, inspect and decide approvals.", no_args_is_help=True)
    audit_app = typer.Typer(help="Verify and export the audit trail.", no_args_is_help=True)
    channels_app = typer.Typer(help="Approval channels (Slack, email, …).", no_args_is_help=True)
    app.add_typer(channels_app, name="channels")
    app.add_typer(keys_app, name="keys")
    app.add_typer(users_app, name="users")
    app.add_typer(approvals_app, name="approvals")
    app.add_typer(audit_app, name="audit")

    @app.command()
    def serve(
        config: ConfigOpt = None,
        host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on")] = 8750,
        database_url: DatabaseOpt = None,
        pretty_logs: Annotated[bool, typer.Option(help="Readable logs instead of JSON")] = False,
    ) -> None:
        """Run the gateway: HTTP API, web inbox at /ui, metrics at /metrics."""
        from ..server.run import serve as run
        from ..store.errors import StoreUnavailable

        paths = config_paths(config)
        try:
            run(
                paths,
                host=host,
                port=port,
                database_url=database_url,
                json_logs=not pretty_logs,
                announce=pretty_logs,
            )
        except PolicyError as exc:
            report_policy_error(exc)
        except StoreUnavailable as exc:
            fail(f"the database is unavailable: {exc}")

    @app.command()
    def demo(
        config: ConfigOpt = None,
        host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on")] = 8750,
        database_url: DatabaseOpt = None,
        fake: Annotated[
            list[str] | None,
            typer.Option(
                "--fake",
                help="Point a channel at its local fake, with a clickable page: slack, "
                "discord, teams, telegram, whatsapp, webhook or email",
            ),
        ] = None,
    ) -> None:
        """Set up demo sign-ins and an agent key (once), print how to try it, then serve."""
        from ..audit.entry import AuditDraft, Kind
        from ..identity import keys, passwords

        url = f"http://{host}:{port}"
        fakes = [start_fake(name, url) for name in (fake or [])]
        config = [*config_paths(config), *(path for path, _ in fakes)]
        gateway = open_gateway(config, database_url)
        now = gateway.clock()
        people = list(gateway.policy.directory.people)

        def setup(tx: Any) -> tuple[list[str], str | None]:
            created = []
            for person in people:
                if not passwords.has_password(tx.conn, person):
                    passwords.set_password(tx.conn, person, DEMO_PASSWORD, now)
                    created.append(person)
            token = None
            saved = DEMO_KEY_FILE.read_text().strip() if DEMO_KEY_FILE.exists() else ""
            if not saved or keys.verify_token(tx.conn, saved, now) is None:
                new = keys.create_key(
                    tx.conn, kind="agent", subject=DEMO_AGENT, now=now, label="make run demo"
                )
                tx.audit(
                    AuditDraft(
                        kind=Kind.KEY_CREATED,
                        ts=now,
                        actor="clearance demo",
                        data={"key_id": new.key.id, "kind": "agent", "subject": DEMO_AGENT},
                    )
                )
                token = new.token
            return created, token

        created, token = gateway.writer.run_sync(setup)
        if token:
            DEMO_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
            DEMO_KEY_FILE.write_text(token + "\n", encoding="utf-8")
            DEMO_KEY_FILE.chmod(0o600)
        asyncio.run(gateway.aclose())
        console.print(
            f"\n[bold]Clearance[/] is starting at [bold]{url}[/] (ready when uvicorn says so below)"
        )
        console.print(f"  web inbox:  {url}/ui")
        if created:
            console.print(f"  demo sign-ins (password [bold]{DEMO_PASSWORD}[/], demo only):")
        else:
            console.print("  sign-ins: the people of the policy, with the passwords already set")
        console.print(
            "    alice, bob (managers) · dana, erin (finance directors) · ivan, olga (admins)"
            " · frank (emergency) · sam (security)"
        )
        console.print(f"  agent key:  {DEMO_KEY_FILE} (agent '{DEMO_AGENT}')")
        console.print("\n  In another terminal, let a demo agent ask for a $2,000 transfer:")
        console.print(
            f"    [bold].venv/bin/clearance request payments.transfer -p amount=2000 "
            f"-p destination_country=US -p payee_id=acme --actor carol --url {url} "
            f"--key-file {DEMO_KEY_FILE}[/]"
        )
        console.print(f"  then sign in as alice at {url}/ui and approve it.")
        off_hours = off_hours_now(gateway)
        if off_hours:
            console.print(
                f"  Off hours now — {off_hours.removeprefix('requested ')}: the example's"
                " off-hours rule asks one more approver, so sign in as bob too."
            )
        console.print()
        for _, note in fakes:
            console.print(f"  {note}")
        serve(config=config, host=host, port=port, database_url=database_url, pretty_logs=True)

    @app.command()
    def request(
        action: Annotated[str, typer.Argument(help="The action, e.g. payments.transfer")],
        param: Annotated[list[str] | None, typer.Option("-p", "--param")] = None,
        params: Annotated[str | None, typer.Option(help="Parameters as JSON")] = None,
        actor: Annotated[str | None, typer.Option(help="The user on whose behalf")] = None,
        context: Annotated[str | None, typer.Option(help="Context as JSON")] = None,
        url: Annotated[str, typer.Option(envvar="CLEARANCE_URL")] = "http://127.0.0.1:8750",
        key: Annotated[
            str | None, typer.Option(envvar="CLEARANCE_API_KEY", help="Agent API key")
        ] = None,
        key_file: Annotated[Path | None, typer.Option(help="File holding the API key")] = None,
        timeout: Annotated[float | None, typer.Option(help="Give up waiting after seconds")] = None,
    ) -> None:
        """Act as an agent: ask a running gateway, and wait for people when needed."""
        from ..sdk.errors import ActionRefused, ClearanceError
        from ..sdk.remote import RemoteGate

        token = key or (key_file.read_text().strip() if key_file and key_file.exists() else None)
        if not token:
            fail("no API key", hint="pass --key, --key-file or set CLEARANCE_API_KEY")
        merged = parse_json_object("--params", params)
        merged.update(parse_kv(param or []))

        async def go() -> int:
            gate = RemoteGate(url, token)
            try:
                result = await gate.check(
                    action,
                    merged,
                    actor={"user": actor} if actor else {},
                    context=parse_json_object("--context", context),
                )
                console.print(f"{result.effect.upper()}: " + "; ".join(result.reasons))
                if result.effect != "approve" or not result.approval_id:
                    return 0 if result.effect == "allow" else 2
                console.print(
                    f"waiting for approval of {result.approval_id} "
                    f"(decide at {url}/ui/approvals/{result.approval_id}) …"
                )
                status = await gate.wait(result.approval_id, timeout)
                who = ", ".join(status.approvers)
                reason = status.decided_reason if status.state != "approved" else None
                console.print(
                    f"{status.state.upper()}"
                    + (f" by {who}" if who else "")
                    + (f": {reason}" if reason else "")
                )
                return 0 if status.state == "approved" else 2
            except ActionRefused as exc:
                console.print(str(exc))
                return 2
            except ClearanceError as exc:
                errors.print(f"[red]error:[/] {exc}")
                return 1
            finally:
                await gate.aclose()

        raise typer.Exit(asyncio.run(go()))

    # -- keys ------------------------------------------------------------------------------------
    @keys_app.command("create")
    def keys_create(
        agent: Annotated[str | None, typer.Option(help="An agent's key (checks actions)")] = None,
        person: Annotated[str | None, typer.Option(help="An approver's personal key")] = None,
        label: Annotated[str | None, typer.Option(help="A note on what it is for")] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """Create an API key. It is shown once; only its hash is stored."""
        from ..audit.entry import AuditDraft, Kind
        from ..identity import keys

        if bool(agent) == bool(person):
            fail("give exactly one of --agent NAME or --person ID")
        gateway = open_gateway(config, database_url)
        if person and gateway.policy.directory.get(person) is None:
            asyncio.run(gateway.aclose())
            fail(f"no person {person!r} in the directory")
        kind: Literal["agent", "person"] = "agent" if agent else "person"
        subject = agent or person or ""
        now = gateway.clock()

        def create(tx: Any) -> NewKey:
            new = keys.create_key(tx.conn, kind=kind, subject=subject, now=now, label=label)
            tx.audit(
                AuditDraft(
                    kind=Kind.KEY_CREATED,
                    ts=now,
                    actor="cli",
                    data={"key_id": new.key.id, "kind": kind, "subject": subject},
                )
            )
            return new

        new = gateway.writer.run_sync(create)
        asyncio.run(gateway.aclose())
        console.print(f"created {new.key.id} for {kind} {subject!r}. The key (shown once):")
        typer.echo(new.token)

    @keys_app.command("list")
    def keys_list(config: ConfigOpt = None, database_url: DatabaseOpt = None) -> None:
        """List API keys (never their secrets)."""
        from ..identity import keys

        gateway = open_gateway(config, database_url, existing=True)
        with gateway.db.connect() as conn:
            found = keys.list_keys(conn)
        asyncio.run(gateway.aclose())
        table = Table("id", "kind", "subject", "label", "created", "revoked", box=None)
        for k in found:
            table.add_row(
                k.id,
                k.kind,
                k.subject,
                k.label or "",
                k.created_at.isoformat(),
                k.revoked_at.isoformat() if k.revoked_at else "",
            )
        console.print(table)

    @keys_app.command("revoke")
    def keys_revoke(
        key_id: str, config: ConfigOpt = None, database_url: DatabaseOpt = None
    ) -> None:
        """Revoke an API key at once."""
        from ..audit.entry import AuditDraft, Kind
        from ..identity import keys

        gateway = open_gateway(config, database_url, existing=True)
        now = gateway.clock()

        def revoke(tx: Any) -> bool:
            done = keys.revoke_key(tx.conn, key_id, now)
            if done:
                tx.audit(
                    AuditDraft(kind=Kind.KEY_REVOKED, ts=now, actor="cli", data={"key_id": key_id})
                )
            return done

        done = gateway.writer.run_sync(revoke)
        asyncio.run(gateway.aclose())
        if not done:
            fail(f"no active key {key_id!r}", hint="see `clearance keys list`")
        console.print(f"revoked {key_id}")

    # -- users -----------------------------------------------------------------------------------
    @users_app.command("set-password")
    def set_password(
        person: str,
        password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin")] = False,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """Set an approver's web-inbox password (argon2-hashed)."""
        from ..identity import passwords

        gateway = open_gateway(config, database_url)
        if gateway.policy.directory.get(person) is None:
            asyncio.run(gateway.aclose())
            fail(
                f"no person {person!r} in the directory",
                hint="people come from the policy's directory: section",
            )
        if password_stdin:
            secret = sys.stdin.readline().rstrip("\n")
        else:
            secret = getpass.getpass(f"new password for {person}: ")
            if getpass.getpass("again: ") != secret:
                asyncio.run(gateway.aclose())
                fail("the two passwords differ")
        now = gateway.clock()
        try:
            gateway.writer.run_sync(lambda tx: passwords.set_password(tx.conn, person, secret, now))
        except passwords.WeakPassword as exc:
            fail(str(exc))
        finally:
            asyncio.run(gateway.aclose())
        console.print(f"password set for {person}")

    # -- approvals -------------------------------------------------------------------------------
    @approvals_app.command("list")
    def approvals_list(
        state: Annotated[str | None, typer.Option(help="pending, approved, denied, …")] = None,
        limit: Annotated[int, typer.Option(help="At most this many")] = 50,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """List approvals, newest first."""
        from ..approvals import workflow

        found = with_gateway(
            config,
            database_url,
            lambda g: g.approvals.list(state=state, limit=limit),
            existing=True,
        )
        if as_json:
            print_json([s.approval.to_json() for s in found])
            return
        if not found:
            console.print("no approvals" + (f" in state {state}" if state else ""))
            return
        table = Table("id", "state", "action", "requester", "created", "status", box=None)
        for s in found:
            a = s.approval
            table.add_row(
                a.id,
                a.state.value,
                a.action,
                a.requester or s.agent or "",
                a.created_at.strftime("%Y-%m-%d %H:%M"),
                workflow.summary(a),
            )
        console.print(table)

    @approvals_app.command("show")
    def approvals_show(
        approval_id: str,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Show one approval: the request, why, the stages and the votes."""
        from ..approvals.service import ApprovalNotFound

        try:
            stored = with_gateway(
                config, database_url, lambda g: g.approvals.get(approval_id), existing=True
            )
        except ApprovalNotFound as exc:
            fail(exc.message)
        if as_json:
            print_json(stored.approval.to_json())
            return
        _print_approval(stored)

    def _vote(decision: str) -> Callable[..., None]:
        def command(
            approval_id: str,
            comment: Annotated[
                str | None, typer.Option("--comment", "-m", help="Why (required to deny)")
            ] = None,
            url: Annotated[str, typer.Option(envvar="CLEARANCE_URL")] = "http://127.0.0.1:8750",
            token: Annotated[
                str | None, typer.Option(envvar="CLEARANCE_TOKEN", help="Your personal API key")
            ] = None,
            totp: Annotated[
                str | None,
                typer.Option("--totp", help="A current authenticator code (for an mfa: stage)"),
            ] = None,
        ) -> None:
            import httpx

            if not token:
                fail(
                    "deciding needs your personal API key",
                    hint="clearance keys create --person YOU, then pass --token or set "
                    "CLEARANCE_TOKEN",
                )
            try:
                response = httpx.post(
                    f"{url.rstrip('/')}/v1/approvals/{approval_id}/decisions",
                    json={"decision": decision, "comment": comment, "totp": totp},
                    headers={"authorization": f"Bearer {token}"},
                    timeout=30,
                )
            except httpx.HTTPError as exc:
                fail(f"cannot reach the gateway at {url}: {exc}")
            data = response.json() if response.content else {}
            if response.status_code >= 400:
                fail(str(data.get("message", response.text)))
            console.print(f"{data['id']}: {data['summary']}")

        command.__doc__ = f"{decision.capitalize()} an approval, as yourself (personal API key)."
        return command

    approvals_app.command("approve")(_vote("approve"))
    approvals_app.command("deny")(_vote("deny"))

    # -- channels --------------------------------------------------------------------------------
    @channels_app.command("test")
    def channels_test(
        name: Annotated[str, typer.Argument(help="A configured channel, e.g. slack")],
        to: Annotated[str, typer.Option("--to", help="A person of the directory")],
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """Send a test message to a person and print what the platform answered."""
        from datetime import timedelta

        from ..channels.base import ChannelError, Message, StageView
        from ..channels.hub import ChannelHub
        from ..channels.registry import UnknownChannel

        gateway = open_gateway(config, database_url)

        async def go() -> int:
            try:
                hub = ChannelHub.from_settings(gateway)
            except (UnknownChannel, ValueError) as exc:
                errors.print(f"[red]error:[/] channel settings: {exc}")
                return 1
            try:
                person = gateway.policy.directory.get(to)
                if name not in hub.channels:
                    known = ", ".join(hub.channels) or "none"
                    errors.print(f"[red]error:[/] no channel {name!r} is configured ({known})")
                    return 1
                if person is None:
                    errors.print(f"[red]error:[/] no person {to!r} in the directory")
                    return 1
                address = dict(hub.router.routes(person)).get(name)
                if address is None:
                    errors.print(f"[red]error:[/] {to} has no {name} address in the directory")
                    return 1
                now = gateway.clock()
                message = Message(
                    approval_id="test",
                    action="clearance.test",
                    params={"note": "a test"},
                    reasons=("This is a test message from `clearance channels test`.",),
                    requester=None,
                    agent="clearance",
                    stage=StageView(0, "test", 1),
                    expires_at=now + timedelta(hours=1),
                    state="test",
                    status_line="Test message: no action is needed.",
                    inbox_url=f"{hub.public_url.rstrip('/')}/ui",
                    recipient=person,
                )
                with console.status(f"sending through {name} to {address}…"):
                    sent = await hub.channels[name].send(message, address)
            except ChannelError as exc:
                errors.print(f"[red]the platform refused:[/] {exc}")
                return 1
            finally:
                await hub.aclose()
                await gateway.aclose()
            console.print(f"[green]sent[/] through {name} to {address}")
            print_json({"ref": sent.ref, "response": sent.response})
            return 0

        raise typer.Exit(asyncio.run(go()))

    # -- audit -----------------------------------------------------------------------------------
    @audit_app.command("verify")
    def audit_verify(config: ConfigOpt = None, database_url: DatabaseOpt = None) -> None:
        """Check every entry of every chain; name the first bad one. Exit 1 if tampered."""
        from ..audit.export import verify_store

        gateway = open_gateway(config, database_url, existing=True)
        with console.status("verifying the audit chain…"):
            report = verify_store(gateway.db)
        asyncio.run(gateway.aclose())
        if report.ok:
            console.print(f"[green]{report.summary()}[/]")
            return
        errors.print(f"[bold red]{report.summary()}[/]")
        for problem in report.problems:
            where = f"entry {problem.seq}" if problem.seq is not None else "chain"
            errors.print(f"  chain {problem.chain_id!r}, {where}: {problem.reason}")
        raise typer.Exit(1)

    @audit_app.command("export")
    def audit_export(
        fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
        since: Annotated[str | None, typer.Option(help="From this time (inclusive)")] = None,
        until: Annotated[str | None, typer.Option(help="Up to this time (exclusive)")] = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="File (else stdout)")
        ] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        section: Annotated[
            str, typer.Option(help="all, or overrides (emergency overrides and reviews, jsonl)")
        ] = "all",
    ) -> None:
        """Export audit entries as JSON lines or CSV."""
        from ..audit.export import export_csv, export_jsonl, export_overrides
        from ..server.timeparse import parse_when

        if fmt not in ("jsonl", "csv"):
            fail(f"unknown format {fmt!r}", hint="use --format jsonl or --format csv")
        if section not in ("all", "overrides") or (section == "overrides" and fmt != "jsonl"):
            fail(f"unknown section {section!r} for {fmt}", hint="--section overrides is jsonl")
        try:
            start = parse_when(since) if since else None
            end = parse_when(until) if until else None
        except ValueError as exc:
            fail(str(exc))
        gateway = open_gateway(config, database_url, existing=True)
        writer = export_jsonl if fmt == "jsonl" else export_csv
        if section == "overrides":
            writer = export_overrides
        try:
            if output is None:
                count = writer(gateway.db, sys.stdout, since=start, until=end)
            else:
                with output.open("w", encoding="utf-8", newline="") as stream:
                    count = writer(gateway.db, stream, since=start, until=end)
        finally:
            asyncio.run(gateway.aclose())
        if output is not None:
            console.print(f"wrote {count:,} entries to {output}")


def _print_approval(stored: StoredApproval) -> None:
    from ..approvals import workflow

    a = stored.approval
    console.print(f"[bold]{a.id}[/] {a.action} — {a.state.value}")
    console.print(
        f"  requested by {a.requester or '-'} (agent {stored.agent or '-'}) "
        f"at {a.created_at.isoformat()}; expires {a.expires_at.isoformat()}"
    )
    console.print("  params: " + json.dumps(a.params, ensure_ascii=False))
    for reason in stored.reasons:
        console.print(f"  why: {reason}")
    for i, stage in enumerate(a.plan.stages):
        for progress in a.stage_progress(i):
            console.print(
                f"  stage {i + 1} {stage.name}: {len(progress.counted)} of "
                f"{progress.required} from {', '.join(progress.approvers)}"
            )
    for delegator, delegate in a.delegations:
        console.print(f"  {delegate} stands in for {delegator}")
    for entry in a.routing_log:
        what = "reminded" if entry.kind == "reminder" else f"escalated (level {entry.level})"
        console.print(
            f"  stage {entry.stage_index + 1} {what} at {entry.at.isoformat()}: "
            f"{', '.join(entry.people) or 'nobody'}"
        )
    for vote in a.votes:
        note = f" — {vote.comment}" if vote.comment else ""
        behalf = f" for {vote.on_behalf_of}" if vote.on_behalf_of else ""
        console.print(
            f"  {vote.decision.value} by {vote.person}{behalf} via {vote.channel} at "
            f"{vote.at.isoformat()}{note}"
        )
    console.print(f"  {workflow.summary(a)}")


def off_hours_now(gateway: Gateway) -> str | None:
    """Why now is off hours by the policy's risk settings (None within hours, or without)."""
    from ..risk.signals import off_hours_reason

    risk = gateway.risk
    return off_hours_reason(gateway.clock(), risk.settings) if risk is not None else None
