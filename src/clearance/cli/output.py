"""How the command line talks to people: one console, plain language, consistent colours."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..policy.load import PolicyError

# Piped output is not cut to 80 columns: tables keep their ids whole.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
errors = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

EFFECT_STYLE = {
    "allow": "bold green",
    "approve": "bold yellow",
    "deny": "bold red",
    "block": "bold white on red",
}


def print_json(data: Any) -> None:
    """JSON on stdout, unstyled, for pipes and scripts."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def fail(message: str, *, hint: str | None = None, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}")  # user text is never markup
    if hint:
        errors.print(f"[dim]hint:[/] {escape(hint)}")
    raise typer.Exit(code)


def report_policy_error(exc: PolicyError) -> NoReturn:
    for problem in exc.problems:
        rule = f" [dim]\\[rule {escape(problem.rule_id)}][/]" if problem.rule_id else ""
        where, message = escape(str(problem.location)), escape(problem.message)
        errors.print(f"[bold]{where}[/]:{rule} [red]{message}[/]")
        if problem.hint:
            errors.print(f"    [dim]hint:[/] {escape(problem.hint)}")
    count = len(exc.problems)
    errors.print(f"[bold red]{count} problem{'s' if count != 1 else ''}[/]; nothing was loaded")
    raise typer.Exit(1)


def duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
