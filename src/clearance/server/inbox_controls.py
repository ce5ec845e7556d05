"""Emergency overrides and standing grants in the web inbox.

- `GET /ui/overrides` — the break-glass form (for people with the emergency role), and the
  overrides: all of them for reviewers, admins and auditors (with justify / flag forms on the
  open ones the viewer did not make), otherwise the viewer's own;
- `POST /ui/overrides` — override a pending request, or one not yet requested;
- `POST /ui/overrides/{id}/review` — justified or flagged;
- `GET /ui/grants` — the grants the viewer made (all of them for admins and auditors);
- `POST /ui/grants/{id}/revoke` — by the grantor or an admin.

"Approve always" itself is on the request's page (`approval.html`, the inbox's decide
handler). Every POST checks the session's CSRF token; the rules and the auditing are those of
`clearance.override` and `clearance.grants`.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from .. import grants
from .. import override as ovr
from ..policy import Request as PolicyRequest
from . import inbox
from .schemas import finite_json

__all__ = ["install"]

router = APIRouter(prefix="/ui", include_in_schema=False)
OVERSIGHT_ROLES = {"admin", "auditor"}
_NOTICES = {
    "override": "Overridden: the request is released, security is alerted, a review is open.",
    "reviewed": "Review recorded.",
    "revoked": "The grant is revoked.",
}


def install(app: FastAPI) -> None:
    app.include_router(router)


async def _overrides_page(
    request: Request,
    viewer: inbox.Viewer,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    gateway = inbox._gateway(request)
    settings = ovr.settings_of(gateway)
    roles = set(viewer.person.roles)
    reviewers = settings.review_by if settings else ()
    oversees = bool(roles & OVERSIGHT_ROLES) or viewer.id in reviewers
    found = await ovr.list_overrides(gateway.db)
    if not oversees:
        found = [o for o in found if o.person == viewer.id]
    found.sort(key=lambda o: (o.review_state != "open", -o.created_at.timestamp()))
    window = ""
    if settings is not None:
        window = f"{settings.rate_window_s // 3600} hours"
    return inbox._page(
        request, "overrides.html", viewer, status=status, nav="overrides",
        overrides=found, oversees=oversees, settings=settings, window=window,
        may_override=settings is not None and settings.role in roles,
        may_review=viewer.id in reviewers, name=gateway.policy.directory.display_name,
        error=error, notice=notice, form=form or {},
    )  # fmt: skip


@router.get("/overrides")
async def overrides_page(request: Request, done: str | None = None) -> Response:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return inbox._sign_in_first(request)
    return await _overrides_page(request, viewer, notice=_NOTICES.get(done or ""))


@router.post("/overrides")
async def create_override(request: Request) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    gateway = inbox._gateway(request)
    approval_id = form.get("approval_id", "").strip()[:64] or None
    policy_request = None
    if approval_id is None and form.get("action", "").strip():
        try:
            params = finite_json(json.loads(form.get("params") or "{}"))
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return await _overrides_page(
                request, viewer, status=400, form=form,
                error="Parameters must be a JSON object with finite numbers, like "
                "{\"amount\": 9000}.",
            )  # fmt: skip
        actor = {
            key: value
            for key, value in (
                ("user", form.get("actor_user", "").strip()),
                ("agent", form.get("actor_agent", "").strip()),
            )
            if value
        }
        policy_request = PolicyRequest(form["action"].strip()[:255], params, actor)
    try:
        await ovr.override(
            gateway,
            person=viewer.id,
            reason=form.get("reason", "")[: inbox.MAX_COMMENT],
            approval_id=approval_id,
            request=policy_request,
            channel=inbox.CHANNEL,
        )
    except ovr.OverrideRefused as exc:
        return await _overrides_page(
            request, viewer, status=exc.status, form=form, error=exc.message
        )
    return RedirectResponse("/ui/overrides?done=override", status_code=303)


@router.post("/overrides/{override_id}/review")
async def review_override(request: Request, override_id: str) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    gateway = inbox._gateway(request)
    try:
        await ovr.review(
            gateway,
            override_id[:64],
            person=viewer.id,
            verdict=form.get("verdict", ""),
            comment=form.get("comment", "")[: inbox.MAX_COMMENT],
            channel=inbox.CHANNEL,
        )
    except ovr.OverrideRefused as exc:
        return await _overrides_page(request, viewer, status=exc.status, error=exc.message)
    return RedirectResponse("/ui/overrides?done=reviewed", status_code=303)


async def _grants_page(
    request: Request,
    viewer: inbox.Viewer,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    gateway = inbox._gateway(request)
    all_grants = bool(set(viewer.person.roles) & OVERSIGHT_ROLES)
    found = await grants.list_grants(
        gateway.db, now=gateway.clock(), grantor=None if all_grants else viewer.id
    )
    return inbox._page(
        request, "grants.html", viewer, status=status, nav="grants", grants=found,
        all_grants=all_grants, is_admin="admin" in viewer.person.roles,
        name=gateway.policy.directory.display_name, error=error, notice=notice,
    )  # fmt: skip


@router.get("/grants")
async def grants_page(request: Request, done: str | None = None) -> Response:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return inbox._sign_in_first(request)
    return await _grants_page(request, viewer, notice=_NOTICES.get(done or ""))


@router.post("/grants/{grant_id}/revoke")
async def revoke_grant(request: Request, grant_id: str) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    gateway = inbox._gateway(request)
    try:
        grant = await grants.get(gateway.db, grant_id[:64])
        if grant.grantor != viewer.id and "admin" not in viewer.person.roles:
            raise grants.GrantError(
                "forbidden", "only the grant's grantor or an admin can revoke it", 403
            )
        await grants.revoke(
            gateway.db,
            gateway.writer,
            grant.id,
            by=viewer.id,
            reason=form.get("reason", "").strip()[:1000] or None,
            now=gateway.clock(),
            channel=inbox.CHANNEL,
        )
    except grants.GrantError as exc:
        return await _grants_page(request, viewer, status=exc.status, error=exc.message)
    return RedirectResponse("/ui/grants?done=revoked", status_code=303)
