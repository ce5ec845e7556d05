"""The controls from the command line: override, review, export, grants."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clearance import grants
from clearance.cli import app
from clearance.gateway import Gateway

from .helpers import pay, write_policy

runner = CliRunner()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str]:
    return write_policy(tmp_path), f"sqlite:///{tmp_path}/c.db"


def run(setup: tuple[Path, str], *args: str) -> tuple[int, str]:
    path, db = setup
    result = runner.invoke(app, [*args, "--config", str(path), "--database-url", db])
    return result.exit_code, result.output


def test_override_review_and_export_from_the_cli(setup: tuple[Path, str]) -> None:
    """`clearance override` releases a call ahead; the overrider cannot review it, another
    reviewer can; the export's overrides section has it with its entries."""
    code, out = run(
        setup,
        "override",
        "payments.transfer",
        "-p",
        "amount=9000",
        "-p",
        "payee_id=acme",
        "--actor",
        "carol",
        "--agent",
        "billing-bot",
        "--reason",
        "incident 12",
        "--as",
        "frank",
        "--json",
    )
    assert code == 0, out
    made = json.loads(out)
    assert made["state"] == "approved"
    override_id = made["override"]["id"]
    code, out = run(setup, "overrides", "review", override_id, "--justified", "--as", "frank")
    assert code == 1 and "self_review" in out
    code, out = run(setup, "overrides", "review", override_id, "--justified", "--as", "sam")
    assert code == 0 and "justified by sam" in out
    code, out = run(setup, "overrides", "export")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    overrides = [line for line in lines if line["section"] == "override"]
    assert overrides[0]["override"]["review_state"] == "justified"
    kinds = [e["kind"] for e in overrides[0]["entries"]]
    assert kinds == ["override.used", "override.reviewed"]
    refused = [line for line in lines if line["section"] == "override_refused"]
    assert refused[0]["entry"]["data"]["code"] == "self_review"


def test_override_without_reason_fails(setup: tuple[Path, str]) -> None:
    """No reason: the command exits 1 and says why."""
    code, out = run(setup, "override", "payments.transfer", "-p", "amount=9000", "--as", "frank")
    assert code == 1 and "reason_required" in out


def test_grants_list_and_revoke_from_the_cli(setup: tuple[Path, str]) -> None:
    """A grant made through the gateway is listed, refused to a non-grantor, revoked by an
    admin, and then no longer live."""
    path, db = setup

    async def make() -> str:
        gw = Gateway.open(path, database_url=db)
        try:
            held = await gw.check(pay())
            assert held.approval is not None
            _, grant = await grants.approve_always(
                gw.approvals, gw.policy, held.approval.approval.id, person="alice"
            )
            assert grant is not None
            return grant.id
        finally:
            await gw.aclose()

    grant_id = asyncio.run(make())
    code, out = run(setup, "grants", "list", "--json")
    assert code == 0 and json.loads(out)[0]["id"] == grant_id
    code, out = run(setup, "grants", "revoke", grant_id, "--as", "bob")
    assert code == 1 and "forbidden" in out
    code, out = run(setup, "grants", "revoke", grant_id, "--as", "ivan", "--reason", "audit")
    assert code == 0, out
    code, out = run(setup, "grants", "list", "--json")
    assert json.loads(out) == []


def test_audit_export_has_an_overrides_section(setup: tuple[Path, str]) -> None:
    """`clearance audit export --section overrides` writes the overrides section."""
    code, out = run(
        setup,
        "override",
        "payments.transfer",
        "-p",
        "amount=9000",
        "-p",
        "payee_id=acme",
        "--reason",
        "incident 3",
        "--as",
        "gina",
    )
    assert code == 0, out
    code, out = run(setup, "audit", "export", "--section", "overrides")
    assert code == 0, out
    [line] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert line["section"] == "override" and line["override"]["person"] == "gina"
    code, out = run(setup, "audit", "export", "--section", "overrides", "--format", "csv")
    assert code == 1
