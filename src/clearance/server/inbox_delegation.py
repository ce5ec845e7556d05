"""Delegation in the web inbox: a signed-in approver names a delegate while they are away.

- `GET /ui/delegation` — my delegation (if any), who has named me, and a form to name one;
- `POST /ui/delegation` — name a delegate through a last day away (a date: the delegation
  covers that whole day, to 00:00 the day after in the approver's directory `timezone`, else
  UTC), by the rules of `clearance.delegation`:
  someone else in the directory, a future end, no loop. The form replaces my delegation only
  when the page showed it ("Change delegate"); the replacement is audited;
- `POST /ui/delegation/end` — end my delegation.

Every POST checks the session's CSRF token; every change is audited (`delegation.set`,
`delegation.cleared`) with the web channel.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from ..delegation import (
    DelegationError,
    clock_text,
    day_start,
    delegate_audited,
    get_delegation,
    list_delegations,
    undelegate_audited,
    zone_of,
)
from ..store.reads import read
from . import inbox

__all__ = ["install"]

router = APIRouter(prefix="/ui", include_in_schema=False)

_NOTICES = {"set": "Your delegate is set.", "ended": "Your delegation has ended."}


def install(app: FastAPI) -> None:
    app.include_router(router)


async def _render(
    request: Request,
    viewer: inbox.Viewer,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    gateway = inbox._gateway(request)
    now = gateway.clock()
    mine = await read(gateway.db, lambda c: get_delegation(c, viewer.id))
    current = await read(gateway.db, lambda c: list_delegations(c, now))
    directory = gateway.policy.directory
    people = [
        (p.id, p.name) for p in sorted(directory.people.values(), key=lambda p: p.name)
        if p.id != viewer.id
    ]  # fmt: skip
    zone = zone_of(directory, viewer.id)
    mine = mine if mine is not None and mine.until > now else None
    local_until = clock_text(mine.until, zone, named=False) if mine and zone is not UTC else None
    return inbox._page(
        request, "delegation.html", viewer, status=status, nav="delegation",
        mine=mine, zone=str(zone), local_until=local_until,
        for_me=[d for d in current if d.delegate == viewer.id],
        people=people, name=directory.display_name, error=error, notice=notice,
        form=form or {},
    )  # fmt: skip


@router.get("/delegation")
async def delegation_page(request: Request, done: str | None = None) -> Response:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return inbox._sign_in_first(request)
    return await _render(request, viewer, notice=_NOTICES.get(done or ""))


@router.post("/delegation")
async def set_delegate(request: Request) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, form = checked
    delegate = form.get("delegate", "")[: inbox.MAX_PERSON_ID]
    gateway = inbox._gateway(request)
    now = gateway.clock()
    directory = gateway.policy.directory
    until = _parse_date(form.get("until", ""), zone_of(directory, viewer.id))
    if until is None:
        return await _render(
            request, viewer, status=400, form=form,
            error="Give your last day away, as YYYY-MM-DD.",
        )  # fmt: skip
    try:
        await gateway.writer.run(
            lambda tx: delegate_audited(
                tx,
                directory,
                delegator=viewer.id,
                delegate=delegate,
                until=until,
                now=now,
                by=viewer.id,
                channel=inbox.CHANNEL,
                replace=form.get("replace") == "1",
            )
        )
    except DelegationError as exc:
        return await _render(request, viewer, status=400, form=form, error=_message(exc, form))
    return RedirectResponse("/ui/delegation?done=set", status_code=303)


@router.post("/delegation/end")
async def end_delegation(request: Request) -> Response:
    checked = await inbox._signed_in_form(request)
    if isinstance(checked, Response):
        return checked
    viewer, _ = checked
    gateway = inbox._gateway(request)
    now = gateway.clock()
    await gateway.writer.run(
        lambda tx: undelegate_audited(
            tx, delegator=viewer.id, now=now, by=viewer.id, channel=inbox.CHANNEL
        )
    )
    return RedirectResponse("/ui/delegation?done=ended", status_code=303)


def _parse_date(value: str, zone: tzinfo = UTC) -> datetime | None:
    """`YYYY-MM-DD` (the browser's date field): the last day away, covered whole: the
    delegation ends at 00:00 the day after in `zone` (the approver's), as a UTC time."""
    try:
        day = date.fromisoformat(value.strip()[:10])
        return day_start(day + timedelta(days=1), zone)
    except (ValueError, OverflowError):
        return None


def _message(exc: DelegationError, form: dict[str, str]) -> str:
    """The refusal in the page's words (the core's messages suit every channel, but a date
    here is a last day, not an end time)."""
    if exc.code == "until_in_past":
        day = form.get("until", "").strip()[:10]
        return f"the end of {day} is not in the future: choose today or a later day."
    if exc.code == "already_delegated":
        return (
            f'{exc.message}. To change it, use "Change delegate" below; to stop it, '
            '"End my delegation".'
        )
    return exc.message
