"""The web inbox at /ui: sign-in, sessions, CSRF, deciding, visibility, history and audit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clearance.audit.export import iter_entries
from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import passwords, sessions
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.store.schema import sessions as sessions_table

from ..fixtures import ENTERPRISE, csrf_of

PASSWORD = "correct-horse-battery"
TRANSFER = Request(
    "payments.transfer",
    {"amount": 2000, "destination_country": "US"},
    {"user": "carol", "agent": "billing-bot"},
)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Env:
    gateway: Gateway
    clock: Clock
    app: Any

    def client(self, base_url: str = "http://test") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=base_url)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = Clock()
    gateway = Gateway.open(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    yield Env(gateway, clock, create_app(gateway, scheduler=False))
    await gateway.aclose()


async def give_password(env: Env, person: str) -> None:
    """Set `person`'s password (argon2 is slow on purpose: only for who signs in)."""

    def work(tx: WriteTx) -> None:
        if not passwords.has_password(tx.conn, person):
            passwords.set_password(tx.conn, person, PASSWORD, env.clock())

    await env.gateway.writer.run(work)


async def login(client: httpx.AsyncClient, person: str, password: str = PASSWORD) -> httpx.Response:
    form = await client.get("/ui/login")
    token = csrf_of(form.text)
    return await client.post(
        "/ui/login", data={"person": person, "password": password, "csrf_token": token}
    )


@contextlib.asynccontextmanager
async def signed_in(env: Env, person: str) -> AsyncIterator[httpx.AsyncClient]:
    await give_password(env, person)
    async with env.client() as client:
        response = await login(client, person)
        assert response.status_code == 303, response.text
        yield client


async def new_transfer(env: Env) -> str:
    result = await env.gateway.check(TRANSFER)
    assert result.approval is not None
    return result.approval.approval.id


async def decide(
    client: httpx.AsyncClient, approval_id: str, decision: str, comment: str = ""
) -> httpx.Response:
    page = await client.get(f"/ui/approvals/{approval_id}")
    return await client.post(
        f"/ui/approvals/{approval_id}/decide",
        data={"decision": decision, "comment": comment, "csrf_token": csrf_of(page.text)},
    )


def audit_kinds(gateway: Gateway) -> list[Any]:
    return list(iter_entries(gateway.db))


# -- signing in ------------------------------------------------------------------------------


async def test_login_sets_a_hardened_session_cookie_and_audits_it(env: Env) -> None:
    """A correct password redirects to the inbox with an HttpOnly, SameSite=Lax, Path=/ cookie."""
    await give_password(env, "alice")
    async with env.client() as client:
        response = await login(client, "alice")
        assert response.status_code == 303 and response.headers["location"] == "/ui"
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if "clearance_session=" in c
        )
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
        assert "secure" not in lowered  # plain http: a Secure cookie would never come back
        inbox = await client.get("/ui")
        assert inbox.status_code == 200 and "Alice Ng" in inbox.text
    logins = [e for e in audit_kinds(env.gateway) if e.kind == "login"]
    assert len(logins) == 1
    assert logins[0].approver == "alice" and logins[0].channel == "web"


async def test_session_cookie_is_secure_over_https(env: Env) -> None:
    """Over https the session cookie also carries the Secure attribute."""
    await give_password(env, "alice")
    async with env.client("https://test") as client:
        response = await login(client, "alice")
        cookie = next(
            c for c in response.headers.get_list("set-cookie") if "clearance_session=" in c
        )
        assert "secure" in cookie.lower()


async def test_wrong_password_and_unknown_person_get_the_same_answer_and_are_audited(
    env: Env,
) -> None:
    """Unknown person and wrong password read the same, set no session, and are audited."""
    await give_password(env, "alice")
    async with env.client() as client:
        wrong = await login(client, "alice", "not-the-password")
        unknown = await login(client, "mallory", "not-the-password")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Unknown person or wrong password." in response.text
        assert "clearance_session=" not in " ".join(response.headers.get_list("set-cookie"))
    failed = [e for e in audit_kinds(env.gateway) if e.kind == "login.failed"]
    assert [e.data["attempted_id"] for e in failed] == ["alice", "mallory"]
    assert all("not-the-password" not in str(e.data) for e in failed)


async def test_login_form_needs_its_csrf_token(env: Env) -> None:
    """A sign-in POST without the form's CSRF token is refused and starts no session."""
    async with env.client() as client:
        response = await client.post(
            "/ui/login", data={"person": "alice", "password": PASSWORD, "csrf_token": "x"}
        )
        assert response.status_code == 403
        assert "clearance_session=" not in " ".join(response.headers.get_list("set-cookie"))


async def test_login_never_redirects_to_another_site(env: Env) -> None:
    """A `next` pointing outside the inbox is replaced by /ui (no open redirect)."""
    await give_password(env, "alice")
    async with env.client() as client:
        form = await client.get("/ui/login", params={"next": "https://evil.example/"})
        response = await client.post(
            "/ui/login",
            data={
                "person": "alice",
                "password": PASSWORD,
                "csrf_token": csrf_of(form.text),
                "next": "//evil.example/ui",
            },
        )
        assert response.status_code == 303 and response.headers["location"] == "/ui"


async def test_unauthenticated_pages_redirect_to_sign_in(env: Env) -> None:
    """Without a session every page sends the browser to /ui/login, remembering where it was."""
    approval_id = await new_transfer(env)
    async with env.client() as client:
        for path in ("/ui", "/ui/history", "/ui/audit", f"/ui/approvals/{approval_id}"):
            response = await client.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/ui/login?next=/ui")
        post = await client.post(f"/ui/approvals/{approval_id}/decide", data={})
        assert post.status_code == 401


# -- the inbox -------------------------------------------------------------------------------


async def test_inbox_lists_what_the_person_may_decide_now(env: Env) -> None:
    """A manager's inbox shows the pending transfer with its key params, requester and agent."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "alice") as client:
        page = await client.get("/ui")
    assert page.status_code == 200
    assert f"/ui/approvals/{approval_id}" in page.text
    assert "payments.transfer" in page.text and "amount: 2000" in page.text
    assert "Carol Diaz" in page.text and "billing-bot" in page.text
    assert "manager (1 of 1)" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_requester_sees_my_requests_not_the_waiting_list(env: Env) -> None:
    """The requester cannot decide their own request, but sees it under "My requests"."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "carol") as client:
        page = await client.get("/ui")
    assert "Nothing is waiting on you" in page.text
    assert "My requests" in page.text and f"/ui/approvals/{approval_id}" in page.text


async def test_request_page_shows_arguments_reasons_stages_and_forms(env: Env) -> None:
    """The request page shows the arguments, the rule and its reason, the stage, and both forms."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "alice") as client:
        page = await client.get(f"/ui/approvals/{approval_id}")
    text = page.text
    assert page.status_code == 200
    assert "<code>amount</code>" in text and "2000" in text
    assert "payments-medium" in text and "Transfers from $500 to $5,000 need one manager" in text
    assert "Alice Ng, Bob Ortiz" in text
    assert 'value="approve"' in text and 'value="deny"' in text


async def test_everything_shown_is_escaped(env: Env) -> None:
    """Markup in a request's arguments is shown as text, never run."""
    hostile = Request(
        "payments.transfer",
        {"amount": 2000, "destination_country": "US", "memo": "<script>alert(1)</script>"},
        {"user": "carol", "agent": "billing-bot"},
    )
    result = await env.gateway.check(hostile)
    assert result.approval is not None
    async with signed_in(env, "alice") as client:
        inbox = await client.get("/ui")
        page = await client.get(f"/ui/approvals/{result.approval.approval.id}")
    for html in (inbox.text, page.text):
        assert "<script>" not in html and "&lt;script&gt;" in html


async def test_redacted_params_are_masked(env: Env) -> None:
    """A parameter the policy redacts is shown as a mask, never as the stored marker."""
    result = await env.gateway.check(
        Request(
            "procurement.change_supplier_terms",
            {"supplier": "Acme", "changes": ["bank_details"], "iban": "DE89370400440532013000"},
            {"user": "carol", "agent": "billing-bot"},
        )
    )
    assert result.approval is not None
    async with signed_in(env, "dana") as client:
        page = await client.get(f"/ui/approvals/{result.approval.approval.id}")
    assert page.status_code == 200
    assert "••••• (redacted)" in page.text
    assert "[redacted]" not in page.text and "DE89370400440532013000" not in page.text


# -- deciding --------------------------------------------------------------------------------


async def test_approve_records_a_web_vote_and_shows_the_outcome(env: Env) -> None:
    """Approving from the page records alice's vote on the web channel and approves the request."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "alice") as client:
        response = await decide(client, approval_id, "approve", "looks fine")
        assert response.status_code == 303
        page = await client.get(response.headers["location"])
    assert "You approved this request." in page.text and "badge-approved" in page.text
    assert "looks fine" in page.text
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "approved"
    vote = stored.approval.votes[0]
    assert (vote.person, vote.channel, vote.comment) == ("alice", "web", "looks fine")


async def test_deny_without_a_reason_shows_the_workflow_message(env: Env) -> None:
    """A denial without a reason is refused with the workflow's message; with one it denies."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "alice") as client:
        refused = await decide(client, approval_id, "deny", "   ")
        assert refused.status_code == 409
        assert "a denial needs a reason" in refused.text
        assert (await env.gateway.approvals.get(approval_id)).approval.state.value == "pending"
        denied = await decide(client, approval_id, "deny", "wrong vendor")
        assert denied.status_code == 303
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.decided_reason == "wrong vendor"


async def test_self_approval_is_refused_with_a_message(env: Env) -> None:
    """The requester's own approval is refused and the page says why."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "carol") as client:
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert 'value="approve"' not in page.text
        assert "carol requested this action and cannot vote on it" in page.text
        response = await client.post(
            f"/ui/approvals/{approval_id}/decide",
            data={"decision": "approve", "csrf_token": csrf_of(page.text)},
        )
    assert response.status_code == 403
    assert "carol requested this action and cannot vote on it" in response.text
    assert (await env.gateway.approvals.get(approval_id)).approval.state.value == "pending"


async def test_person_outside_the_request_gets_404_and_cannot_vote(env: Env) -> None:
    """Someone neither requester nor approver nor auditor sees 404 and their vote is not taken."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "grace") as client:
        page = await client.get(f"/ui/approvals/{approval_id}")
        assert page.status_code == 404
        inbox = await client.get("/ui")
        response = await client.post(
            f"/ui/approvals/{approval_id}/decide",
            data={"decision": "approve", "csrf_token": csrf_of(inbox.text)},
        )
    assert response.status_code == 404
    assert (await env.gateway.approvals.get(approval_id)).approval.votes == ()


async def test_csrf_missing_or_wrong_is_refused_and_nothing_is_decided(env: Env) -> None:
    """A decision POST with no CSRF token or a wrong one is 403 and records no vote."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "alice") as client:
        url = f"/ui/approvals/{approval_id}/decide"
        missing = await client.post(url, data={"decision": "approve"})
        wrong = await client.post(url, data={"decision": "approve", "csrf_token": "guess"})
    assert missing.status_code == 403 and wrong.status_code == 403
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "pending" and stored.approval.votes == ()


async def test_csrf_token_of_another_session_is_refused(env: Env) -> None:
    """A CSRF token is bound to its session: bob's token does not work in alice's session."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "bob") as bob:
        bob_token = csrf_of((await bob.get("/ui")).text)
    async with signed_in(env, "alice") as alice:
        response = await alice.post(
            f"/ui/approvals/{approval_id}/decide",
            data={"decision": "approve", "csrf_token": bob_token},
        )
    assert response.status_code == 403
    assert (await env.gateway.approvals.get(approval_id)).approval.votes == ()


# -- sessions --------------------------------------------------------------------------------


async def test_expired_session_is_refused(env: Env) -> None:
    """Twelve hours after sign-in the session no longer opens any page."""
    async with signed_in(env, "alice") as client:
        assert (await client.get("/ui")).status_code == 200
        env.clock.advance(hours=12, seconds=1)
        response = await client.get("/ui")
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")


async def test_logout_revokes_the_session(env: Env) -> None:
    """Signing out revokes the session in the database, so its old cookie stops working."""
    async with signed_in(env, "alice") as client:
        token = client.cookies["clearance_session"]
        page = await client.get("/ui")
        refused = await client.post("/ui/logout", data={})
        assert refused.status_code == 403
        response = await client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)})
        assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    async with env.client() as replay:
        replay.cookies.set("clearance_session", token)
        again = await replay.get("/ui")
    assert again.status_code == 303
    with env.gateway.db.connect() as conn:
        row = conn.execute(
            select(sessions_table).where(sessions_table.c.id == sessions.token_hash(token))
        ).one()
    assert row.revoked_at is not None


async def test_session_store_keeps_only_the_token_hash(env: Env) -> None:
    """The sessions table holds the SHA-256 of the token, never the token itself."""
    async with signed_in(env, "alice") as client:
        token = client.cookies["clearance_session"]
    with env.gateway.db.connect() as conn:
        ids = [r.id for r in conn.execute(select(sessions_table.c.id))]
    assert ids == [sessions.token_hash(token)] and token not in ids


# -- history and audit -----------------------------------------------------------------------


async def test_history_lists_decided_requests_the_person_was_part_of(env: Env) -> None:
    """After alice approves, the request appears in her history and in carol's, not in dana's."""
    approval_id = await new_transfer(env)
    await env.gateway.approvals.decide(approval_id, person="alice", decision="approve")
    async with signed_in(env, "alice") as alice:
        mine = await alice.get("/ui/history")
    async with signed_in(env, "carol") as carol:
        requester = await carol.get("/ui/history")
    async with signed_in(env, "dana") as dana:
        other = await dana.get("/ui/history")
    assert approval_id in mine.text and "you approved" in mine.text
    assert approval_id in requester.text and "you requested" in requester.text
    assert approval_id not in other.text


async def test_audit_page_is_for_admins_and_auditors_only(env: Env) -> None:
    """A manager gets 403 on the audit page; ivan (admin) sees the chain verified as OK."""
    await new_transfer(env)
    async with signed_in(env, "alice") as alice:
        refused = await alice.get("/ui/audit")
    assert refused.status_code == 403
    async with signed_in(env, "ivan") as ivan:
        page = await ivan.get("/ui/audit")
    assert page.status_code == 200
    assert ">OK<" in page.text and "TAMPERED" not in page.text
    assert "approval.created" in page.text and "login" in page.text


async def test_audit_page_reports_tampering(env: Env) -> None:
    """An audit entry changed in the database makes the page say TAMPERED with the problem."""
    await new_transfer(env)
    with env.gateway.db.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE audit_entries SET actor = 'mallory' WHERE seq = (SELECT MIN(seq) FROM "
            "audit_entries)"
        )
    async with signed_in(env, "ivan") as ivan:
        page = await ivan.get("/ui/audit")
    assert page.status_code == 200 and "TAMPERED" in page.text


async def test_pages_never_change_state(env: Env) -> None:
    """Reading the inbox, a request, history and audit pages records no vote and no entry."""
    approval_id = await new_transfer(env)
    async with signed_in(env, "ivan") as ivan:
        before = len(audit_kinds(env.gateway))
        for path in ("/ui", f"/ui/approvals/{approval_id}?decision=approve", "/ui/history"):
            assert (await ivan.get(path)).status_code == 200
        assert len(audit_kinds(env.gateway)) == before
    assert (await env.gateway.approvals.get(approval_id)).approval.votes == ()


def test_session_lookup_refuses_unknown_expired_and_revoked_tokens(env: Env) -> None:
    """`sessions.lookup` finds a live session and refuses unknown, expired and revoked ones."""
    now = env.clock()
    with env.gateway.db.begin() as conn:
        live = sessions.create(conn, "alice", now)
        gone = sessions.create(conn, "bob", now)
        assert sessions.revoke(conn, gone.session.id, now)
    with env.gateway.db.connect() as conn:
        found = sessions.lookup(conn, live.token, now)
        assert found is not None and found.person_id == "alice"
        assert sessions.csrf_matches(found, live.session.csrf_token)
        assert not sessions.csrf_matches(found, gone.session.csrf_token)
        assert sessions.lookup(conn, gone.token, now) is None
        assert sessions.lookup(conn, live.token + "x", now) is None
        assert sessions.lookup(conn, live.token, now + sessions.SESSION_TTL) is None


async def test_the_request_page_names_a_delegate_and_whom_they_stood_in_for(env: Env) -> None:
    """Alice is away and Frank approves in her seat: the page says "Frank … for Alice Ng",
    where it used to credit Alice alone."""
    from clearance import delegation

    now = env.clock()
    await env.gateway.writer.run(
        lambda tx: delegation.delegate_audited(
            tx,
            env.gateway.engine.policy.directory,
            delegator="alice",
            delegate="frank",
            until=now + timedelta(days=7),
            now=now,
            by="alice",
            channel="cli",
        )
    )
    approval_id = await new_transfer(env)
    await env.gateway.approvals.decide(approval_id, person="frank", decision="approve")
    async with signed_in(env, "alice") as client:
        page = await client.get(f"/ui/approvals/{approval_id}")
    assert page.status_code == 200
    names = env.gateway.engine.policy.directory
    frank, alice = names.display_name("frank"), names.display_name("alice")
    assert f"1 of 1 ({frank} for {alice})" in page.text, page.text
