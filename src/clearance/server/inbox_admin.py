"""Administrative changes in the web inbox: propose, and see the diff on the approval page.

`GET /ui/admin` (admins only) lists recent changes and offers two forms: the new text of a
policy file, or one directory operation (add to a group, grant a role, …). Each becomes an
approval for the *other* administrators (see `clearance.admin_changes`); the approval page
shows the change's unified diff and what became of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from ..admin_changes import ACTIONS, DIRECTORY_OPS, AdminChanges, ChangeRefused
from ..approvals.records import StoredApproval
from ..identity import sessions
from . import inbox

__all__ = ["diff_lines", "install", "page_extra"]

router = APIRouter(prefix="/ui", include_in_schema=False)


def install(app: FastAPI) -> None:
    app.include_router(router)


def _changes(request: Request) -> AdminChanges | None:
    found: AdminChanges | None = getattr(request.app.state, "admin_changes", None)
    return found


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """A unified diff as (css class, line) pairs: add, del, hunk or ctx."""
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        else:
            cls = "ctx"
        out.append((cls, line))
    return out


async def page_extra(
    request: Request, viewer: inbox.Viewer, stored: StoredApproval
) -> dict[str, Any]:
    """The change behind a `clearance.policy.change` / `.directory.change` approval."""
    changes = _changes(request)
    if changes is None or stored.approval.action not in ACTIONS:
        return {}
    change = await changes.for_approval(stored.approval.id)
    if change is None:
        return {}
    return {"admin_change": change, "admin_diff": diff_lines(change.diff)}


def _is_admin(viewer: inbox.Viewer) -> bool:
    return "admin" in viewer.person.roles


async def _admin_page(
    request: Request, viewer: inbox.Viewer, *, status: int = 200, **context: Any
) -> Response:
    changes = _changes(request)
    gateway = inbox._gateway(request)
    recent = await changes.recent(50) if changes else []
    current = ""
    if gateway.config_paths and "policy_text" not in context:
        path = Path(gateway.config_paths[0])
        current = await anyio.to_thread.run_sync(lambda: path.read_text(encoding="utf-8"))
    context.setdefault("policy_text", current)
    return inbox._page(
        request, "admin.html", viewer, status=status, changes=recent, ops=DIRECTORY_OPS,
        files=[Path(p).name for p in gateway.config_paths], nav="admin", **context,
    )  # fmt: skip


async def _admin_viewer(request: Request) -> inbox.Viewer | Response:
    viewer = await inbox._viewer(request)
    if viewer is None:
        return inbox._sign_in_first(request)
    if not _is_admin(viewer):
        return inbox._error(
            request, viewer, 403, "Admins only",
            "Changing the policy or the directory needs the admin role.",
        )  # fmt: skip
    return viewer


@router.get("/admin")
async def admin(request: Request) -> Response:
    viewer = await _admin_viewer(request)
    if not isinstance(viewer, inbox.Viewer):
        return viewer
    return await _admin_page(request, viewer)


@router.post("/admin/{form_kind}")
async def propose(request: Request, form_kind: str) -> Response:
    viewer = await _admin_viewer(request)
    if not isinstance(viewer, inbox.Viewer):
        return viewer
    form = await inbox._form(request)
    if not sessions.csrf_matches(viewer.session, form.get("csrf_token")):
        return inbox._csrf_refused(request, viewer)
    changes = _changes(request)
    if changes is None or form_kind not in ("policy", "directory"):
        return inbox._error(request, viewer, 404, "Not found", "There is no such form.")
    try:
        if form_kind == "policy":
            record = await changes.propose_policy(
                viewer.id, form.get("policy", "").replace("\r\n", "\n"),
                file=form.get("file") or None, summary=form.get("summary", "")[:500],
            )  # fmt: skip
        else:
            op: dict[str, Any] = {"op": form.get("op", ""), "person": form.get("person", "")}
            name = form.get("name_value", "").strip()
            if op["op"] in ("add_to_group", "remove_from_group"):
                op["group"] = name
            elif op["op"] in ("grant_role", "revoke_role"):
                op["role"] = name
            elif name:
                op["name"] = name
            record = await changes.propose_directory(viewer.id, op)
    except ChangeRefused as exc:
        return await _admin_page(
            request, viewer, status=exc.status, error=exc.message, problems=exc.problems,
            **({"policy_text": form.get("policy", "")} if form_kind == "policy" else {}),
        )  # fmt: skip
    return RedirectResponse(f"/ui/approvals/{record.approval_id}", status_code=303)
