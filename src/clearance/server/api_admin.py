"""`/v1/admin/policy-changes`: propose a policy or directory change, read proposals.

A proposal becomes an approval (`clearance.policy.change` / `clearance.directory.change`)
decided by administrators other than its author, through the ordinary decisions endpoint; the
change is applied when it is approved (see `clearance.admin_changes`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..admin_changes import AdminChanges, ChangeRefused
from .api import AUDIT_ROLES, ERRORS, _roles
from .auth import Principal, authenticate
from .errors import HTTPProblem

__all__ = ["admin_changes_of", "router"]

Caller = Annotated[Principal, Depends(authenticate)]
router = APIRouter(prefix="/v1/admin", responses=ERRORS, tags=["admin"])


class DirectoryOpIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["add_to_group", "remove_from_group", "grant_role", "revoke_role", "add_person"]
    person: str = Field(min_length=1, max_length=128)
    group: str | None = Field(default=None, max_length=128)
    role: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, max_length=255)
    groups: list[str] = Field(default_factory=list, max_length=50)
    roles: list[str] = Field(default_factory=list, max_length=50)


class ChangeIn(BaseModel):
    """Either `policy` (the new text of a policy file) or `directory` (one operation)."""

    model_config = ConfigDict(extra="forbid")

    policy: str | None = Field(default=None, max_length=512 * 1024)
    directory: DirectoryOpIn | None = None
    file: str | None = Field(default=None, max_length=1024)
    summary: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one(self) -> ChangeIn:
        if (self.policy is None) == (self.directory is None):
            raise ValueError("send either policy (the new file text) or directory (an operation)")
        return self


class ChangeOut(BaseModel):
    id: str
    kind: str
    action: str
    state: str
    author: str
    approval_id: str
    file: str
    base_hash: str
    diff: str
    summary: str
    op: dict[str, Any] | None
    created_at: str
    decided_at: str | None
    error: str | None


class ChangeList(BaseModel):
    changes: list[ChangeOut]


def admin_changes_of(request: Request) -> AdminChanges:
    changes: AdminChanges = request.app.state.admin_changes
    return changes


def _refused(exc: ChangeRefused) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if exc.problems:
        body["problems"] = exc.problems
    return JSONResponse(body, status_code=exc.status)


@router.post(
    "/policy-changes", response_model=ChangeOut, status_code=201, summary="Propose a change"
)
async def propose(body: ChangeIn, request: Request, caller: Caller) -> Any:
    """Validate the would-be policy (422 with the loader's file:line problems when it does
    not load), then open an approval for the other administrators. Admins only."""
    if caller.kind != "person":
        raise HTTPProblem(403, "forbidden", "an agent key cannot change the gateway")
    changes = admin_changes_of(request)
    try:
        if body.directory is None:
            record = await changes.propose_policy(
                caller.subject, body.policy or "", file=body.file, summary=body.summary
            )
        else:
            op = body.directory.model_dump(exclude_none=True, exclude_defaults=True)
            op["op"] = body.directory.op
            record = await changes.propose_directory(caller.subject, op, file=body.file)
    except ChangeRefused as exc:
        return _refused(exc)
    return JSONResponse(record.to_json(), status_code=201)


@router.get("/policy-changes", response_model=ChangeList, summary="List proposed changes")
async def list_changes(request: Request, caller: Caller) -> Any:
    gateway = request.app.state.gateway
    if not _roles(gateway, caller) & AUDIT_ROLES:
        raise HTTPProblem(403, "forbidden", "reading changes needs the admin or auditor role")
    found = await admin_changes_of(request).recent()
    return {"changes": [c.to_json() for c in found]}


@router.get("/policy-changes/{change_id}", response_model=ChangeOut, summary="Read a change")
async def get_change(change_id: str, request: Request, caller: Caller) -> Any:
    gateway = request.app.state.gateway
    if not _roles(gateway, caller) & AUDIT_ROLES:
        raise HTTPProblem(403, "forbidden", "reading changes needs the admin or auditor role")
    found = await admin_changes_of(request).get(change_id)
    if found is None:
        raise HTTPProblem(404, "not_found", f"no change with id {change_id!r}")
    return found.to_json()
