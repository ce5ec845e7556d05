"""`clearance init`, `check`, `policy lint` and `policy test`: working with policies offline."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..directory import Directory
from ..policy import Engine, PolicyError, Request, load_policy
from ..policy.model import DEFAULT_RISK, Decision, OnTimeout, Pick, Routing
from ..policy.testing import load_suite, run_suite
from .output import EFFECT_STYLE, console, duration, fail, print_json, report_policy_error

DEFAULT_CONFIG = "clearance.yaml"

ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--config", "-c", help="Policy file (repeat for several). Default: ./clearance.yaml"
    ),
]


def config_paths(config: list[Path] | None) -> list[Path]:
    return list(config) if config else [Path(DEFAULT_CONFIG)]


def load_or_exit(config: list[Path] | None) -> Any:
    paths = config_paths(config)
    try:
        return load_policy(paths)
    except PolicyError as exc:
        report_policy_error(exc)


def parse_kv(pairs: list[str]) -> dict[str, Any]:
    """`-p key=value`: the value is JSON when it parses as JSON, else a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(
                f"-p {pair!r} is not key=value", hint="for example: -p amount=7200 -p currency=USD"
            )
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_json_object(flag: str, raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"{flag} is not valid JSON: {exc.msg} at character {exc.pos}")
    if not isinstance(value, dict):
        fail(f'{flag} must be a JSON object like \'{{"key": "value"}}\'')
    return value


def _risk_option(raw: str) -> dict[str, Any]:
    """`--risk`, checked: the signals by name and type, the rest at rest."""
    from ..policy.testing import risk_map

    try:
        return risk_map(parse_json_object("--risk", raw))
    except ValueError as exc:
        fail(f"--risk: {exc}", hint="signals: " + ", ".join(DEFAULT_RISK))


def register(app: typer.Typer) -> None:
    policy = typer.Typer(help="Lint and test policies before they go live.", no_args_is_help=True)
    app.add_typer(policy, name="policy")

    @app.command()
    def init(
        path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(DEFAULT_CONFIG),
    ) -> None:
        """Write a starter clearance.yaml (the enterprise example) here."""
        if path.exists():
            fail(
                f"{path} already exists; not overwriting it",
                hint="move it away, or pass another path: clearance init other.yaml",
            )
        text = resources.files("clearance.starter").joinpath("clearance.yaml").read_text("utf-8")
        path.write_text(text, encoding="utf-8")
        console.print(f"[green]wrote[/] {path}")
        console.print(
            f"next: [bold]clearance policy lint --config {path}[/], then "
            f"[bold]clearance check payments.transfer -p amount=7200 "
            f"-p destination_country=US --actor carol --config {path}[/]"
        )

    @app.command()
    def check(
        action: Annotated[str, typer.Argument(help="The action, e.g. payments.transfer")],
        param: Annotated[
            list[str] | None, typer.Option("-p", "--param", help="key=value (JSON or text)")
        ] = None,
        params: Annotated[str | None, typer.Option(help="All parameters as a JSON object")] = None,
        actor: Annotated[str | None, typer.Option(help="The requesting user")] = None,
        agent: Annotated[str | None, typer.Option(help="The requesting agent")] = None,
        context: Annotated[str | None, typer.Option(help="Context facts as JSON")] = None,
        labels: Annotated[str | None, typer.Option(help="Comma-separated labels")] = None,
        risk: Annotated[str | None, typer.Option(help="Risk signals as JSON (testing)")] = None,
        config: ConfigOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the decision JSON")] = False,
    ) -> None:
        """Evaluate one request against the policy and print the decision.

        This is a dry run: it creates no approval and writes no audit entry.
        """
        loaded = load_or_exit(config)
        merged = parse_json_object("--params", params)
        merged.update(parse_kv(param or []))
        who: dict[str, str] = {}
        if actor:
            who["user"] = actor
        if agent:
            who["agent"] = agent
        request = Request(
            action=action,
            params=merged,
            actor=who,
            context=parse_json_object("--context", context),
            labels=tuple(x.strip() for x in (labels or "").split(",") if x.strip()),
            risk=_risk_option(risk) if risk is not None else None,
        )
        decision = Engine(loaded).evaluate(request)
        if as_json:
            print_json(decision.to_json())
        else:
            print_decision(decision, action, loaded.directory)

    @policy.command("lint")
    def lint(
        files: Annotated[list[Path] | None, typer.Argument(help="Policy files")] = None,
        config: ConfigOpt = None,
    ) -> None:
        """Check policy files: every problem with file:line:column and a hint."""
        paths = list(files) if files else config_paths(config)
        try:
            loaded = load_policy(paths)
        except PolicyError as exc:
            report_policy_error(exc)
        people = len(loaded.directory.people)
        console.print(
            f"[green]ok[/]: {len(loaded.rules)} rules, {people} people, "
            f"{len(loaded.directory.groups)} groups, default {loaded.default} "
            f"[dim]({loaded.version[:19]}…)[/]"
        )

    @policy.command("test")
    def test(
        files: Annotated[list[Path] | None, typer.Argument(help="Policy test files")] = None,
        config: ConfigOpt = None,
        verbose: Annotated[bool, typer.Option("-v", "--verbose", help="List every case")] = False,
    ) -> None:
        """Run policy tests (YAML files of requests and expected decisions)."""
        paths = list(files) if files else _default_test_files(config_paths(config))
        if not paths:
            fail("no policy test files found", hint="pass them: clearance policy test tests.yaml")
        passed = failed = 0
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("")
        table.add_column("test")
        table.add_column("effect")
        table.add_column("where", style="dim")
        details: list[str] = []
        for path in paths:
            try:
                suite = load_suite(path)
                policy_files = (
                    [Path(p) for p in suite.policy_files]
                    if suite.policy_files
                    else config_paths(config)
                )
                loaded = load_policy(policy_files)
            except PolicyError as exc:
                report_policy_error(exc)
            for result in run_suite(loaded, suite):
                where = str(result.case.location)
                if result.passed:
                    passed += 1
                    if verbose:
                        table.add_row("[green]✓[/]", result.case.spec.name, result.effect, where)
                else:
                    failed += 1
                    table.add_row("[red]✗[/]", result.case.spec.name, result.effect, where)
                    details.extend(
                        f"[bold]{where}[/] {result.case.spec.name}: [red]{f}[/]"
                        for f in result.failures
                    )
        if table.row_count:
            console.print(table)
        for line in details:
            console.print(line)
        style = "red" if failed else "green"
        console.print(f"[{style}]{passed} passed, {failed} failed[/]")
        if failed:
            raise typer.Exit(1)


def _default_test_files(configs: list[Path]) -> list[Path]:
    found: list[Path] = []
    for config in configs:
        base = config.parent
        for pattern in ("tests.yaml", "*_test.yaml", "*.test.yaml"):
            found.extend(sorted(base.glob(pattern)))
    return list(dict.fromkeys(found))


def print_decision(decision: Decision, action: str, directory: Directory) -> None:
    effect = decision.effect.value
    console.print(f"[{EFFECT_STYLE[effect]}]{effect.upper()}[/] {action}")
    for reason in decision.reasons:
        console.print(f"  why: {reason}")
    if decision.approval:
        for i, stage in enumerate(decision.approval.stages, 1):
            parts = []
            for req in stage.requirements:
                names = ", ".join(directory.display_name(p) for p in req.approvers)
                parts.append(f"{req.required} of {names}")
            extra = []
            if stage.mfa:
                extra.append(f"second factor ({stage.mfa})")
            if stage.require_context:
                extra.append(
                    "from "
                    + "; ".join(f"{fact} in {', '.join(v)}" for fact, v in stage.require_context)
                )
            suffix = f" — {', '.join(extra)}" if extra else ""
            console.print(f"  stage {i} {stage.name}: " + " and ".join(parts) + suffix)
            if stage.routing is not None:
                for line in _routing_lines(stage.routing, directory):
                    console.print(f"    {line}")
        console.print(f"  expires after {duration(decision.approval.timeout_s)} if undecided")
    if decision.alert:
        names = ", ".join(directory.display_name(p) for p in decision.alert)
        console.print(f"  alert: {names}")
    console.print(
        f"  [dim]policy {decision.policy_version[:19]}…  decision {decision.decision_id}[/]"
    )


def _routing_lines(routing: Routing, directory: Directory) -> list[str]:
    """Reminders, escalation and paging of a stage, in words."""
    lines = []
    if routing.pick is not Pick.ALL:
        how = "in turn" if routing.pick is Pick.ROUND_ROBIN else "the least loaded first"
        lines.append(f"pages only as many people as required, {how}")
    if routing.remind_after_s:
        lines.append(f"reminds who has not voted every {duration(routing.remind_after_s)}")
    if routing.escalate_after_s:
        levels = " → ".join(
            ", ".join(directory.display_name(p) for p in level) for level in routing.escalate_to
        )
        to = f": {levels}" if levels else " (to the rest of the group)"
        lines.append(f"escalates after {duration(routing.escalate_after_s)}{to}")
    if routing.on_timeout is OnTimeout.ESCALATE:
        lines.append("at the deadline, escalates again instead of expiring")
    return lines
