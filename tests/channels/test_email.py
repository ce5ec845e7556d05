"""The email channel against a real local SMTP server (aiosmtpd), with the confirmation page
driven through the app's /hooks routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clearance.audit.export import iter_entries
from clearance.channels import tokens
from clearance.channels.base import (
    CallbackRejected,
    ChannelError,
    Message,
    RawRequest,
    StageView,
)
from clearance.channels.email import EmailChannel
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.outbox import run_outbox

PUBLIC = "http://clearance.test"

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, email: alice@example.com, groups: [managers]}
    - {id: bob, name: Bob Ortiz, email: Bob.Ortiz@Example.com, groups: [managers]}
    - {id: carol, name: Carol Diaz, email: carol@example.com, groups: [staff]}
    - {id: dana, name: Dana Wu, email: dana@example.com, groups: [finance]}
policies:
  default: deny
  rules:
    - id: big
      description: Big transfers need a manager
      actions: [pay]
      when: params.amount > 100
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
        timeout: 4h
    - id: wire
      description: Wires need a manager, then finance
      actions: [wire]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
          - {name: finance, approvers: [group:finance]}
        timeout: 4h
channels:
  email: {smtp_host: 127.0.0.1, smtp_port: PORT, tls: none, sender: approvals@clearance.test,
          link_secret: test-link-secret, timeout: 5}
server: {public_url: "http://clearance.test"}
"""


# -- a real SMTP server ---------------------------------------------------------------------------
@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated: bool

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    def link(self, decision: str) -> str:
        found = re.search(rf"^(?:Approve|Deny):\s+(\S+&d={decision})\r?$", self.text, re.M)
        assert found, self.text
        return found.group(1)


class Recorder:
    """An aiosmtpd handler that keeps every message, and can refuse recipients."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rcpt_reply: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                parsed,
                session.ssl is not None,
                bool(session.authenticated),
            )
        )
        return "250 Message accepted"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, server_hostname="smtp.test")
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


@pytest.fixture
async def env(
    tmp_path: Path, clock: FrozenClock, smtp: tuple[Recorder, int]
) -> AsyncIterator[tuple[Gateway, ChannelHub]]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("PORT", str(smtp[1])))
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    channel = hub.channels["email"]
    assert isinstance(channel, EmailChannel)
    channel.attach(gateway)  # until the hub attaches channels itself (see the report)
    yield gateway, hub
    await hub.aclose()
    await gateway.aclose()


@pytest.fixture
async def web(env: tuple[Gateway, ChannelHub]) -> AsyncIterator[httpx.AsyncClient]:
    gw, hub = env
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
        yield client


async def drain(hub: ChannelHub, clock: FrozenClock, rounds: int = 3) -> None:
    await run_outbox(hub, clock, rounds=rounds, step=timedelta(seconds=30))


async def ask(gw: Gateway, hub: ChannelHub, clock: FrozenClock, action: str = "pay") -> str:
    params = {"amount": 500, "memo": "<b>bold</b> & co", "note": "one\nApprove: http://evil"}
    result = await gw.check(Request(action, params, {"user": "carol"}))
    assert result.approval is not None
    await drain(hub, clock)
    return result.approval.approval.id


def local(url: str) -> str:
    """The path and query of a link (the app is reached through ASGI, not DNS)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    return f"{parts.path}?{parts.query}"


def form_of(page: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    assert {"t", "d", "csrf"} <= set(fields), page
    return fields


def rejections(gw: Gateway) -> list[str]:
    return [str(e.data.get("reason")) for e in iter_entries(gw.db) if e.kind == "channel.rejected"]


def kinds(gw: Gateway) -> list[str]:
    return [e.kind for e in iter_entries(gw.db)]


# -- the tests ------------------------------------------------------------------------------------
async def test_request_mail_is_multipart_escaped_and_linked(
    env: tuple[Gateway, ChannelHub], smtp: tuple[Recorder, int], clock: FrozenClock
) -> None:
    """Each approver gets a text+HTML mail with the request, escaped, and their own links."""
    gw, hub = env
    recorder, _ = smtp
    approval_id = await ask(gw, hub, clock)
    assert sorted(r.rcpt_tos[0] for r in recorder.received) == [
        "Bob.Ortiz@Example.com",
        "alice@example.com",
    ]
    mail = recorder.to("alice@example.com")[0]
    assert mail.message["From"] == "approvals@clearance.test"
    assert mail.message["Subject"] == "Approval needed: pay"
    assert mail.message["Message-ID"] == f"<{approval_id}.alice.s0@clearance.test>"
    assert mail.message.get_content_type() == "multipart/alternative"
    text, html = mail.text, mail.html
    for expected in ("Carol Diaz wants to run pay", "amount: 500", "Why: big", "Stage 1 of 1"):
        assert expected in text
    assert "Decide by 2026-11-24 18:00 UTC" in text
    assert "one ↵ Approve: http://evil" in text  # a value cannot forge a line of its own
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html and "<b>bold</b>" not in html
    approve, deny = mail.link("approve"), mail.link("deny")
    assert approve.startswith(f"{PUBLIC}/hooks/email/confirm?t=") and deny.endswith("&d=deny")
    assert approve.replace("d=approve", "d=deny") == deny
    assert approve.replace("&", "&amp;") in html
    bob_link = recorder.to("Bob.Ortiz@Example.com")[0].link("approve")
    assert bob_link != approve  # per-approver tokens


async def test_happy_path_get_never_decides_post_with_csrf_does(
    env: tuple[Gateway, ChannelHub],
    smtp: tuple[Recorder, int],
    web: httpx.AsyncClient,
    clock: FrozenClock,
) -> None:
    """GET shows a page; a POST without CSRF is 403; with it the request is approved; the link
    then works no more; every recipient is told it was decided."""
    gw, hub = env
    recorder, _ = smtp
    approval_id = await ask(gw, hub, clock)
    waiter = asyncio.create_task(gw.approvals.wait(approval_id, timeout=10))
    link = local(recorder.to("Bob.Ortiz@Example.com")[0].link("approve"))

    for _ in range(2):  # a mail scanner and then the person
        page = await web.get(link)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Approve this request?" in page.text and "Bob.Ortiz@Example.com" in page.text
        assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold</b>" not in page.text
    assert (await gw.approvals.get(approval_id)).approval.votes == ()

    fields = form_of(page.text)
    no_csrf = await web.post("/hooks/email/confirm", data={"t": fields["t"], "d": "approve"})
    assert no_csrf.status_code == 403
    swapped = await web.post("/hooks/email/confirm", data={**fields, "d": "deny", "reason": "x"})
    assert swapped.status_code == 403  # the CSRF token is bound to the decision
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert rejections(gw) == ["missing or invalid CSRF token"] * 2

    done = await web.post("/hooks/email/confirm", data={**fields, "reason": "fine by me"})
    assert done.status_code == 200 and "submitted" in done.text
    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    vote = stored.approval.votes[0]
    assert (vote.person, vote.channel, vote.comment) == ("bob", "email", "fine by me")

    result = await web.get(link)
    assert "Recorded: you approved this request." in result.text and "<form" not in result.text
    again = await web.post("/hooks/email/confirm", data=fields)
    assert again.status_code == 409 and "already used" in again.text
    assert len((await gw.approvals.get(approval_id)).approval.votes) == 1
    assert rejections(gw)[-1].startswith("replayed event link:")

    await drain(hub, clock)
    for address in ("alice@example.com", "Bob.Ortiz@Example.com"):
        first, notice = recorder.to(address)
        assert notice.message["Subject"] == "Decided: pay — approved"
        assert notice.message["In-Reply-To"] == first.message["Message-ID"]
        assert "Approved by Bob Ortiz" in notice.text and "confirm?t=" not in notice.text


async def test_deny_needs_a_reason(
    env: tuple[Gateway, ChannelHub],
    smtp: tuple[Recorder, int],
    web: httpx.AsyncClient,
    clock: FrozenClock,
) -> None:
    """A deny without a reason is sent back to the form and uses nothing up; with one it
    denies the request."""
    gw, hub = env
    recorder, _ = smtp
    approval_id = await ask(gw, hub, clock)
    page = await web.get(local(recorder.to("alice@example.com")[0].link("deny")))
    assert "Deny this request?" in page.text and 'name="reason" required' in page.text
    fields = form_of(page.text)
    empty = await web.post("/hooks/email/confirm", data={**fields, "reason": "   "})
    assert empty.status_code == 400 and "A reason is required." in empty.text
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    denied = await web.post("/hooks/email/confirm", data={**fields, "reason": "not this month"})
    assert denied.status_code == 200
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.votes[0].comment == "not this month"


async def test_expired_request_shows_a_clear_page_and_refuses(
    env: tuple[Gateway, ChannelHub],
    smtp: tuple[Recorder, int],
    web: httpx.AsyncClient,
    clock: FrozenClock,
) -> None:
    """After the deadline the link's page says the request expired, and its form decides
    nothing."""
    gw, hub = env
    recorder, _ = smtp
    approval_id = await ask(gw, hub, clock)
    link = local(recorder.to("alice@example.com")[0].link("approve"))
    fields = form_of((await web.get(link)).text)
    clock.advance(hours=5)
    page = await web.get(link)
    assert page.status_code == 410 and "This request expired" in page.text
    assert "<form" not in page.text
    late = await web.post("/hooks/email/confirm", data=fields)
    assert late.status_code == 409 and "expired" in late.text
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "expired" and stored.approval.votes == ()
    assert "vote.rejected" in kinds(gw)
    await drain(hub, clock)
    assert recorder.to("alice@example.com")[-1].message["Subject"] == "Decided: pay — expired"


async def test_links_of_people_who_may_not_decide_are_refused(
    env: tuple[Gateway, ChannelHub],
    smtp: tuple[Recorder, int],
    web: httpx.AsyncClient,
    clock: FrozenClock,
) -> None:
    """Once stage 1 is met, a manager's link decides nothing; nor does a link that names the
    requester (the shared eligibility check backs up the page)."""
    gw, hub = env
    recorder, _ = smtp
    approval_id = await ask(gw, hub, clock, action="wire")
    bob_link = local(recorder.to("Bob.Ortiz@Example.com")[0].link("approve"))
    bob_fields = form_of((await web.get(bob_link)).text)
    alice_fields = form_of(
        (await web.get(local(recorder.to("alice@example.com")[0].link("approve")))).text
    )
    assert (await web.post("/hooks/email/confirm", data=alice_fields)).status_code == 200
    await drain(hub, clock)
    assert recorder.to("dana@example.com")  # stage 2 asked
    page = await web.get(bob_link)
    assert page.status_code == 409 and "no longer needs your decision" in page.text
    refused = await web.post("/hooks/email/confirm", data=bob_fields)
    assert refused.status_code == 409 and "no longer needs your decision" in refused.text
    stored = await gw.approvals.get(approval_id)
    assert [v.person for v in stored.approval.votes] == ["alice"]

    channel = hub.channels["email"]
    assert isinstance(channel, EmailChannel)
    now, expires = clock(), stored.approval.expires_at
    token = await gw.writer.run(
        lambda tx: tokens.issue(
            tx.conn,
            approval_id=approval_id,
            person="carol",
            channel="email",
            now=now,
            expires_at=expires,
        )
    )
    forged = {"t": token, "d": "approve", "csrf": channel._csrf(token, "approve")}
    assert (await web.post("/hooks/email/confirm", data=forged)).status_code == 409
    stored = await gw.approvals.get(approval_id)
    assert [v.person for v in stored.approval.votes] == ["alice"]
    assert stored.approval.state.value == "pending"
    assert kinds(gw).count("vote.rejected") == 2


async def test_invalid_links_and_paths(
    env: tuple[Gateway, ChannelHub], web: httpx.AsyncClient, clock: FrozenClock
) -> None:
    """Unknown tokens, bad decisions and other paths get a clear refusal and decide nothing."""
    gw, hub = env
    await ask(gw, hub, clock)
    unknown = await web.get("/hooks/email/confirm?t=AAAAAAAAAAAAAAAAAAAAAA&d=approve")
    assert unknown.status_code == 404 and "This link is not valid" in unknown.text
    bad = await web.get("/hooks/email/confirm?t=AAAAAAAAAAAAAAAAAAAAAA&d=yes")
    assert bad.status_code == 400
    assert (await web.get("/hooks/email/elsewhere")).status_code == 404
    assert (await web.post("/hooks/email/confirm", content=b"\xff\xfe")).status_code == 400
    assert "vote.recorded" not in kinds(gw)


async def test_unattached_channel_refuses_callbacks(clock: FrozenClock) -> None:
    """Without its gateway the channel cannot show a link, and says so instead of guessing."""
    channel = EmailChannel({"smtp_host": "127.0.0.1", "sender": "a@b.test"}, PUBLIC)
    raw = RawRequest(
        "GET", "/hooks/email/confirm", {}, {"t": "A" * 22, "d": "approve"}, b"", clock()
    )
    with pytest.raises(CallbackRejected) as caught:
        await channel.parse_callback(raw)
    assert caught.value.status == 503


# -- SMTP transport: TLS, STARTTLS, AUTH, errors ---------------------------------------------------
def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the PEM file that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer",
        b"s3cret-pw",
    )
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself


def message() -> Message:
    return Message(
        approval_id="apr_1",
        action="pay",
        params={"amount": 1},
        reasons=("because",),
        requester="Carol",
        agent=None,
        stage=StageView(0, "manager", 1),
        expires_at=dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.UTC),
        state="pending",
        status_line="Waiting for manager (stage 1 of 1)",
        approve_token="T" * 22,
        deny_token="T" * 22,
    )


def channel_for(port: int, **settings: Any) -> EmailChannel:
    base: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "sender": "approvals@clearance.test",
        "timeout": 5,
    }
    return EmailChannel({**base, **settings}, PUBLIC)


async def test_starttls_with_auth(tmp_path: Path) -> None:
    """STARTTLS to a server that requires it and AUTH works with a trusted CA; a wrong
    password and an untrusted certificate are errors not worth retrying."""
    context, ca_file = self_signed(tmp_path)
    recorder, port = Recorder(), free_port()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        server_hostname="smtp.test",
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        good = channel_for(
            port, tls="starttls", ca_file=str(ca_file), username="mailer", password="s3cret-pw"
        )
        sent = await good.send(message(), "bob@example.com")
        assert sent.ref["to"] == "bob@example.com"
        assert [(r.tls, r.authenticated) for r in recorder.received] == [(True, True)]

        wrong = channel_for(
            port, tls="starttls", ca_file=str(ca_file), username="mailer", password="nope-pw"
        )
        with pytest.raises(ChannelError) as caught:
            await wrong.send(message(), "bob@example.com")
        assert caught.value.retry is False and "nope-pw" not in str(caught.value)

        untrusted = channel_for(port, tls="starttls", username="mailer", password="s3cret-pw")
        with pytest.raises(ChannelError) as caught:
            await untrusted.send(message(), "bob@example.com")
        assert caught.value.retry is False

        plain = channel_for(port, tls="none")
        with pytest.raises(ChannelError):  # the server insists on STARTTLS and AUTH
            await plain.send(message(), "bob@example.com")
        assert len(recorder.received) == 1
    finally:
        controller.stop()


async def test_implicit_tls(tmp_path: Path) -> None:
    """`tls: tls` speaks SMTP inside TLS from the first byte (SMTPS)."""
    context, ca_file = self_signed(tmp_path)
    recorder, port = Recorder(), free_port()
    controller = Controller(
        recorder, hostname="127.0.0.1", port=port, server_hostname="smtp.test", ssl_context=context
    )
    controller.start()
    try:
        await channel_for(port, tls="tls", ca_file=str(ca_file)).send(message(), "b@example.com")
        assert [r.rcpt_tos for r in recorder.received] == [["b@example.com"]]
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("reply", "retry"), [("550 5.1.1 no such user", False), ("451 later", True)]
)
async def test_smtp_refusals_map_to_channel_errors(
    smtp: tuple[Recorder, int], reply: str, retry: bool
) -> None:
    """A permanent (5xx) refusal is not retried; a temporary (4xx) one is."""
    recorder, port = smtp
    recorder.rcpt_reply = reply
    with pytest.raises(ChannelError) as caught:
        await channel_for(port, tls="none").send(message(), "bob@example.com")
    assert caught.value.retry is retry and recorder.received == []


async def test_unreachable_server_is_retryable_and_delivered_once_it_is_back(
    tmp_path: Path, clock: FrozenClock
) -> None:
    """While the SMTP server is down the send is retried; once it is up, one mail goes out."""
    port = free_port()
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("PORT", str(port)))
    gw = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gw)
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, server_hostname="smtp.test")
    try:
        await gw.check(Request("pay", {"amount": 500}, {"user": "carol"}))
        while await hub.dispatcher.run_once():
            pass
        assert kinds(gw).count("delivery.sent") == 0 and "delivery.failed" not in kinds(gw)
        controller.start()
        await drain(hub, clock)
        assert sorted(r.rcpt_tos[0] for r in recorder.received) == [
            "Bob.Ortiz@Example.com",
            "alice@example.com",
        ]
        assert kinds(gw).count("delivery.sent") == 2
    finally:
        if controller.server is not None:
            controller.stop()
        await hub.aclose()
        await gw.aclose()


async def test_blocked_action_alert_has_no_links(smtp: tuple[Recorder, int]) -> None:
    """A security alert (a blocked action) is a plain notice: no decision links."""
    recorder, port = smtp
    alert = Message(
        approval_id="dec_1",
        action="evil",
        params={},
        reasons=("blocked by policy",),
        requester="Carol",
        agent=None,
        stage=StageView(0, "alert", 1),
        expires_at=dt.datetime(2026, 11, 24, 14, 0, tzinfo=dt.UTC),
        state="blocked",
        status_line="BLOCKED: evil requested by Carol. blocked by policy",
        inbox_url=f"{PUBLIC}/ui",
    )
    await channel_for(port, tls="none").send(alert, "frank@example.com")
    mail = recorder.to("frank@example.com")[0]
    assert mail.message["Subject"] == "Blocked: evil"
    assert "BLOCKED: evil requested by Carol" in mail.text and "confirm?t=" not in mail.text
    assert "confirm?t=" not in mail.html


def test_settings_errors_name_the_key_and_never_the_secret(tmp_path: Path) -> None:
    """Bad settings fail at load, naming the key and never quoting a password."""
    base = {"smtp_host": "127.0.0.1", "sender": "approvals@clearance.test"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sender": "a@b.test"}, "'smtp_host'"),
        ({"smtp_host": "h"}, "'sender'"),
        ({**base, "sender": "a@b.test\r\nBcc: x@y"}, "'sender'"),
        ({**base, "tls": "ssl"}, "'tls'"),
        ({**base, "smtp_port": "x"}, "'smtp_port'"),
        ({**base, "password": "hunter2-secret"}, "'username'"),
        ({**base, "username": "mailer"}, "'password'"),
        ({**base, "ca_file": str(tmp_path / "missing.pem")}, "'ca_file'"),
    ]
    for settings, key in cases:
        with pytest.raises(ValueError, match=key) as caught:
            EmailChannel(settings, PUBLIC)
        assert "hunter2-secret" not in str(caught.value)
    assert EmailChannel({**base, "tls": "tls"}, PUBLIC).port == 465
    assert EmailChannel({**base, "tls": "none"}, PUBLIC).port == 25
