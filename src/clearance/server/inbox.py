"""The web inbox at `/ui`: server-rendered pages where approvers sign in and decide.

Everything works without JavaScript: plain links and HTML forms, Post/Redirect/Get after a
decision. Security, in one place:

- Sign-in checks an argon2 password (`identity.passwords`) off the event loop, answers the
  same text for an unknown person and a wrong password, and audits both outcomes (never the
  password). The session cookie carries an opaque token the database knows only as a SHA-256
  (`identity.sessions`); it is HttpOnly, SameSite=Lax, Path=/, and Secure over https.
- Every state-changing POST carries a CSRF token in a hidden field, compared in constant
  time: the session's own token, or (for the sign-in form, before there is a session) a
  double-submit cookie. GET never changes anything a person did.
- A request is shown only to its requester, the people its plan lists, its voters, and
  admins or auditors; anyone else gets the same 404 as for an unknown id.
- Templates are autoescaped; pages send a strict Content-Security-Policy (no script at all),
  `no-store` caching and no-framing headers.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection, select

from .. import grants
from ..approvals import records, workflow
from ..approvals.model import Approval, ApprovalState, Vote, VoteDecision
from ..approvals.records import StoredApproval
from ..approvals.service import ApprovalError, ApprovalNotFound
from ..audit.entry import AuditDraft, Kind
from ..audit.export import verify_store
from ..audit.writer import WriteTx
from ..canonical import REDACTED
from ..directory import Directory, Person
from ..gateway import Gateway
from ..identity import mfa, passwords, sessions, throttle
from ..store.database import Database
from ..store.reads import read
from ..store.schema import approvals as approvals_table
from ..store.schema import audit_entries
from .api import AUDIT_ROLES, may_see, vote_proof
from .auth import Principal

__all__ = ["SESSION_COOKIE", "install"]

T = TypeVar("T")

SESSION_COOKIE = "clearance_session"
LOGIN_CSRF_COOKIE = "clearance_login_csrf"
CHANNEL = "web"
MASK = "••••• (redacted)"

MAX_PERSON_ID = 255
MAX_PASSWORD = 1024
MAX_COMMENT = 4000
PENDING_SCAN = 500  # a person's newest pending requests shown in their inbox
DECIDED_SCAN = 500  # decided requests read to build one history page
MY_REQUESTS = 25
AUDIT_LATEST = 100

_HERE = Path(__file__).parent
_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_DONE = {
    "approve": "You approved this request.",
    "deny": "You denied this request.",
    "always": "You approved this request always: later ones in the same scope are granted.",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


# ---------------------------------------------------------------------------------------------
# Installing


def install(app: FastAPI) -> None:
    """Add the inbox's pages and its static files to `app`."""
    from . import inbox_admin, inbox_mfa  # second factors and admin changes build on this

    app.include_router(router)
    inbox_mfa.install(app)
    inbox_admin.install(app)
    from . import inbox_delegation  # out-of-office delegates

    inbox_delegation.install(app)
    from . import inbox_controls  # emergency overrides, standing grants

    inbox_controls.install(app)
    app.mount("/ui/static", StaticFiles(directory=_HERE / "static"), name="ui-static")


# ---------------------------------------------------------------------------------------------
# Formatting (also Jinja filters)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _when_s(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def relative(when: datetime, now: datetime) -> str:
    """`in 3 h 59 min`, `12 min ago`: how far `when` is from `now`, for people."""
    seconds = (when - now).total_seconds()
    s = int(abs(seconds))
    if s < 60:
        text = "less than a minute"
    elif s < 3600:
        text = f"{s // 60} min"
    elif s < 86400:
        h, m = divmod(s // 60, 60)
        text = f"{h} h {m} min" if m else f"{h} h"
    else:
        d, h = divmod(s // 3600, 24)
        text = f"{d} d {h} h" if h else f"{d} d"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _mask(value: Any) -> Any:
    if value == REDACTED:
        return "•••••"
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def _show(value: Any) -> str:
    """One parameter value as text: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(_mask(value), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True, slots=True)
class ParamRow:
    key: str
    value: str
    redacted: bool = False


def param_rows(params: Mapping[str, Any], prefix: str = "") -> list[ParamRow]:
    """Parameters as table rows: nested objects flattened to dotted keys, redacted masked."""
    rows: list[ParamRow] = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(param_rows(value, name + "."))
        elif value == REDACTED:
            rows.append(ParamRow(name, MASK, redacted=True))
        else:
            rows.append(ParamRow(name, _show(value)))
    return rows


def params_line(params: Mapping[str, Any], limit: int = 110) -> str:
    """The key parameters on one line: `amount: 2000 · destination_country: US`."""
    parts = []
    for row in param_rows(params)[:5]:
        value = row.value if len(row.value) <= 40 else row.value[:39] + "…"
        parts.append(f"{row.key}: {value}")
    line = " · ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


_env.filters["when"] = _when
_env.filters["when_s"] = _when_s
_env.filters["iso"] = _iso


# ---------------------------------------------------------------------------------------------
# View models


@dataclass(frozen=True, slots=True)
class Row:
    """One request in a list."""

    id: str
    action: str
    params: str
    requester: str | None
    agent: str | None
    state: str
    stage: str
    progress: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    deadline: str
    part: str = ""


@dataclass(frozen=True, slots=True)
class VoteView:
    name: str
    person: str
    decision: str
    channel: str
    at: datetime
    comment: str | None
    factor: str | None = None  # the second factor the vote came with (totp | webauthn)


@dataclass(frozen=True, slots=True)
class RequirementView:
    approvers: list[str]
    required: int
    counted: list[str]
    needed: int


@dataclass(frozen=True, slots=True)
class StageView:
    number: int
    name: str
    status: str  # done | current | denied | waiting | closed
    requirements: list[RequirementView]
    votes: list[VoteView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReasonView:
    rule: str | None
    text: str


def _stage_text(a: Approval) -> tuple[str, str]:
    """(`manager (1 of 2)`, `0 of 1 approvals`) for a pending request; outcome otherwise."""
    if a.state is not ApprovalState.PENDING or a.stage_index >= len(a.plan.stages):
        return "—", a.state.value
    i = a.stage_index
    name = a.plan.stages[i].name
    progress = a.stage_progress(i)
    have = sum(len(r.counted) for r in progress)
    need = sum(r.required for r in progress)
    return f"{name} ({i + 1} of {len(a.plan.stages)})", f"{have} of {need} approvals"


def _row(stored: StoredApproval, directory: Directory, now: datetime, part: str = "") -> Row:
    a = stored.approval
    stage, progress = _stage_text(a)
    return Row(
        id=a.id,
        action=a.action,
        params=params_line(a.params),
        requester=directory.display_name(a.requester) if a.requester else None,
        agent=stored.agent or a.actor.get("agent"),
        state=a.state.value,
        stage=stage,
        progress=progress,
        created_at=a.created_at,
        expires_at=a.expires_at,
        decided_at=a.decided_at,
        deadline=relative(a.expires_at, now),
        part=part,
    )


def _stage_views(a: Approval, directory: Directory) -> list[StageView]:
    name = directory.display_name
    out = []
    for i, stage in enumerate(a.plan.stages):
        votes = [
            VoteView(
                name(v.person), v.person, v.decision.value, v.channel, v.at, v.comment, v.factor
            )
            for v in a.votes
            if v.stage_index == i
        ]
        if a.state is ApprovalState.DENIED and any(v.decision == "deny" for v in votes):
            status = "denied"
        elif i < a.stage_index or a.state is ApprovalState.APPROVED:
            status = "done"
        elif a.state is ApprovalState.PENDING:
            status = "current" if i == a.stage_index else "waiting"
        else:
            status = "closed"
        requirements = [
            RequirementView(
                approvers=[name(p) for p in r.approvers],
                required=r.required,
                counted=[v.acting(name) for v in r.votes],  # "Bob Ortiz for Alice Ng"
                needed=r.needed,
            )
            for r in a.stage_progress(i)
        ]
        out.append(StageView(i + 1, stage.name, status, requirements, votes))
    return out


def _reasons(stored: StoredApproval) -> list[ReasonView]:
    out = []
    rules = set(stored.rules)
    for reason in stored.reasons:
        rule, sep, text = reason.partition(": ")
        if sep and rule in rules:
            out.append(ReasonView(rule, text))
        else:
            out.append(ReasonView(None, reason))
    listed = {r.rule for r in out}
    out.extend(ReasonView(rule, "") for rule in stored.rules if rule not in listed)
    return out


def _dry_run(
    a: Approval,
    person: str,
    decision: VoteDecision,
    now: datetime,
    factor: str | None = None,
    geo: str | None = None,
) -> str | None:
    """Why the workflow would refuse this vote now, or None when it would take it (pure).
    `factor` and `geo`: what a vote from the page would carry (see `inbox_mfa.page_extra`)."""
    comment = "reason" if decision is VoteDecision.DENY else None
    vote = Vote(
        person, decision, a.stage_index, now, comment=comment, channel=CHANNEL, factor=factor,
        geo=geo,
    )  # fmt: skip
    try:
        workflow.cast_vote(a, vote, now)
    except workflow.Rejected as exc:
        return exc.message
    return None


# ---------------------------------------------------------------------------------------------
# Sessions and responses


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person of a request."""

    session: sessions.Session
    person: Person

    @property
    def id(self) -> str:
        return self.person.id

    @property
    def principal(self) -> Principal:
        return Principal(kind="person", subject=self.person.id, via="session")

    @property
    def is_auditor(self) -> bool:
        return bool(set(self.person.roles) & AUDIT_ROLES)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


async def _viewer(request: Request) -> Viewer | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    gateway = _gateway(request)
    now = gateway.clock()
    found = await read(gateway.db, lambda c: sessions.lookup(c, token, now))
    if found is None:
        return None
    person = gateway.policy.directory.get(found.person_id)
    if person is None:  # removed from the directory since signing in
        return None
    return Viewer(found, person)


def _page(
    request: Request,
    template: str,
    viewer: Viewer | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    gateway = _gateway(request)
    html = _env.get_template(template).render(
        viewer=viewer,
        csrf=viewer.session.csrf_token if viewer else None,
        now=gateway.clock(),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


def _error(
    request: Request, viewer: Viewer | None, status: int, title: str, message: str
) -> HTMLResponse:
    return _page(
        request, "error.html", viewer, status=status, code=status, title=title, message=message
    )


def _not_found(request: Request, viewer: Viewer | None) -> HTMLResponse:
    return _error(
        request, viewer, 404, "Not found",
        "There is no request with this id, or you are not part of it.",
    )  # fmt: skip


def _csrf_refused(request: Request, viewer: Viewer | None) -> HTMLResponse:
    return _error(
        request, viewer, 403, "Form refused",
        "This form was missing its security token or it did not match your session, so "
        "nothing was changed. Reload the page and try again.",
    )  # fmt: skip


def _sign_in_first(request: Request) -> Response:
    """GET: back to the sign-in page (and here afterwards). POST: 401, nothing changed."""
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(
            f"/ui/login?next={quote(target, safe='/')}", status_code=303
        )
    else:
        response = _error(
            request, None, 401, "Sign in required",
            "Your session has ended, so nothing was changed. Sign in and try again.",
        )  # fmt: skip
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=_is_https(request), httponly=True, samesite="lax"
        )
    return response


def _safe_next(target: str | None) -> str:
    """Only a path inside the inbox: never another site (no open redirect)."""
    if not target or len(target) > 2000:
        return "/ui"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or ".." in target:
        return "/ui"
    if parts.path != "/ui" and not parts.path.startswith("/ui/"):
        return "/ui"
    if parts.path.startswith("/ui/login"):
        return "/ui"
    return target


async def _signed_in_form(request: Request) -> tuple[Viewer, dict[str, str]] | Response:
    """The signed-in viewer and the form they posted, or the response that refuses the POST
    (sign in first; a CSRF token that does not match). Every state-changing form starts here."""
    viewer = await _viewer(request)
    if viewer is None:
        return _sign_in_first(request)
    form = await _form(request)
    if not sessions.csrf_matches(viewer.session, form.get("csrf_token")):
        return _csrf_refused(request, viewer)
    return viewer, form


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _same(expected: str | None, submitted: str | None) -> bool:
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


# ---------------------------------------------------------------------------------------------
# Reads


def _load_many(conn: Connection, ids: Iterable[str]) -> list[StoredApproval]:
    out = []
    for approval_id in ids:
        stored = records.load(conn, approval_id)
        if stored is not None:
            out.append(stored)
    return out


def _pending_for(conn: Connection, person_id: str) -> list[StoredApproval]:
    """The newest pending requests `person_id` may be asked about, found by index (the
    whole store, not a window of the newest requests)."""
    return _load_many(conn, records.ids_for_person(conn, person_id, PENDING_SCAN))


def _requested_by(conn: Connection, person_id: str) -> list[StoredApproval]:
    t = approvals_table
    ids = conn.execute(
        select(t.c.id)
        .where(t.c.requester == person_id)
        .order_by(t.c.created_at.desc())
        .limit(MY_REQUESTS)
    ).scalars()
    return _load_many(conn, [str(i) for i in ids])


def _decided(conn: Connection) -> list[StoredApproval]:
    t = approvals_table
    ids = conn.execute(
        select(t.c.id)
        .where(t.c.state != "pending")
        .order_by(t.c.decided_at.desc(), t.c.created_at.desc())
        .limit(DECIDED_SCAN)
    ).scalars()
    return _load_many(conn, [str(i) for i in ids])


def _latest_audit(conn: Connection) -> list[dict[str, Any]]:
    t = audit_entries
    rows = conn.execute(
        select(t).order_by(t.c.ts.desc(), t.c.seq.desc()).limit(AUDIT_LATEST)
    ).mappings()
    out = []
    for r in rows:
        data = r["data"] or {}
        text = json.dumps(_mask(data), ensure_ascii=False, sort_keys=True) if data else ""
        out.append({**r, "data_text": text if len(text) <= 200 else text[:199] + "…"})
    return out


def _part(a: Approval, person: str) -> str:
    """How `person` took part in `a`, in a few words."""
    mine = [v for v in a.votes if v.person == person]
    if mine:
        return "you approved" if mine[-1].decision is VoteDecision.APPROVE else "you denied"
    if a.requester == person:
        return "you requested"
    return "you were an approver"


def _involved(a: Approval, person: str) -> bool:
    if a.requester == person or any(v.person == person for v in a.votes):
        return True
    if any(person == delegate for _, delegate in a.delegations):
        return True
    return any(person in r.approvers for s in a.plan.stages for r in s.requirements)


def _check_password(db: Database, person_id: str, password: str) -> bool:
    with db.connect() as conn:
        return passwords.check_password(conn, person_id, password)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


# ---------------------------------------------------------------------------------------------
# Sign-in and sign-out


def _login_page(
    request: Request, *, status: int = 200, error: str | None = None, person_id: str = "",
    next_: str = "/ui",
) -> HTMLResponse:  # fmt: skip
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not 20 <= len(token) <= 100:
        token = secrets.token_urlsafe(32)
    response = _page(
        request, "login.html", None, status=status, error=error, person_id=person_id,
        next=next_, login_csrf=token,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, path="/ui/login", httponly=True,
        samesite="lax", secure=_is_https(request),
    )  # fmt: skip
    return response


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    if await _viewer(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next_=_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    if not _same(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf_token")):
        return _csrf_refused(request, None)
    gateway = _gateway(request)
    person_id = form.get("person", "").strip()[:MAX_PERSON_ID]
    password = form.get("password", "")
    target = _safe_next(form.get("next"))
    now = gateway.clock()
    ip = _client(request)
    keys = throttle.subjects(person_id, ip)
    # Too many failures for this id or from this address: refused before the password is
    # even checked, with the same answer whatever it is (brute force and spraying).
    lock = await read(gateway.db, lambda c: throttle.locked(c, keys, now))
    if lock is not None:
        await gateway.writer.append(
            AuditDraft(
                kind=Kind.LOGIN_FAILED, ts=now, channel=CHANNEL,
                data={"attempted_id": person_id, "ip": ip, "refused": "too_many_failures",
                      "locked_until": lock.until.isoformat()},
            )
        )  # fmt: skip
        return _login_page(
            request, status=429, person_id=person_id, next_=target,
            error="Too many failed sign-ins for this account or from this address. "
            f"Try again after {lock.until.strftime('%H:%M')} UTC.",
        )  # fmt: skip
    ok = False
    if person_id and password and len(password) <= MAX_PASSWORD:
        # Always verify (a dummy hash for unknown people): the same time and the same answer.
        ok = await anyio.to_thread.run_sync(_check_password, gateway.db, person_id, password)
    person = gateway.policy.directory.get(person_id)
    if not ok or person is None:

        def failed(tx: WriteTx) -> None:
            started = throttle.record_failure(tx.conn, keys, now)
            data = {"attempted_id": person_id, "ip": ip}
            if started is not None:
                data["locked_until"] = started.until.isoformat()
            tx.audit(AuditDraft(kind=Kind.LOGIN_FAILED, ts=now, channel=CHANNEL, data=data))

        await gateway.writer.run(failed)
        return _login_page(
            request, status=401, error="Unknown person or wrong password.",
            person_id=person_id, next_=target,
        )  # fmt: skip

    old = request.cookies.get(SESSION_COOKIE)
    geo = vote_proof(request).geo

    def start(tx: WriteTx) -> sessions.NewSession:
        if old:  # no session fixation: whatever session came in ends here
            previous = sessions.lookup(tx.conn, old, now)
            if previous is not None:
                sessions.revoke(tx.conn, previous.id, now)
        new = sessions.create(tx.conn, person_id, now)
        throttle.succeeded(tx.conn, person_id)
        mfa.record_geo(tx.conn, new.session.id, person_id, geo, now)  # for require_context
        tx.audit(
            AuditDraft(
                kind=Kind.LOGIN, ts=now, actor=person_id, approver=person_id, channel=CHANNEL,
                data={"session": new.session.id[:16], "ip": ip},
            )
        )  # fmt: skip
        return new

    new = await gateway.writer.run(start)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, new.token, max_age=int(sessions.SESSION_TTL.total_seconds()), path="/",
        httponly=True, samesite="lax", secure=_is_https(request),
    )  # fmt: skip
    response.delete_cookie(
        LOGIN_CSRF_COOKIE, path="/ui/login", httponly=True, samesite="lax",
        secure=_is_https(request),
    )  # fmt: skip
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    checked = await _signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, _ = checked
    gateway = _gateway(request)
    now = gateway.clock()

    def end(tx: WriteTx) -> None:
        if sessions.revoke(tx.conn, viewer.session.id, now):
            tx.audit(
                AuditDraft(
                    kind="logout", ts=now, actor=viewer.id, approver=viewer.id, channel=CHANNEL,
                    data={"session": viewer.session.id[:16]},
                )
            )  # fmt: skip

    await gateway.writer.run(end)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_is_https(request)
    )
    return response


# ---------------------------------------------------------------------------------------------
# Pages


@router.get("")
async def inbox(request: Request) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _sign_in_first(request)
    gateway = _gateway(request)
    directory = gateway.policy.directory
    now = gateway.clock()
    me = viewer.id
    pending = await read(gateway.db, lambda c: _pending_for(c, me))
    mine = await read(gateway.db, lambda c: _requested_by(c, me))
    waiting = [
        _row(s, directory, now)
        for s in pending
        if now < s.approval.expires_at and s.approval.pending_on(me)
    ]
    waiting.sort(key=lambda r: r.created_at, reverse=True)
    return _page(
        request, "inbox.html", viewer, waiting=waiting,
        mine=[_row(s, directory, now) for s in mine], nav="inbox",
    )  # fmt: skip


@router.get("/history")
async def history(request: Request) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _sign_in_first(request)
    gateway = _gateway(request)
    directory = gateway.policy.directory
    now = gateway.clock()
    me = viewer.id
    decided = await read(gateway.db, _decided)
    rows = [
        _row(s, directory, now, _part(s.approval, me)) for s in decided if _involved(s.approval, me)
    ]
    return _page(request, "history.html", viewer, rows=rows[:100], nav="history")


async def _visible(request: Request, viewer: Viewer, approval_id: str) -> StoredApproval | None:
    gateway = _gateway(request)
    if not approval_id.isascii() or len(approval_id) > 64:
        return None
    try:
        stored = await gateway.approvals.get(approval_id)
    except ApprovalNotFound:
        return None
    return stored if may_see(gateway, viewer.principal, stored) else None


def _approval_page(
    request: Request,
    viewer: Viewer,
    stored: StoredApproval,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    approve_comment: str = "",
    deny_comment: str = "",
    extra: Mapping[str, Any] | None = None,
) -> HTMLResponse:
    """`extra`: values from `_page_extra` (the step-up panel, an admin change's diff)."""
    gateway = _gateway(request)
    directory = gateway.policy.directory
    now = gateway.clock()
    a = stored.approval
    me = viewer.id
    extra = dict(extra or {})
    factor, geo = extra.pop("vote_factor", None), extra.pop("vote_geo", None)
    can_approve = can_deny = False
    why_not: str | None = None
    if a.state is ApprovalState.PENDING:
        approve_refusal = _dry_run(a, me, VoteDecision.APPROVE, now, factor, geo)
        deny_refusal = _dry_run(a, me, VoteDecision.DENY, now, factor, geo)
        can_approve = approve_refusal is None
        can_deny = deny_refusal is None
        why_not = approve_refusal
    context_rows = param_rows(stored.context) if stored.context else []
    return _page(
        request, "approval.html", viewer, status=status,
        a=a, stored=stored, row=_row(stored, directory, now),
        params=param_rows(a.params), context_rows=context_rows,
        reasons=_reasons(stored), stages=_stage_views(a, directory),
        summary=workflow.summary(a), requester_id=a.requester,
        can_approve=can_approve, can_deny=can_deny, why_not=why_not,
        error=error, notice=notice, approve_comment=approve_comment,
        deny_comment=deny_comment, deadline=relative(a.expires_at, now), nav="inbox",
        **extra,
    )  # fmt: skip


async def _page_extra(request: Request, viewer: Viewer, stored: StoredApproval) -> dict[str, Any]:
    """What the approval page shows beyond the request itself: the second-factor panel of a
    step-up stage, and the diff of an administrative change."""
    from . import inbox_admin, inbox_mfa  # they build on this module

    return {
        **await inbox_mfa.page_extra(request, viewer, stored),
        **await inbox_admin.page_extra(request, viewer, stored),
    }


@router.get("/approvals/{approval_id}")
async def approval(request: Request, approval_id: str, done: str | None = None) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _sign_in_first(request)
    stored = await _visible(request, viewer, approval_id)
    if stored is None:
        return _not_found(request, viewer)
    extra = await _page_extra(request, viewer, stored)
    return _approval_page(request, viewer, stored, notice=_DONE.get(done or ""), extra=extra)


@router.post("/approvals/{approval_id}/decide")
async def decide(request: Request, approval_id: str) -> Response:
    checked = await _signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    stored = await _visible(request, viewer, approval_id)
    if stored is None:
        return _not_found(request, viewer)
    decision = form.get("decision", "")
    if decision not in _DONE:
        return _error(request, viewer, 400, "Unknown decision", "Choose Approve or Deny.")
    comment = form.get("comment", "")[:MAX_COMMENT]
    gateway = _gateway(request)
    proof = vote_proof(request, totp=form.get("totp"), session_id=viewer.session.id)
    try:
        if decision == "always":  # approve + a standing grant (clearance.grants)
            await grants.approve_always(
                gateway.approvals, gateway.policy, approval_id, person=viewer.id,
                comment=comment, channel=CHANNEL, proof=proof,
            )  # fmt: skip
        else:
            await gateway.approvals.decide(
                approval_id, person=viewer.id, decision=decision, comment=comment,
                channel=CHANNEL, proof=proof,
            )  # fmt: skip
    except ApprovalNotFound:
        return _not_found(request, viewer)
    except ApprovalError as exc:
        fresh = await _visible(request, viewer, approval_id) or stored
        return _approval_page(
            request, viewer, fresh, status=exc.status, error=exc.message,
            approve_comment=comment if decision in ("approve", "always") else "",
            deny_comment=comment if decision == "deny" else "",
            extra=await _page_extra(request, viewer, fresh),
        )  # fmt: skip
    return RedirectResponse(f"/ui/approvals/{quote(approval_id)}?done={decision}", 303)


@router.get("/audit")
async def audit(request: Request) -> Response:
    viewer = await _viewer(request)
    if viewer is None:
        return _sign_in_first(request)
    if not viewer.is_auditor:
        return _error(
            request, viewer, 403, "Admins and auditors only",
            "The audit trail is shown to people with the admin or auditor role.",
        )  # fmt: skip
    gateway = _gateway(request)
    report = await anyio.to_thread.run_sync(verify_store, gateway.db)
    entries = await read(gateway.db, _latest_audit)
    problem = report.first_problem
    return _page(
        request, "audit.html", viewer, report=report, problem=problem, entries=entries,
        nav="audit",
    )  # fmt: skip
