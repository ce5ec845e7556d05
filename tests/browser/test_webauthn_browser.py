"""WebAuthn end to end in Chromium: register a (virtual) security key in the inbox, then use
it to step up and approve a request whose stage says `mfa: webauthn`.

The authenticator is Chromium's virtual one (DevTools protocol `WebAuthn.enable` and
`WebAuthn.addVirtualAuthenticator`: CTAP2, internal, with user verification), so the real
browser code path runs: `navigator.credentials.create()` / `.get()`, our JavaScript, the
server's py_webauthn verification and the vote.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import passwords
from clearance.policy import Request
from clearance.store.schema import audit_entries

from .conftest import PASSWORD, ROOT, START_TIMEOUT_S, _stop, free_port

POLICY = """\
version: 1
directory:
  people:
    - {{id: alice, name: Alice Ng, groups: [security]}}
    - {{id: carol, name: Carol Diaz, groups: [staff]}}
policies:
  default: deny
  rules:
    - id: keys-rotate
      description: Rotating signing keys needs a security key
      actions: [keys.rotate]
      effect: approve
      approval: {{stages: [{{name: security, approvers: [group:security], mfa: webauthn}}]}}
server:
  public_url: http://localhost:{port}
"""

SERVE = (
    "import sys\n"
    "from clearance.server.run import serve\n"
    "serve([sys.argv[1]], host='127.0.0.1', port=int(sys.argv[2]), database_url=sys.argv[3])\n"
)


@dataclass(frozen=True)
class MfaServer:
    url: str
    approval_id: str
    database_url: str


def _prepare(policy: Path, database_url: str) -> str:
    """Migrate, give alice a password, and open the approval that needs a security key."""

    async def go() -> str:
        gateway = Gateway.open(policy, database_url=database_url)
        now = datetime.now(UTC)

        def work(tx: WriteTx) -> None:
            passwords.set_password(tx.conn, "alice", PASSWORD, now)

        try:
            await gateway.writer.run(work)
            result = await gateway.check(
                Request("keys.rotate", {"key": "signing-2026"}, {"user": "carol", "agent": "ops"})
            )
            assert result.approval is not None
            return result.approval.approval.id
        finally:
            await gateway.aclose()

    return asyncio.run(go())


@pytest.fixture
def mfa_server(tmp_path: Path) -> Iterator[MfaServer]:
    """The gateway on localhost (WebAuthn refuses IP addresses as relying party ids)."""
    port = free_port()
    policy = tmp_path / "clearance.yaml"
    policy.write_text(POLICY.format(port=port), encoding="utf-8")
    database_url = f"sqlite:///{tmp_path}/clearance.db"
    approval_id = _prepare(policy, database_url)
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(policy), str(port), database_url],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)  # waiting for a child process to listen: nothing to await
        yield MfaServer(url, approval_id, database_url)
    finally:
        _stop(proc)


def _trail(database_url: str) -> list[tuple[str, Any]]:
    from clearance.store.database import open_database

    db = open_database(database_url)
    try:
        with db.connect() as conn:
            rows = conn.execute(
                select(audit_entries.c.kind, audit_entries.c.data).order_by(audit_entries.c.seq)
            )
            return [(str(k), d) for k, d in rows]
    finally:
        db.dispose()


async def test_register_a_security_key_then_approve_with_it(
    browser: Any, mfa_server: MfaServer, tmp_path: Path
) -> None:
    """Alice registers a key, is asked to verify before voting, verifies with the key (a real
    WebAuthn assertion), approves, and the vote is recorded with the webauthn factor."""
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {"options": {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                     "hasUserVerification": True, "isUserVerified": True,
                     "automaticPresenceSimulation": True}},
    )  # fmt: skip
    authenticator = added["authenticatorId"]

    await page.goto(f"{mfa_server.url}/ui/login")
    await page.get_by_label("Person id").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Waiting on you")).to_be_visible()

    request_url = f"{mfa_server.url}/ui/approvals/{mfa_server.approval_id}"
    await page.goto(request_url)
    await expect(page.get_by_text("Second factor required")).to_be_visible()
    await expect(page.get_by_role("button", name="Approve", exact=True)).to_have_count(0)

    await page.goto(f"{mfa_server.url}/ui/security")
    await page.get_by_role("button", name="Register a security key").click()
    await expect(page.locator("#key-status")).to_have_text("Security key registered.")
    credentials = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert len(credentials["credentials"]) == 1
    await page.screenshot(path=str(tmp_path / "registered.png"), full_page=True)

    await page.goto(request_url)
    await page.get_by_role("link", name="Verify it is you").click()
    await expect(page.get_by_role("heading", name="Verify it is you")).to_be_visible()
    await page.get_by_role("button", name="Use your security key").click()
    await page.wait_for_url(request_url)
    await expect(page.get_by_text("Verified in this session")).to_be_visible()
    after = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    assert after["credentials"][0]["signCount"] >= 1  # the key really signed

    await page.get_by_role("button", name="Approve", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text("You approved this request.")
    await page.screenshot(path=str(tmp_path / "approved.png"), full_page=True)
    await context.close()

    trail = _trail(mfa_server.database_url)
    kinds = [k for k, _ in trail]
    assert kinds.count("mfa.enrolled") == 1 and kinds.count("mfa.verified") == 1
    vote = next(d for k, d in trail if k == "vote")
    assert vote["factor"] == "webauthn" and vote["decision"] == "approve"
    assert "approval.decided" in kinds
