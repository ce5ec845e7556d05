"""Second factors end to end over HTTP: API votes with a code, the inbox's enrolment (QR
code, first code), step-up verification, votes with a code, and the location requirement."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import keys, passwords
from clearance.server.app import create_app
from clearance.store.reads import read
from clearance.store.schema import audit_entries
from clearance.testing import FrozenClock

from ..fixtures import csrf_of
from .helpers import HUGE, POLICY, WIRE, enrol_totp

PASSWORD = "correct-horse-battery"
SECRET = re.compile(r'<code class="secret">([A-Z2-7]+)</code>')


@dataclass
class Env:
    gateway: Gateway
    transport: httpx.ASGITransport
    tokens: dict[str, str]

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.transport, base_url="http://test", headers=headers or {}
        )


@pytest.fixture
async def env(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[Env]:
    path = tmp_path / "clearance.yaml"
    path.write_text(POLICY, encoding="utf-8")
    gateway = Gateway.open(path, database_url=db_url, clock=clock)
    now = clock()

    def setup(tx: WriteTx) -> dict[str, str]:
        for person in ("alice", "bob", "dana", "erin"):
            passwords.set_password(tx.conn, person, PASSWORD, now)
        return {
            p: keys.create_key(tx.conn, kind="person", subject=p, now=now).token
            for p in ("alice", "dana")
        }

    tokens = await gateway.writer.run(setup)
    app = create_app(gateway, scheduler=False, inbox=True, channels=False)
    try:
        yield Env(gateway, httpx.ASGITransport(app=app), tokens)
    finally:
        await gateway.aclose()


async def sign_in(client: httpx.AsyncClient, person: str) -> None:
    form = await client.get("/ui/login")
    done = await client.post(
        "/ui/login",
        data={"person": person, "password": PASSWORD, "csrf_token": csrf_of(form.text)},
    )
    assert done.status_code == 303, done.text


async def audit_codes(gateway: Gateway, kind: str) -> list[Any]:
    def fetch(conn: Any) -> list[Any]:
        rows = conn.execute(select(audit_entries.c.data).where(audit_entries.c.kind == kind))
        return [r.get("code", r.get("method")) for r in rows.scalars()]

    return await read(gateway.db, fetch)


async def at_finance_stage(env: Env) -> str:
    result = await env.gateway.check(HUGE)
    assert result.approval is not None
    approval_id = result.approval.approval.id
    await env.gateway.approvals.decide(approval_id, person="alice", decision="approve")
    return approval_id


async def test_api_vote_with_a_code(env: Env, clock: FrozenClock) -> None:
    """The approval says which stage needs a factor; POST /decisions with `totp` counts;
    without it the answer is 409 mfa_required."""
    approval_id = await at_finance_stage(env)
    totp = await enrol_totp(env.gateway, "dana", clock)
    clock.advance(seconds=30)
    async with env.client({"authorization": f"Bearer {env.tokens['dana']}"}) as client:
        shown = (await client.get(f"/v1/approvals/{approval_id}")).json()
        assert [s["mfa"] for s in shown["stages"]] == [None, "totp"]  # clients know to ask
        url = f"/v1/approvals/{approval_id}/decisions"
        refused = await client.post(url, json={"decision": "approve"})
        assert refused.status_code == 409 and refused.json()["error"] == "mfa_required"
        wrong = await client.post(url, json={"decision": "approve", "totp": "000000"})
        assert wrong.json()["error"] in {"mfa_invalid"}
        done = await client.post(url, json={"decision": "approve", "totp": totp.at(clock())})
        assert done.status_code == 200, done.text
        assert done.json()["state"] == "approved"


async def test_inbox_enrolment_then_vote_with_a_code(env: Env, clock: FrozenClock) -> None:
    """Dana sets up an authenticator in the inbox (SVG QR, first code), then approves the
    MFA stage by typing a fresh code beside Approve; a replayed code is refused."""
    approval_id = await at_finance_stage(env)
    async with env.client() as client:
        await sign_in(client, "dana")
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert "Second factor required" in page.text and "Set up a second factor" in page.text
        assert 'name="totp"' not in page.text  # nothing to type a code from yet

        security = await client.get("/ui/security")
        started = await client.post(
            "/ui/security/totp", data={"csrf_token": csrf_of(security.text)}
        )
        assert started.status_code == 200
        assert "<svg" in started.text and "otpauth" not in started.text
        secret = SECRET.search(started.text)
        assert secret is not None
        totp = pyotp.TOTP(secret[1])
        bad = await client.post(
            "/ui/security/totp/confirm",
            data={"csrf_token": csrf_of(started.text), "code": "000000"},
        )
        assert bad.status_code == 400
        first = totp.at(clock())
        ok = await client.post(
            "/ui/security/totp/confirm", data={"csrf_token": csrf_of(started.text), "code": first}
        )
        assert ok.status_code == 303

        page = await client.get(f"/ui/approvals/{approval_id}")
        replay = await client.post(
            f"/ui/approvals/{approval_id}/decide",
            data={"csrf_token": csrf_of(page.text), "decision": "approve", "totp": first},
        )
        assert replay.status_code == 409
        assert "already used" in html.unescape(replay.text)
        clock.advance(seconds=301)  # the enrolment's proof is no longer fresh
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert 'name="totp"' in page.text
        voted = await client.post(
            f"/ui/approvals/{approval_id}/decide",
            data={
                "csrf_token": csrf_of(page.text),
                "decision": "approve",
                "totp": totp.at(clock()),
            },
        )
        assert voted.status_code == 303, voted.text
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "approved"
    assert stored.approval.votes[-1].factor == "totp"  # stored with the vote
    async with env.client() as client:
        await sign_in(client, "dana")
        shown = await client.get(f"/ui/approvals/{approval_id}")
        assert "· authenticator code" in shown.text
    assert await audit_codes(env.gateway, "vote.rejected") == ["mfa_replayed"]
    assert await audit_codes(env.gateway, "mfa.enrolled") == ["totp"]
    assert await audit_codes(env.gateway, "mfa.failed") == ["mfa_invalid"]


async def test_inbox_step_up_makes_the_session_fresh(env: Env, clock: FrozenClock) -> None:
    """After verifying a code on /ui/verify, votes count without a code for 300 s; a code
    used there cannot be used again."""
    approval_id = await at_finance_stage(env)
    totp = await enrol_totp(env.gateway, "dana", clock)
    clock.advance(seconds=30)
    async with env.client() as client:
        await sign_in(client, "dana")
        target = f"/ui/approvals/{approval_id}"
        form = await client.get(f"/ui/verify?next={target}")
        code = totp.at(clock())
        verified = await client.post(
            "/ui/verify", data={"csrf_token": csrf_of(form.text), "code": code, "next": target}
        )
        assert verified.status_code == 303 and verified.headers["location"] == target
        again = await client.post(
            "/ui/verify", data={"csrf_token": csrf_of(form.text), "code": code, "next": target}
        )
        assert again.status_code == 400 and "already used" in again.text
        page = await client.get(target)
        assert "Verified in this session" in page.text and 'name="totp"' not in page.text
        clock.advance(seconds=120)
        voted = await client.post(
            f"{target}/decide", data={"csrf_token": csrf_of(page.text), "decision": "approve"}
        )
        assert voted.status_code == 303
    assert (await env.gateway.approvals.get(approval_id)).approval.state.value == "approved"
    assert await audit_codes(env.gateway, "mfa.failed") == ["mfa_replayed"]


async def test_location_is_taken_from_the_trusted_header(env: Env, clock: FrozenClock) -> None:
    """`require_context: {approver_geo: [US]}`: a session signed in without the header, or
    from elsewhere, cannot approve; one signed in from the US can."""
    result = await env.gateway.check(WIRE)
    assert result.approval is not None
    approval_id = result.approval.approval.id
    url = f"/ui/approvals/{approval_id}"
    async with env.client() as nowhere:
        await sign_in(nowhere, "alice")
        page = await nowhere.get(url)
        assert "your location: unknown" in page.text
        refused = await nowhere.post(
            f"{url}/decide", data={"csrf_token": csrf_of(page.text), "decision": "approve"},
            headers={"X-Client-Geo": "US"},  # the session itself had no location at sign-in
        )  # fmt: skip
        assert refused.status_code == 409 and "location" in html.unescape(refused.text)
    async with env.client({"X-Client-Geo": "FR"}) as abroad:
        await sign_in(abroad, "bob")
        page = await abroad.get(url)
        refused = await abroad.post(
            f"{url}/decide", data={"csrf_token": csrf_of(page.text), "decision": "approve"}
        )
        assert refused.status_code == 409 and "not FR" in html.unescape(refused.text)
    async with env.client({"X-Client-Geo": "us"}) as home:
        await sign_in(home, "alice")
        page = await home.get(url)
        voted = await home.post(
            f"{url}/decide", data={"csrf_token": csrf_of(page.text), "decision": "approve"}
        )
        assert voted.status_code == 303, voted.text
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "approved"
    assert stored.approval.votes[-1].geo == "US"
    assert await audit_codes(env.gateway, "vote.rejected") == [
        "context_required",
        "context_mismatch",
    ]


async def test_api_vote_without_a_location_is_refused(env: Env) -> None:
    """A personal key's vote on a location-bound stage needs the trusted header."""
    result = await env.gateway.check(WIRE)
    assert result.approval is not None
    url = f"/v1/approvals/{result.approval.approval.id}/decisions"
    async with env.client({"authorization": f"Bearer {env.tokens['alice']}"}) as client:
        refused = await client.post(url, json={"decision": "approve"})
        assert refused.json()["error"] == "context_required"
        done = await client.post(url, json={"decision": "approve"}, headers={"X-Client-Geo": "US"})
        assert done.status_code == 200 and done.json()["state"] == "approved"


async def test_adding_a_security_key_needs_a_fresh_factor_first(
    env: Env, clock: FrozenClock
) -> None:
    """Someone with an authenticator app registers a key only after verifying it (a stolen
    password alone cannot add the thief's key); the JSON ceremony needs the CSRF header."""
    totp = await enrol_totp(env.gateway, "dana", clock)
    clock.advance(seconds=30)
    async with env.client() as client:
        await sign_in(client, "dana")
        page = await client.get("/ui/security")
        token = csrf_of(page.text)
        options = "/ui/webauthn/register/options"
        assert (await client.post(options)).status_code == 403  # no CSRF header
        refused = await client.post(options, headers={"X-CSRF-Token": token})
        assert refused.status_code == 409 and refused.json()["error"] == "mfa_required"
        verify = await client.post(
            "/ui/verify", data={"csrf_token": token, "code": totp.at(clock()), "next": "/ui"}
        )
        assert verify.status_code == 303
        allowed = await client.post(options, headers={"X-CSRF-Token": token})
        assert allowed.status_code == 200
        assert allowed.json()["rp"]["id"] == "localhost"
        assert allowed.headers["cache-control"] == "no-store"
    assert page.headers["content-security-policy"].count("script-src 'self'") == 1
