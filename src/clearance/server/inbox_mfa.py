"""Second factors in the web inbox: enrolment, step-up verification, and the approval page's
step-up panel.

Pages (all behind sign-in; every POST checks the session's CSRF token):

- `GET /ui/security` — the person's factors; set up an authenticator app (`POST
  /ui/security/totp` shows an SVG QR code and the secret once, `POST
  /ui/security/totp/confirm` takes the first code) or register a security key (WebAuthn).
- `GET /ui/verify?next=…` — prove a factor now: an authenticator code (`POST /ui/verify`) or a
  security key; the session is then *fresh* for `server.mfa.fresh_for` (default 300 s) and
  votes on `mfa:` stages count without typing a code again.
- `POST /ui/webauthn/{register|authenticate}/options` and `POST /ui/webauthn/{register|
  authenticate}` — the two WebAuthn ceremonies as JSON, for `static/webauthn.js`; the CSRF token
  travels in the `X-CSRF-Token` header. Only these pages allow a script (`script-src 'self'`).

Enrolling does not make the session fresh: the person verifies the new factor like any other
time. Someone who already has a factor adds another only after verifying one recently.
Every enrolment, verification and failure is audited (`mfa.enrolled`, `mfa.verified`,
`mfa.failed`); never a secret or a code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..approvals.model import ApprovalState
from ..approvals.records import StoredApproval
from ..audit.entry import AuditDraft
from ..audit.writer import WriteTx
from ..identity import mfa, sessions
from ..identity import webauthn as wa
from ..store.reads import read
from . import inbox
from .api import vote_proof

__all__ = ["StepUpView", "install", "page_extra"]

router = APIRouter(prefix="/ui", include_in_schema=False)
MAX_JSON_BYTES = 64_000

_SCRIPT_HEADERS = {
    **inbox._SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def install(app: FastAPI) -> None:
    app.include_router(router)


def _settings(request: Request) -> mfa.MfaSettings:
    return inbox._gateway(request).approvals.mfa_settings()


def _with_script(response: HTMLResponse) -> HTMLResponse:
    response.headers.update(_SCRIPT_HEADERS)
    return response


# ---------------------------------------------------------------------------------------------
# The approval page's panel


@dataclass(frozen=True, slots=True)
class StepUpView:
    """What the approval page shows about the current stage's `mfa:` / `require_context:`."""

    mfa: str | None
    context: list[tuple[str, list[str]]]
    fresh: str | None  # the method this session proved recently, if any
    has_totp: bool
    has_webauthn: bool
    code_field: bool  # ask for an authenticator code beside Approve / Deny
    verify_url: str
    geo: str | None
    vote_factor: str | None  # what a vote from this page would carry (for the dry run)


async def page_extra(
    request: Request, viewer: inbox.Viewer, stored: StoredApproval
) -> dict[str, Any]:
    """Template values (and the dry run's factor and location) for the approval page."""
    a = stored.approval
    stage = a.current_stage
    if a.state is not ApprovalState.PENDING or stage is None:
        return {}
    if stage.mfa is None and not stage.require_context:
        return {}
    gateway = inbox._gateway(request)
    now = gateway.clock()
    try:
        settings = _settings(request)
    except mfa.MfaError:
        return {}
    session_id = viewer.session.id

    def fetch(conn: Any) -> tuple[mfa.SessionFactor | None, bool, bool]:
        return (
            mfa.session_state(conn, session_id),
            mfa.has_factor(conn, viewer.id, "totp"),
            mfa.has_factor(conn, viewer.id, "webauthn"),
        )

    state, has_totp, has_webauthn = await read(gateway.db, fetch)
    fresh = state.fresh(now, settings) if state else None
    satisfied = mfa.method_satisfies(stage.mfa, fresh)
    code_field = (
        stage.mfa is not None
        and not satisfied
        and has_totp
        and mfa.method_satisfies(stage.mfa, "totp")
    )
    vote_factor = fresh if satisfied else ("totp" if code_field else None)
    proof = vote_proof(request, session_id=session_id)
    geo = proof.geo
    if state is not None and (state.geo is None or (geo is not None and state.geo != geo)):
        geo = None  # as `mfa.establish` decides: unknown at sign-in, or moved since
    view = StepUpView(
        mfa=stage.mfa,
        context=[(k, list(v)) for k, v in stage.require_context],
        fresh=fresh if satisfied else None,
        has_totp=has_totp,
        has_webauthn=has_webauthn,
        code_field=code_field,
        verify_url=f"/ui/verify?next={quote(f'/ui/approvals/{a.id}', safe='/')}",
        geo=geo,
        vote_factor=vote_factor,
    )
    return {"step_up": view, "vote_factor": vote_factor, "vote_geo": geo}


# ---------------------------------------------------------------------------------------------
# Security page and TOTP enrolment


async def _security_page(
    request: Request, viewer: inbox.Viewer, *, status: int = 200, **context: Any
) -> HTMLResponse:
    gateway = inbox._gateway(request)
    found = await read(gateway.db, lambda c: mfa.factors(c, viewer.id))
    response = inbox._page(
        request, "security.html", viewer, status=status, factors=found, nav="security",
        **context,
    )  # fmt: skip
    return _with_script(response)


@router.get("/security")
async def security(request: Request, done: str | None = None) -> Response:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return inbox._sign_in_first(request)
    notice = "Your authenticator app is set up." if done == "totp" else None
    return await _security_page(request, viewer, request_done=notice)


@router.post("/security/totp")
async def totp_start(request: Request) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, _ = checked
    gateway = inbox._gateway(request)
    settings = _settings(request)
    now = gateway.clock()

    def start(tx: WriteTx) -> mfa.TotpEnrolment | mfa.MfaError:
        try:
            _require_fresh_if_enrolled(tx.conn, viewer, now, settings)
            return mfa.start_totp(tx.conn, viewer.id, now, settings)
        except mfa.MfaError as exc:
            return exc

    started = await gateway.writer.run(start)
    if isinstance(started, mfa.MfaError):
        return await _security_page(request, viewer, status=409, error=started.message)
    return inbox._page(
        request, "totp_enrol.html", viewer, qr_svg=mfa.svg_qr(started.uri),
        secret=started.secret, nav="security",
    )  # fmt: skip


@router.post("/security/totp/confirm")
async def totp_confirm(request: Request) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    gateway = inbox._gateway(request)
    settings = _settings(request)
    now = gateway.clock()
    code = form.get("code", "")[:16]

    def confirm(tx: WriteTx) -> mfa.MfaError | None:
        try:
            mfa.confirm_totp(tx.conn, viewer.id, code, now, settings)
        except mfa.MfaError as exc:
            tx.audit(_draft("mfa.failed", viewer, now, {"method": "totp", "code": exc.code}))
            return exc
        tx.audit(_draft("mfa.enrolled", viewer, now, {"method": "totp"}))
        return None

    failed = await gateway.writer.run(confirm)
    if failed is not None:
        return await _security_page(request, viewer, status=400, error=failed.message)
    return RedirectResponse("/ui/security?done=totp", status_code=303)


def _require_fresh_if_enrolled(
    conn: Any, viewer: inbox.Viewer, now: datetime, settings: mfa.MfaSettings
) -> None:
    """A person who already has a factor adds another only from a session that proved one
    recently: a stolen password alone cannot enrol the thief's own second factor. (The first
    factor is trusted on first use; an operator can enrol it with the CLI instead.)"""
    if not mfa.has_factor(conn, viewer.id):
        return
    state = mfa.session_state(conn, viewer.session.id)
    if state is None or state.fresh(now, settings) is None:
        raise mfa.MfaError(
            "mfa_required",
            "you already have a second factor: verify it first (Verify it is you), then add "
            "another",
        )


def _draft(kind: str, viewer: inbox.Viewer, now: datetime, data: dict[str, Any]) -> AuditDraft:
    return AuditDraft(
        kind=kind, ts=now, actor=viewer.id, approver=viewer.id, channel=inbox.CHANNEL, data=data
    )


# ---------------------------------------------------------------------------------------------
# Step-up verification


async def _verify_page(
    request: Request, viewer: inbox.Viewer, next_: str, *, status: int = 200,
    error: str | None = None,
) -> HTMLResponse:  # fmt: skip
    gateway = inbox._gateway(request)

    def fetch(conn: Any) -> tuple[bool, bool]:
        return mfa.has_factor(conn, viewer.id, "totp"), mfa.has_factor(conn, viewer.id, "webauthn")

    has_totp, has_webauthn = await read(gateway.db, fetch)
    response = inbox._page(
        request, "verify.html", viewer, status=status, next=next_, has_totp=has_totp,
        has_webauthn=has_webauthn, error=error, nav="security",
    )  # fmt: skip
    return _with_script(response)


@router.get("/verify")
async def verify_form(request: Request, next: str | None = None) -> Response:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return inbox._sign_in_first(request)
    return await _verify_page(request, viewer, inbox._safe_next(next))


@router.post("/verify")
async def verify(request: Request) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    target = inbox._safe_next(form.get("next"))
    gateway = inbox._gateway(request)
    settings = _settings(request)
    now = gateway.clock()
    code = form.get("code", "")[:16]
    session_id = viewer.session.id

    def check(tx: WriteTx) -> mfa.MfaError | None:
        try:
            mfa.verify_totp(tx.conn, viewer.id, code, now, settings)
        except mfa.MfaError as exc:
            tx.audit(_draft("mfa.failed", viewer, now, {"method": "totp", "code": exc.code}))
            return exc
        mfa.mark_session(tx.conn, session_id, viewer.id, "totp", now)
        tx.audit(_draft("mfa.verified", viewer, now, {"method": "totp"}))
        return None

    failed = await gateway.writer.run(check)
    if failed is not None:
        return await _verify_page(request, viewer, target, status=400, error=failed.message)
    return RedirectResponse(target, status_code=303)


# ---------------------------------------------------------------------------------------------
# WebAuthn ceremonies (JSON, for static/webauthn.js)


def _json_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": code, "message": message}, status_code=status)


async def _json_viewer(request: Request) -> inbox.Viewer | JSONResponse:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return _json_error(401, "unauthenticated", "Your session has ended: sign in again.")
    if not sessions.csrf_matches(viewer.session, request.headers.get("x-csrf-token")):
        return _json_error(403, "csrf", "The security token is missing or does not match.")
    return viewer


@router.post("/webauthn/{ceremony}/options")
async def webauthn_options(request: Request, ceremony: str) -> Response:
    viewer = await _json_viewer(request)
    if isinstance(viewer, JSONResponse):
        return viewer
    if ceremony not in ("register", "authenticate"):
        return _json_error(404, "not_found", "Unknown ceremony.")
    gateway = inbox._gateway(request)
    settings = _settings(request)
    now = gateway.clock()
    session_id = viewer.session.id

    def options(tx: WriteTx) -> str | mfa.MfaError:
        try:
            if ceremony == "register":
                _require_fresh_if_enrolled(tx.conn, viewer, now, settings)
                return wa.registration_options(
                    tx.conn, viewer.id, viewer.person.name, session_id, now, settings
                )
            return wa.authentication_options(tx.conn, viewer.id, session_id, now, settings)
        except mfa.MfaError as exc:
            return exc

    out = await gateway.writer.run(options)
    if isinstance(out, mfa.MfaError):
        return _json_error(409, out.code, out.message)
    return Response(out, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post("/webauthn/{ceremony}")
async def webauthn_finish(request: Request, ceremony: str) -> Response:
    viewer = await _json_viewer(request)
    if isinstance(viewer, JSONResponse):
        return viewer
    if ceremony not in ("register", "authenticate"):
        return _json_error(404, "not_found", "Unknown ceremony.")
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        return _json_error(413, "too_large", "The browser's answer is too large.")
    gateway = inbox._gateway(request)
    settings = _settings(request)
    now = gateway.clock()
    session_id = viewer.session.id
    text = body.decode("utf-8", errors="replace")

    def finish(tx: WriteTx) -> mfa.MfaError | None:
        # A failure still commits: the challenge stays used up, and the failure is audited.
        try:
            if ceremony == "register":
                wa.finish_registration(tx.conn, viewer.id, session_id, text, now, settings)
                tx.audit(_draft("mfa.enrolled", viewer, now, {"method": "webauthn"}))
            else:
                wa.finish_authentication(tx.conn, viewer.id, session_id, text, now, settings)
                tx.audit(_draft("mfa.verified", viewer, now, {"method": "webauthn"}))
        except mfa.MfaError as exc:
            tx.audit(_draft("mfa.failed", viewer, now, {"method": "webauthn", "code": exc.code}))
            return exc
        return None

    failed = await gateway.writer.run(finish)
    if failed is not None:
        return _json_error(400, failed.code, failed.message)
    message = "Security key registered." if ceremony == "register" else "Security key verified."
    return JSONResponse({"ok": True, "message": message}, headers={"Cache-Control": "no-store"})
