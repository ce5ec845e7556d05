"""The operator's commands: keys, users, approvals, audit — as a person runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from pathlib import Path

from clearance.cli import app
from clearance.gateway import Gateway
from clearance.policy import Request

from ..fixtures import ENTERPRISE
from ..serverproc import ServerProcess
from .enterprise import run, runner


def make_approval(db: str) -> str:
    async def go() -> str:
        gw = Gateway.open(ENTERPRISE, database_url=db)
        try:
            result = await gw.check(
                Request(
                    "payments.transfer",
                    {"amount": 2000, "destination_country": "US", "card": "4111"},
                    {"user": "carol"},
                )
            )
            assert result.approval is not None
            return result.approval.approval.id
        finally:
            await gw.aclose()

    return asyncio.run(go())


def test_keys_create_list_revoke(db: str) -> None:
    """A key is shown once, listed without its secret, and revoked."""
    code, out = run(db, "keys", "create", "--agent", "billing-bot", "--label", "prod")
    assert code == 0, out
    token = out.strip().splitlines()[-1]
    assert token.startswith("clr_")
    code, out = run(db, "keys", "list")
    secret = token.split("_", 2)[2]  # (a secret may itself hold an underscore)
    assert "billing-bot" in out and secret not in out
    key_id = "key_" + token.split("_")[1]
    assert run(db, "keys", "revoke", key_id)[0] == 0
    code, out = run(db, "keys", "revoke", key_id)
    assert code == 1 and "no active key" in out
    code, out = run(db, "keys", "create")
    assert code == 1 and "exactly one" in out
    code, out = run(db, "keys", "create", "--person", "nobody")
    assert code == 1 and "no person 'nobody'" in out


def test_users_set_password(db: str) -> None:
    """Passwords are set for directory people only, and must be long enough."""
    code, out = run(
        db, "users", "set-password", "alice", "--password-stdin", input="long enough pw\n"
    )
    assert code == 0 and "password set for alice" in out
    code, out = run(db, "users", "set-password", "alice", "--password-stdin", input="short\n")
    assert code == 1 and "at least 8" in out
    code, out = run(db, "users", "set-password", "mallory", "--password-stdin", input="x" * 9)
    assert code == 1 and "no person 'mallory'" in out


def test_approvals_list_and_show(db: str) -> None:
    """Pending approvals are listed and shown with the why, the stages and the status."""
    approval_id = make_approval(db)
    code, out = run(db, "approvals", "list", "--state", "pending")
    assert code == 0 and approval_id in out and "payments.transfer" in out
    code, out = run(db, "approvals", "show", approval_id)
    assert code == 0 and "Transfers from $500 to $5,000 need one manager" in out
    assert "stage 1 manager: 0 of 1" in out
    code, out = run(db, "approvals", "show", "apr_missing")
    assert code == 1 and "no approval" in out
    code, out = run(db, "approvals", "show", approval_id, "--json")
    assert json.loads(out)["state"] == "pending"


def test_audit_verify_export_and_tamper(db: str, tmp_path: Path) -> None:
    """verify passes, exports filter by time, and a tampered entry is named with exit 1."""
    make_approval(db)
    code, out = run(db, "audit", "verify")
    assert code == 0 and "OK: 2 entries" in out
    code, out = run(db, "audit", "export", "--format", "jsonl")
    kinds = [json.loads(line)["kind"] for line in out.strip().splitlines()]
    assert kinds == ["check", "approval.created"]
    target = tmp_path / "audit.csv"
    code, out = run(db, "audit", "export", "--format", "csv", "--output", str(target))
    assert code == 0 and "wrote 2 entries" in out
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["kind"] for r in rows] == ["check", "approval.created"]
    code, out = run(db, "audit", "export", "--since", "2999-01-01")
    assert code == 0 and out.strip() == ""
    code, out = run(db, "audit", "export", "--since", "yesterday-ish")
    assert code == 1 and "not a date" in out
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit_entries SET effect = 'allow' WHERE seq = 1")
    code, out = run(db, "audit", "verify")
    assert code == 1 and "TAMPERED" in out and "1" in out


def test_redacted_params_never_reach_the_store(db: str) -> None:
    """A rule's redact list keeps the value out of the approval and the audit trail."""

    async def go() -> None:
        gw = Gateway.open(ENTERPRISE, database_url=db)
        try:
            await gw.check(
                Request(
                    "payments.transfer",
                    {"amount": 100, "destination_country": "US", "account_number": "DE-SECRET-42"},
                    {"user": "carol"},
                )
            )
        finally:
            await gw.aclose()

    asyncio.run(go())
    code, out = run(db, "audit", "export")
    assert code == 0 and "DE-SECRET-42" not in out and "[redacted]" in out
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        dump = "\n".join(conn.iterdump())
    assert "DE-SECRET-42" not in dump


def test_approve_and_deny_through_a_running_server(db: str, tmp_path: Path) -> None:
    """`approvals approve/deny` decide as the person whose personal key is given."""
    first, second = make_approval(db), make_approval(db)
    _, out = run(db, "keys", "create", "--person", "alice")
    alice = out.strip().splitlines()[-1]
    server = ServerProcess(ENTERPRISE, db, tmp_path / "server.log")
    server.start()
    try:
        result = runner.invoke(
            app,
            ["approvals", "approve", first, "--url", server.url, "--token", alice, "-m", "fine"],
        )
        assert result.exit_code == 0, result.output
        assert "approved — by alice" in result.output
        result = runner.invoke(
            app, ["approvals", "deny", second, "--url", server.url, "--token", alice]
        )
        assert result.exit_code == 1 and "reason" in result.output
        result = runner.invoke(app, ["approvals", "approve", second, "--url", server.url])
        assert result.exit_code == 1 and "personal API key" in result.output
    finally:
        server.stop()


#: Commands that look at (or change) what a gateway stored: none may create a database.
INSPECTING = [
    ("audit", "verify"),
    ("audit", "export"),
    ("approvals", "list"),
    ("approvals", "show", "apr_x"),
    ("keys", "list"),
    ("keys", "revoke", "key_x"),
    ("risk", "show", "alice"),
    ("risk", "prune"),
    ("users", "delegates"),
    ("users", "undelegate", "alice"),
    ("users", "mfa", "list", "alice"),
    ("overrides", "list"),
    ("grants", "list"),
    ("admin", "changes"),
]


def test_inspecting_commands_refuse_a_missing_database(tmp_path: Path) -> None:
    """Pointed at a place where no gateway ran, `audit verify` must not create an empty
    database and report that it "checks out" (nor may any other command that looks at what
    was stored): it fails, names the path, and leaves nothing behind."""
    where = tmp_path / "elsewhere" / "clearance.db"
    url = f"sqlite:///{where}"
    for args in INSPECTING:
        code, out = run(url, *args)
        assert code == 1, (args, out)
        assert f"no Clearance database at {where}" in out, (args, out)
        assert "--database-url" in out, (args, out)
    assert not where.parent.exists()
    # A command that sets something up creates it, as before; then the others find it.
    assert run(url, "keys", "create", "--agent", "billing-bot")[0] == 0
    code, out = run(url, "audit", "verify")
    assert code == 0 and "OK" in out


def test_inspecting_commands_refuse_what_is_not_a_clearance_database(
    tmp_path: Path, pg_url: str
) -> None:
    """A file that is not SQLite, an empty SQLite file, an empty PostgreSQL database: each is
    named and left as it was (no tables are created in it)."""
    garbage = tmp_path / "notes.db"
    garbage.write_text("not a database\n")
    code, out = run(f"sqlite:///{garbage}", "audit", "verify")
    assert code == 1 and "is not a Clearance database" in out, out
    assert garbage.read_text() == "not a database\n"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, out = run(f"sqlite:///{empty}", "audit", "verify")
    assert code == 1 and "holds no Clearance tables" in out, out
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    code, out = run(pg_url, "approvals", "list")
    assert code == 1 and "holds no Clearance tables" in out, out
    import psycopg

    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
