"""The email channel: a multipart request with per-approver links, through SMTP (aiosmtplib).

Settings: `{smtp_host, smtp_port, tls, username, password, sender, timeout, tls_verify,
ca_file, link_secret}`.

- `smtp_host`, `sender` are required. `tls` is `none | starttls | tls` (default `starttls`;
  `tls` is implicit TLS, usually port 465). `smtp_port` defaults to 465 / 587 / 25 by mode.
  `username` and `password` go together (AUTH after the TLS upgrade). `timeout` in seconds
  (default 10). `tls_verify: false` skips certificate checks (never in production);
  `ca_file` trusts an extra CA bundle (a private relay's certificate).
- `link_secret`: the key of the CSRF tokens on the confirmation page. Without it a random
  key is made per process, so a page opened before a restart (or served by another worker)
  must be reloaded before its form works; set it when running several workers.

The links. Each approver gets their own pair, `{public_url}/hooks/<name>/confirm?t=<token>&d=
approve|deny`, carrying the dispatcher's opaque single-use token. Mail scanners open links,
so a GET never decides: it renders a confirmation page (the request, and a form). Only the
form's POST decides, and only with the page's CSRF token (an HMAC over the token and the
decision, compared in constant time); a deny needs a reason. The token is claimed with
`tokens.use_once` in the POST, so the link works once; the POST's event id is derived from
the token, so a second POST is also dropped by the shared replay check and audited. Whoever
holds the link is the person it was sent to: the interaction's user is that person's email
address as written in the directory.

The confirmation page needs the store (to show the request and claim the token), so the
channel must be attached to its gateway: `channel.attach(gateway)` (see `attach`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, Template, select_autoescape

from ..approvals.model import ApprovalState
from ..approvals.records import StoredApproval
from ..approvals.service import ApprovalNotFound
from ..directory import Person
from . import tokens
from .base import (
    CallbackRejected,
    CallbackReply,
    ChannelError,
    Interaction,
    Message,
    Outcome,
    Parsed,
    RawRequest,
    Sent,
)
from .message import build

if TYPE_CHECKING:
    from ..gateway import Gateway

TLS_MODES = {"none": 25, "starttls": 587, "tls": 465}
DECISIONS = ("approve", "deny", "always")  # always: approve + a standing grant
MAX_REASON = 4000
MAX_VALUE = 500
MAX_OUTCOMES = 2000
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TEMPLATES = Path(__file__).resolve().parent.parent / "server" / "templates"
_HTML = "text/html; charset=utf-8"


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _template(name: str) -> Template:
    return _env().get_template(name)


def _one_line(value: object, limit: int = MAX_VALUE) -> str:
    """Text safe to put on one line of a plain-text mail: newlines shown, controls dropped."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ↵ ").replace("\t", " ")
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class _View:
    """What a mail or a page shows of a request; every field already one-line text."""

    approval_id: str
    who: str
    action: str
    params: tuple[tuple[str, str], ...]
    reasons: tuple[str, ...]
    stage: str
    deadline: str
    status: str
    alert_title: str

    @classmethod
    def of(cls, message: Message) -> _View:
        return cls(
            approval_id=_one_line(message.approval_id, 100),
            who=_one_line(message.requester or message.agent or "An agent", 200),
            action=_one_line(message.action, 200),
            params=tuple((_one_line(k, 100), _one_line(v)) for k, v in message.params.items()),
            reasons=tuple(_one_line(r, 1000) for r in message.reasons),
            stage=f"Stage {message.stage.index + 1} of {message.stage.count}: "
            + _one_line(message.stage.name, 100),
            deadline=message.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            status=_one_line(message.status_line, 1000),
            alert_title=_one_line(message.alert_title, 200),
        )


@dataclass(frozen=True, slots=True)
class _Link:
    """What a link's token leads to, read fresh from the store."""

    info: tokens.TokenInfo
    stored: StoredApproval
    person: Person | None
    message: Message


class EmailChannel:
    """Approval requests by email; decisions through a confirmation page."""

    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "email"))
        where = f"{self.name} channel"
        host = settings.get("smtp_host")
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"{where}: setting 'smtp_host' is required")
        self.host = host.strip()
        sender = settings.get("sender")
        if not isinstance(sender, str) or "@" not in sender or _has_break(sender):
            raise ValueError(f"{where}: setting 'sender' is required (an email address)")
        self.sender = sender.strip()
        tls = str(settings.get("tls", "starttls")).lower()
        if tls not in TLS_MODES:
            raise ValueError(f"{where}: setting 'tls' must be one of none, starttls, tls")
        self.tls = tls
        try:
            self.port = int(settings.get("smtp_port") or TLS_MODES[tls])
            self.timeout = float(settings.get("timeout", 10.0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: settings 'smtp_port' and 'timeout' are numbers") from None
        if not 0 < self.port < 65536 or self.timeout <= 0:
            raise ValueError(f"{where}: setting 'smtp_port' or 'timeout' is out of range")
        username, password = settings.get("username"), settings.get("password")
        if bool(username) != bool(password):
            missing = "password" if username else "username"
            raise ValueError(f"{where}: setting {missing!r} is required with the other")
        self.username = str(username) if username else None
        self._password = str(password) if password else None
        self.tls_verify = bool(settings.get("tls_verify", True))
        ca_file = settings.get("ca_file")
        if ca_file is not None and not Path(str(ca_file)).is_file():
            raise ValueError(f"{where}: setting 'ca_file' names no readable file")
        self.ca_file = str(ca_file) if ca_file is not None else None
        link_secret = settings.get("link_secret")
        self._csrf_key = (
            hashlib.sha256(b"clearance-email-csrf\x00" + str(link_secret).encode()).digest()
            if link_secret
            else secrets.token_bytes(32)
        )
        self.public_url = public_url.rstrip("/")
        self.confirm_path = f"/hooks/{quote(self.name, safe='')}/confirm"
        self.domain = _ID_UNSAFE.sub("", self.sender.rpartition("@")[2].rstrip(">")) or "clearance"
        self._gateway: Gateway | None = None
        self._outcomes: OrderedDict[str, tuple[bool, str]] = OrderedDict()
        self._notified: OrderedDict[str, None] = OrderedDict()  # decided notices sent

    def attach(self, gateway: Gateway) -> None:
        """Give the channel its gateway: the confirmation page reads the request and claims
        the link's token in its store. (The channel hub is expected to call this.)"""
        self._gateway = gateway

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        person = message.recipient.id if message.recipient else address
        view = _View.of(message)
        approve_url = deny_url = always_url = None
        if message.state == "blocked":
            kind, subject = "alert", view.alert_title
            message_id = self._message_id(message.approval_id, person, "alert")
        else:
            kind, subject = "request", message.title
            message_id = self._message_id(message.approval_id, person, f"s{message.stage.index}")
            if message.open and message.approve_token:
                approve_url = self._link(message.approve_token, "approve")
                deny_url = self._link(message.deny_token or message.approve_token, "deny")
                if message.always_token:  # where the rule allows a standing grant
                    always_url = self._link(message.always_token, "always")
        text = _request_text(
            view, kind, approve_url, deny_url, message.inbox_url, always_url=always_url
        )
        html = _template("email_message.html").render(
            kind=kind,
            title=subject,
            view=view,
            approve_url=approve_url,
            deny_url=deny_url,
            always_url=always_url,
            inbox_url=message.inbox_url,
        )
        mail = self._mail(address, subject, message_id, text, html)
        await self._deliver(mail, address)
        ref = {"message_id": message_id, "to": address, "person": person}
        return Sent(ref, {"message_id": message_id})

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        """Email can't be edited. A mail for every vote would be noise (and the link page
        shows the live state anyway), so intermediate updates send nothing; once the request
        is decided (approved, denied, expired, cancelled) each recipient gets one short
        notice, so nobody goes looking for a request that is closed."""
        if message.state in ("pending", "blocked"):
            return
        original = str(ref.get("message_id", ""))
        address = str(ref.get("to", ""))
        person = str(ref.get("person", address))
        message_id = self._message_id(message.approval_id, person, f"decided-{message.state}")
        if message_id in self._notified:  # the same update job retried (another channel failed)
            return
        view = _View.of(message)
        subject = f"Decided: {view.action} — {message.state}"
        text = "\n".join(
            [
                view.status,
                "",
                f"Request {view.approval_id}: {view.who} wanted to run {view.action}.",
                "The links in the earlier email no longer work.",
                *([f"Web inbox: {message.inbox_url}"] if message.inbox_url else []),
            ]
        )
        html = _template("email_message.html").render(
            kind="decided", title=subject, view=view, inbox_url=message.inbox_url
        )
        mail = self._mail(address, subject, message_id, text + "\n", html)
        if original:
            mail["In-Reply-To"] = original
            mail["References"] = original
        await self._deliver(mail, address)
        self._notified[message_id] = None
        while len(self._notified) > MAX_OUTCOMES:
            self._notified.popitem(last=False)

    def _link(self, token: str, decision: str) -> str:
        query = urlencode({"t": token, "d": decision})
        return f"{self.public_url}{self.confirm_path}?{query}"

    def _message_id(self, approval_id: str, person: str, part: str) -> str:
        """`<approval.person.part@domain>`: the same for a resend of the same mail."""
        who = _ID_UNSAFE.sub("", person)
        if who != person or not who or len(who) > 64:
            who = hashlib.sha256(person.encode()).hexdigest()[:16]
        return f"<{_ID_UNSAFE.sub('', approval_id)[:80]}.{who}.{part}@{self.domain}>"

    def _mail(
        self, address: str, subject: str, message_id: str, text: str, html: str
    ) -> EmailMessage:
        if _has_break(address) or "@" not in address:
            raise ChannelError(f"{self.name}: not an email address", retry=False)
        mail = EmailMessage()
        mail["Subject"] = _one_line(subject, 200)
        mail["From"] = self.sender
        mail["To"] = address
        mail["Message-ID"] = message_id
        mail["Date"] = formatdate(usegmt=True)
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(text)
        mail.add_alternative(html, subtype="html")
        return mail

    async def _deliver(self, mail: EmailMessage, address: str) -> None:
        try:
            await aiosmtplib.send(
                mail,
                sender=self.sender,
                recipients=[address],
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self._password,
                timeout=self.timeout,
                use_tls=self.tls == "tls",
                start_tls=self.tls == "starttls",
                validate_certs=self.tls_verify,
                cert_bundle=self.ca_file,
            )
        except aiosmtplib.SMTPAuthenticationError:
            raise ChannelError(f"{self.name}: SMTP authentication failed", retry=False) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            retry = all(400 <= c < 500 for c in codes)
            raise ChannelError(
                f"{self.name}: the SMTP server refused the recipient ({codes})", retry=retry
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise ChannelError(
                f"{self.name}: the SMTP server answered {exc.code}", retry=exc.code < 500
            ) from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise ChannelError(f"{self.name}: {exc}", retry=False) from None
        except ssl.SSLCertVerificationError:
            raise ChannelError(
                f"{self.name}: the SMTP server's certificate did not verify", retry=False
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelError(
                f"{self.name}: could not reach the SMTP server ({type(exc).__name__})",
                retry=True,
            ) from None

    # -- the confirmation page ----------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        if request.path.rstrip("/").rsplit("/", 1)[-1] != "confirm":
            raise CallbackRejected("unknown email callback path", 404)
        if request.method == "GET":
            return await self._show(request)
        if request.method == "POST":
            return await self._submit(request)
        raise CallbackRejected("method not allowed", 405)

    async def _show(self, request: RawRequest) -> Parsed:
        """GET: show the request and the form. Never decides anything."""
        token, decision = request.query.get("t", ""), request.query.get("d", "")
        if decision not in DECISIONS or not _TOKEN.fullmatch(token):
            return _reply(self._invalid(), 400)
        link = await self._open(token)
        if link is None:
            return _reply(self._invalid(), 404)
        page, status = self._page(link, token, decision, request.path)
        return _reply(page, status)

    async def _submit(self, request: RawRequest) -> Parsed:
        """POST from the page: check the CSRF token, claim the link, hand over the decision."""
        form = _form(request.body)
        token, decision = form.get("t", ""), form.get("d", "")
        csrf, reason = form.get("csrf", ""), form.get("reason", "").strip()[:MAX_REASON]
        if not (token and decision and csrf) or not hmac.compare_digest(
            csrf.encode(), self._csrf(token, decision).encode()
        ):
            raise CallbackRejected("missing or invalid CSRF token", 403)
        if decision not in DECISIONS or not _TOKEN.fullmatch(token):
            raise CallbackRejected("malformed confirmation form", 400)
        link = await self._open(token)
        if link is None:
            raise CallbackRejected("unknown email link", 404)
        a = link.stored.approval
        interaction = Interaction(
            event_id=f"link:{tokens.digest(token)}",
            user_id=(link.person.email or "") if link.person else "",
            token=token,
            decision=decision,
            comment=reason or None,
        )
        if link.info.used_at is not None:
            page = self._render(link, notice="This link was already used.", tone="bad")
            return Parsed((interaction,), _html(page, 409))  # the hub audits the replay
        if decision == "deny" and not reason and a.state is ApprovalState.PENDING:
            form_page, _ = self._page(link, token, decision, request.path, "A reason is required.")
            return _reply(form_page, 400)  # nothing claimed: the person can try again
        gateway = self._require_gateway()
        now = request.received_at
        first = await gateway.writer.run(lambda tx: tokens.use_once(tx.conn, token, now))
        if not first:
            page = self._render(link, notice="This link was already used.", tone="bad")
            return Parsed((interaction,), _html(page, 409))
        if a.state is not ApprovalState.PENDING:
            # Handed over all the same: the refusal is recorded like any late click.
            notice, tone = self._closed(link)
            return Parsed((interaction,), _html(self._render(link, notice=notice, tone=tone), 409))
        if link.person is None or not a.pending_on(link.person.id):
            notice = "This request no longer needs your decision."
            page = self._render(link, notice=notice, tone="warn")
            return Parsed((interaction,), _html(page, 409))  # the hub records the refusal
        result_url = f"{request.path}?{urlencode({'t': token, 'd': decision})}"
        page = self._render(
            link,
            notice="Thank you — your decision has been submitted.",
            tone="info",
            refresh_url=result_url,
        )
        return Parsed((interaction,), _html(page, 200))

    def _page(
        self, link: _Link, token: str, decision: str, path: str, error: str | None = None
    ) -> tuple[str, int]:
        """The page a link shows now: the form, or why there is none."""
        a = link.stored.approval
        person_id = link.info.person
        if link.info.used_at is not None:
            own = [v for v in a.votes if v.person == person_id]
            outcome = self._outcomes.get(f"link:{tokens.digest(token)}")
            if own:
                verb = "approved" if own[-1].decision.value == "approve" else "denied"
                return self._render(link, notice=f"Recorded: you {verb} this request."), 200
            if outcome is not None and not outcome[0]:
                notice = f"Your decision was not recorded: {outcome[1]}"
                return self._render(link, notice=notice, tone="bad"), 200
            return self._render(link, notice="This link was already used.", tone="bad"), 200
        if a.state is not ApprovalState.PENDING:
            notice, tone = self._closed(link)
            return self._render(link, notice=notice, tone=tone), 410
        if link.person is None or not a.pending_on(link.person.id):
            notice = "This request no longer needs your decision."
            return self._render(link, notice=notice, tone="warn"), 409
        other = "approve" if decision == "deny" else "deny"
        form = {
            "decision": decision,
            "token": token,
            "csrf": self._csrf(token, decision),
            "action_url": path,
            "other_url": f"{path}?{urlencode({'t': token, 'd': other})}",
            "recipient": link.person.email or link.person.name,
            "error": error,
            "reason": "",
            "max_reason": MAX_REASON,
        }
        title = "Approve always" if decision == "always" else f"{decision.title()} request"
        return self._render(link, form=form, title=title), 200

    @staticmethod
    def _closed(link: _Link) -> tuple[str, str]:
        state = link.stored.approval.state
        if state is ApprovalState.EXPIRED:
            expired = "This request expired: nobody decided in time, and the action did not run."
            return expired, "warn"
        if state is ApprovalState.CANCELLED:
            return "This request was withdrawn.", "warn"
        return "This request was already decided.", "warn"

    def _render(
        self,
        link: _Link,
        *,
        notice: str | None = None,
        tone: str = "ok",
        form: dict[str, Any] | None = None,
        refresh_url: str | None = None,
        title: str | None = None,
    ) -> str:
        return _template("email_confirm.html").render(
            title=title or link.message.title,
            view=_View.of(link.message),
            notice=notice,
            tone=tone,
            form=form,
            refresh_url=refresh_url,
            inbox_url=link.message.inbox_url if form else None,
        )

    def _invalid(self) -> str:
        return _template("email_confirm.html").render(
            title="Link not valid",
            view=None,
            notice="This link is not valid. Use the links in the latest email, or the web inbox.",
            tone="bad",
        )

    async def _open(self, token: str) -> _Link | None:
        gateway = self._require_gateway()
        async with gateway.db.aconnect() as conn:
            info = await conn.run_sync(lambda c: tokens.lookup(c, token))
        if info is None or info.channel != self.name:
            return None
        try:
            stored = await gateway.approvals.get(info.approval_id)  # expires it when due
        except ApprovalNotFound:
            return None
        directory = gateway.policy.directory
        person = directory.get(info.person)
        message = build(stored, directory, public_url=self.public_url, recipient=person)
        return _Link(info, stored, person, message)

    def _require_gateway(self) -> Gateway:
        if self._gateway is None:
            raise CallbackRejected("the email channel is not attached to a gateway", 503)
        return self._gateway

    def _csrf(self, token: str, decision: str) -> str:
        data = f"{token}\x1f{decision}".encode()
        return hmac.new(self._csrf_key, data, hashlib.sha256).hexdigest()

    async def acknowledge(self, outcome: Outcome) -> None:
        """Keep the result for the page the person is sent back to (the POST's reply is
        written before the hub decides)."""
        self._outcomes[outcome.interaction.event_id] = (outcome.ok, outcome.text)
        while len(self._outcomes) > MAX_OUTCOMES:
            self._outcomes.popitem(last=False)

    async def aclose(self) -> None:
        self._gateway = None


def _has_break(text: str) -> bool:
    return "\r" in text or "\n" in text


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise CallbackRejected("malformed confirmation form", 400) from None
    return {key: values[0] for key, values in fields.items() if values}


def _html(page: str, status: int) -> CallbackReply:
    return CallbackReply(status, page.encode(), _HTML)


def _reply(page: str, status: int) -> Parsed:
    return Parsed((), _html(page, status))


def _request_text(
    view: _View,
    kind: str,
    approve_url: str | None,
    deny_url: str | None,
    inbox_url: str,
    *,
    always_url: str | None = None,
) -> str:
    if kind == "alert":
        lines = [view.status]
    else:
        lines = [f"{view.who} wants to run {view.action}", ""]
        lines.extend(f"  {key}: {value}" for key, value in view.params)
        if not view.params:
            lines.append("  (no arguments)")
        lines.append("")
        lines.extend(f"Why: {reason}" for reason in view.reasons)
        lines.append(view.stage)
        lines.append(f"Decide by {view.deadline}")
        lines.append("")
        if approve_url and deny_url:
            lines.append(f"Approve: {approve_url}")
            lines.append(f"Deny:    {deny_url}")
            if always_url:
                lines.append(f"Approve always (a standing grant): {always_url}")
            lines.append("")
            lines.append(
                "Each link opens a page where you confirm; nothing is decided by opening it. "
                "The links are for you alone and work once."
            )
        else:
            lines.append(view.status)
    if inbox_url:
        lines.extend(["", f"Web inbox: {inbox_url}"])
    return "\n".join(lines) + "\n"
