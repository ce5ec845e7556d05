"""`clearance users mfa enroll | list | reset` as an operator runs them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pyotp
import pytest
from typer.testing import CliRunner

from clearance.cli import app

from .helpers import POLICY

runner = CliRunner()
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    policy = tmp_path / "clearance.yaml"
    policy.write_text(POLICY)
    return str(policy), f"sqlite:///{tmp_path}/c.db"


def run(files: tuple[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app, [*args, "--config", files[0], "--database-url", files[1]], input=input
    )
    return result.exit_code, result.output


def test_enroll_prints_a_uri_and_qr_and_confirms_the_first_code(
    files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolment shows the otpauth URI and a terminal QR code, and a right code confirms it;
    the secret is never written to the audit trail."""
    monkeypatch.setattr(pyotp, "random_base32", lambda: SECRET)
    code, out = run(files, "users", "mfa", "enroll", "dana", input=pyotp.TOTP(SECRET).now() + "\n")
    assert code == 0, out
    assert f"otpauth://totp/Clearance:dana?secret={SECRET}" in out
    assert "█" in out or "▀" in out  # the QR code
    assert "authenticator app enrolled for dana" in out
    code, out = run(files, "users", "mfa", "list", "dana")
    assert code == 0 and "totp" in out and "active" in out
    db = sqlite3.connect(files[1].removeprefix("sqlite:///"))
    trail = " ".join(str(row) for row in db.execute("SELECT kind, data FROM audit_entries"))
    assert "mfa.enrolled" in trail and SECRET not in trail


def test_a_wrong_first_code_does_not_enrol(
    files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong code exits 1 and leaves the factor unconfirmed (votes still need enrolment)."""
    monkeypatch.setattr(pyotp, "random_base32", lambda: SECRET)
    right = pyotp.TOTP(SECRET).now()
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    code, out = run(files, "users", "mfa", "enroll", "dana", "--code", wrong, "--no-qr")
    assert code == 1 and "not enrolled" in out
    code, out = run(files, "users", "mfa", "list", "dana")
    assert "unconfirmed" in out


def test_reset_removes_factors_and_unknown_people_are_refused(
    files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reset` removes the factor so the person can enrol again; an unknown id fails."""
    monkeypatch.setattr(pyotp, "random_base32", lambda: SECRET)
    run(files, "users", "mfa", "enroll", "dana", "--code", pyotp.TOTP(SECRET).now(), "--no-qr")
    code, out = run(files, "users", "mfa", "enroll", "dana", "--code", "000000", "--no-qr")
    assert code == 1 and "reset it first" in out
    code, out = run(files, "users", "mfa", "reset", "dana")
    assert code == 0 and "removed 1 second factor of dana" in out
    code, out = run(files, "users", "mfa", "enroll", "nobody", "--code", "000000")
    assert code == 1 and "no person 'nobody'" in out


def test_approve_from_the_terminal_with_a_code(
    files: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`clearance approvals approve ID --totp CODE` counts on an MFA stage against a running
    gateway; without the code the gateway's refusal is printed and the command exits 1."""
    import asyncio

    from clearance.audit.writer import WriteTx
    from clearance.gateway import Gateway
    from clearance.identity import keys

    from ..serverproc import ServerProcess
    from .helpers import HUGE

    monkeypatch.setattr(pyotp, "random_base32", lambda: SECRET)
    run(files, "users", "mfa", "enroll", "dana", "--code", pyotp.TOTP(SECRET).now(), "--no-qr")

    async def prepare() -> tuple[str, str]:
        gateway = Gateway.open(files[0], database_url=files[1])
        try:
            result = await gateway.check(HUGE)
            assert result.approval is not None
            approval_id = result.approval.approval.id
            await gateway.approvals.decide(approval_id, person="alice", decision="approve")

            def key(tx: WriteTx) -> str:
                now = gateway.clock()
                return keys.create_key(tx.conn, kind="person", subject="dana", now=now).token

            return approval_id, await gateway.writer.run(key)
        finally:
            await gateway.aclose()

    approval_id, token = asyncio.run(prepare())
    server = ServerProcess(Path(files[0]), files[1], tmp_path / "server.log")
    server.start()
    try:
        base = ["approvals", "approve", approval_id, "--url", server.url, "--token", token]
        refused = runner.invoke(app, base)
        assert refused.exit_code == 1 and "second factor" in refused.output
        # Enrolment used this 30-second step's code; the next step's is within the drift
        # the gateway accepts, and newer than the one used: it counts.
        code = pyotp.TOTP(SECRET).at(int(time.time()) // 30 * 30 + 30)
        done = runner.invoke(app, [*base, "--totp", code])
        assert done.exit_code == 0, done.output
        assert "approved" in done.output
    finally:
        server.stop()
