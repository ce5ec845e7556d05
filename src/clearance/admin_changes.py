"""Four eyes on the gateway itself: a change to the policy or the directory is an approval.

An admin (directory role `admin`) proposes a change — the new text of a policy file, or a
structured directory operation (`add_to_group`, `remove_from_group`, `grant_role`,
`revoke_role`, `add_person`), which is turned into the new file text. Then:

1. The would-be policy is loaded with the normal loader, together with the other policy files;
   a policy that does not load is refused with the loader's file:line problems (audited as
   `admin.change_rejected`) before anyone is asked.
2. An approval is created with action `clearance.policy.change` (or
   `clearance.directory.change`), its parameters naming the change, requested by the author
   and decided by the approvers of `server.admin_changes` (default: everyone with the `admin`
   role) *other than the author*; `required` (default 1) of them must approve. With too few of
   them the proposal is refused (`no_other_admin`): one administrator can never widen
   permissions alone. The workflow refuses the author's own vote (`self_approval`).
3. When the approval is approved, the change is applied: only if the file still has the hash
   it had when proposed (else the change is `stale`, audited), by writing a temporary file and
   renaming it over the old one, then reloading the gateway (a reload that fails puts the old
   text back: `failed`). A denied or expired approval leaves the file alone (`rejected`,
   `expired`). Each outcome is audited.

Standing grants ("approve always", `clearance.grants`) that would last longer than
`grants_longer_than` are held the same way: the vote approves the request as usual, but the
grant is a `clearance.grant.create` approval for the admins other than the grantor, created
only when approved (and only if the policy still offers it: else `stale`). With no other admin
the "always" answer is refused whole (`grant_needs_admin`, audited); approve once instead.

Settings (all optional):

```yaml
server:
  admin_changes:
    approvers: [role:admin]   # people, group:NAME or role:NAME
    required: 1               # how many of them, besides the author
    timeout: 24h
    grants_longer_than: 7d    # standing grants beyond this need another admin (default: off)
    mfa: totp                 # the deciding admins vote with a second factor (default: none)
```

The file is written by the gateway process that sees the approval decided (and, after a
restart, by `settle()` at start-up); with several instances, keep the policy file on storage
they share, or apply through one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
import yaml
from sqlalchemy import Connection, and_, insert, select, update

from .approvals import records, workflow
from .approvals.model import ApprovalState
from .approvals.records import StoredApproval
from .approvals.service import ApprovalError
from .audit.entry import AuditDraft, Kind
from .audit.writer import WriteTx
from .canonical import binding_hash, params_hash
from .directory import Directory
from .gateway import CheckResult, Gateway, new_approval_id
from .policy.load import PolicyError, load_policy_texts
from .policy.model import Decision, ResolvedPlan, ResolvedRequirement, ResolvedStage
from .policy.schema import MFA_METHODS, parse_duration
from .store.mfa_admin_tables import admin_changes
from .store.reads import read

__all__ = [
    "ACTIONS",
    "DIRECTORY_CHANGE",
    "GRANT_CREATE",
    "POLICY_CHANGE",
    "AdminChanges",
    "AdminSettings",
    "ChangeRecord",
    "ChangeRefused",
    "edit_directory",
]

log = structlog.get_logger("clearance.admin")

POLICY_CHANGE = "clearance.policy.change"
DIRECTORY_CHANGE = "clearance.directory.change"
GRANT_CREATE = "clearance.grant.create"
ACTIONS = frozenset({POLICY_CHANGE, DIRECTORY_CHANGE, GRANT_CREATE})
ADMIN_ROLE = "admin"
ROLE_PREFIX = "role:"
DIRECTORY_OPS = ("add_to_group", "remove_from_group", "grant_role", "revoke_role", "add_person")
MAX_POLICY_BYTES = 512 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


class ChangeRefused(Exception):
    """A proposal that is not accepted; `problems` lists a policy's load errors."""

    def __init__(self, status: int, code: str, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class AdminSettings:
    approvers: tuple[str, ...] = (ROLE_PREFIX + ADMIN_ROLE,)
    required: int = 1
    timeout_s: int = 86400
    grants_longer_than_s: int | None = None  # standing grants beyond this need another admin
    mfa: str | None = None  # a second factor for the deciding admins' votes (totp|webauthn|any)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AdminSettings:
        conf = (settings.get("server") or {}).get("admin_changes") or {}
        if not isinstance(conf, Mapping):
            raise ChangeRefused(500, "misconfigured", "server.admin_changes must be a mapping")
        try:
            approvers = conf.get("approvers") or [ROLE_PREFIX + ADMIN_ROLE]
            required = int(conf.get("required", 1))
            timeout = parse_duration(conf.get("timeout", "24h"))
            longest = conf.get("grants_longer_than")
            grants_limit = parse_duration(longest) if longest is not None else None
        except (TypeError, ValueError) as exc:
            raise ChangeRefused(500, "misconfigured", f"server.admin_changes: {exc}") from None
        mfa = conf.get("mfa")
        if mfa is not None and mfa not in MFA_METHODS:
            raise ChangeRefused(
                500, "misconfigured", f"server.admin_changes.mfa: one of {', '.join(MFA_METHODS)}"
            )
        if required < 1 or not isinstance(approvers, list):
            raise ChangeRefused(
                500, "misconfigured", "server.admin_changes: required ≥ 1, approvers a list"
            )
        return cls(tuple(str(a) for a in approvers), required, timeout, grants_limit, mfa)

    def resolve(self, directory: Directory) -> tuple[str, ...]:
        """The people these approver references name, in order, once each."""
        out: dict[str, None] = {}
        for ref in self.approvers:
            if ref.startswith(ROLE_PREFIX):
                role = ref[len(ROLE_PREFIX) :]
                out.update((p.id, None) for p in directory.people.values() if role in p.roles)
            else:
                out.update((p, None) for p in directory.resolve([ref]))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A proposed change and what became of it."""

    id: str
    kind: str  # policy | directory
    state: str  # pending | applied | rejected | expired | stale | failed
    author: str
    approval_id: str
    file: str
    base_hash: str
    new_text: str
    diff: str
    summary: str
    op: dict[str, Any] | None
    created_at: datetime
    decided_at: datetime | None
    error: str | None

    @property
    def action(self) -> str:
        return {"directory": DIRECTORY_CHANGE, "grant": GRANT_CREATE}.get(self.kind, POLICY_CHANGE)

    def to_json(self, *, with_text: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "action": self.action, "state": self.state,
            "author": self.author, "approval_id": self.approval_id, "file": self.file,
            "base_hash": self.base_hash, "diff": self.diff, "summary": self.summary,
            "op": self.op, "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "error": self.error,
        }  # fmt: skip
        if with_text:
            out["new_text"] = self.new_text
        return out


def _record(row: Any) -> ChangeRecord:
    return ChangeRecord(
        id=row["id"], kind=row["kind"], state=row["state"], author=row["author"],
        approval_id=row["approval_id"], file=row["file"], base_hash=row["base_hash"],
        new_text=row["new_text"], diff=row["diff"], summary=row["summary"], op=row["op_json"],
        created_at=row["created_at"], decided_at=row["decided_at"], error=row["error"],
    )  # fmt: skip


def load_change(conn: Connection, change_id: str) -> ChangeRecord | None:
    row = conn.execute(select(admin_changes).where(admin_changes.c.id == change_id)).mappings()
    found = row.first()
    return _record(found) if found else None


def change_for_approval(conn: Connection, approval_id: str) -> ChangeRecord | None:
    rows = conn.execute(
        select(admin_changes).where(admin_changes.c.approval_id == approval_id)
    ).mappings()
    found = rows.first()
    return _record(found) if found else None


def list_changes(conn: Connection, limit: int = 100) -> list[ChangeRecord]:
    rows = conn.execute(
        select(admin_changes).order_by(admin_changes.c.created_at.desc()).limit(limit)
    ).mappings()
    return [_record(r) for r in rows]


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def text_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def unified_diff(old: str, new: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{name} (in force)",
            tofile=f"{name} (proposed)",
        )
    )


# ---------------------------------------------------------------------------------------------
# Directory operations as text edits (comments elsewhere in the file are kept)


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            found: yaml.Node = v
            return found
    return None


def _flow(value: Mapping[str, Any]) -> str:
    dumped = yaml.safe_dump(dict(value), default_flow_style=True, sort_keys=False, width=1 << 20)
    return str(dumped).strip().removesuffix("...").strip()


def _span(text: str, node: yaml.Node) -> tuple[int, int]:
    start, end = node.start_mark.index, node.end_mark.index
    return start, start + len(text[start:end].rstrip())


def _names(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ChangeRefused(400, "invalid_op", f"{what} must be a name like finance-directors")
    return value


def edit_directory(text: str, op: Mapping[str, Any]) -> tuple[str, str]:
    """The file text after a directory operation, and a one-line summary of it.

    Operations: `{op: add_to_group|remove_from_group, person, group}`, `{op: grant_role|
    revoke_role, person, role}`, `{op: add_person, person, name?, email?, groups?, roles?}`.
    The edited person entry is rewritten in flow style; the rest of the file is unchanged."""
    kind = op.get("op")
    if kind not in DIRECTORY_OPS:
        raise ChangeRefused(400, "invalid_op", f"op must be one of {', '.join(DIRECTORY_OPS)}")
    person_id = _names(op.get("person"), "person")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ChangeRefused(
            409, "unreadable_policy", f"the policy file does not parse: {exc}"
        ) from None
    people_node = _child(_child(root, "directory"), "people")
    if not isinstance(people_node, yaml.SequenceNode) or people_node.flow_style:
        raise ChangeRefused(
            409, "unsupported_layout",
            "this file has no block list directory.people: propose the policy text instead",
        )  # fmt: skip
    people = data["directory"]["people"]
    index = next(
        (i for i, p in enumerate(people) if isinstance(p, dict) and p.get("id") == person_id),
        None,
    )
    if kind == "add_person":
        if index is not None:
            raise ChangeRefused(409, "person_exists", f"{person_id} is already in the directory")
        entry: dict[str, Any] = {"id": person_id}
        for key in ("name", "email"):
            if op.get(key):
                entry[key] = str(op[key])
        for key in ("groups", "roles"):
            if op.get(key):
                entry[key] = [_names(v, key) for v in op[key]]
        if not people_node.value:
            raise ChangeRefused(409, "unsupported_layout", "directory.people is empty")
        last = people_node.value[-1]
        _, end = _span(text, last)
        line = text.splitlines()[last.start_mark.line]
        indent = line[: len(line) - len(line.lstrip())]
        addition = f"\n{indent}- {_flow(entry)}"
        return text[:end] + addition + text[end:], f"add {person_id} to the directory"
    if index is None:
        raise ChangeRefused(404, "unknown_person", f"{person_id} is not in the directory")
    person = dict(people[index])
    field, verb = {
        "add_to_group": ("groups", "add"),
        "remove_from_group": ("groups", "remove"),
        "grant_role": ("roles", "add"),
        "revoke_role": ("roles", "remove"),
    }[kind]
    name = _names(op.get("group" if field == "groups" else "role"), field[:-1])
    current = [str(v) for v in person.get(field) or []]
    if verb == "add":
        if name in current:
            raise ChangeRefused(409, "no_change", f"{person_id} already has {field[:-1]} {name}")
        current.append(name)
        summary = (
            f"add {person_id} to group {name}" if field == "groups"
            else f"grant role {name} to {person_id}"
        )  # fmt: skip
    else:
        if name not in current:
            raise ChangeRefused(409, "no_change", f"{person_id} has no {field[:-1]} {name}")
        current.remove(name)
        summary = (
            f"remove {person_id} from group {name}" if field == "groups"
            else f"revoke role {name} from {person_id}"
        )  # fmt: skip
    person[field] = current
    if not current:
        del person[field]
    start, end = _span(text, people_node.value[index])
    return text[:start] + _flow(person) + text[end:], summary


# ---------------------------------------------------------------------------------------------
# Proposing and applying


class AdminChanges:
    """Proposals and their application, for one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        gateway.approvals.on_change.append(self._on_change)
        gateway.approvals.grant_holds.append(self._hold_grant)

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, change_id: str) -> ChangeRecord | None:
        return await read(self.gateway.db, lambda c: load_change(c, change_id))

    async def for_approval(self, approval_id: str) -> ChangeRecord | None:
        return await read(self.gateway.db, lambda c: change_for_approval(c, approval_id))

    async def recent(self, limit: int = 100) -> list[ChangeRecord]:
        return await read(self.gateway.db, lambda c: list_changes(c, limit))

    def is_admin(self, person_id: str) -> bool:
        return self.gateway.policy.directory.has_role(person_id, ADMIN_ROLE)

    def _target(self, file: str | None) -> Path:
        paths = self.gateway.config_paths
        if not paths:
            raise ChangeRefused(409, "no_policy_file", "this gateway was not started from files")
        if file is None:
            return Path(paths[0])
        for path in paths:
            if file in (path, Path(path).name):
                return Path(path)
        raise ChangeRefused(
            404, "unknown_file", f"{file!r} is not one of the policy files: {', '.join(paths)}"
        )

    # -- proposing -----------------------------------------------------------------------------
    async def propose_policy(
        self, author: str, new_text: str, *, file: str | None = None, summary: str = ""
    ) -> ChangeRecord:
        """Propose the new text of a policy file (see the module's docstring)."""
        if len(new_text.encode()) > MAX_POLICY_BYTES:
            raise ChangeRefused(413, "too_large", "a policy file is at most 512 KiB")
        path = self._target(file)
        return await self._propose("policy", author, path, new_text, summary.strip(), None)

    async def propose_directory(
        self, author: str, op: Mapping[str, Any], *, file: str | None = None
    ) -> ChangeRecord:
        """Propose a directory operation, applied to the file that lists the person."""
        self._require_admin(author)
        path = self._target(file) if file else self._directory_file(op)
        current = await asyncio.to_thread(path.read_text, encoding="utf-8")
        new_text, summary = edit_directory(current, op)
        return await self._propose("directory", author, path, new_text, summary, dict(op))

    def _directory_file(self, op: Mapping[str, Any]) -> Path:
        person = op.get("person")
        paths = [Path(p) for p in self.gateway.config_paths]
        for path in paths:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue
            people = (data.get("directory") or {}).get("people") or []
            ids = {p.get("id") for p in people if isinstance(p, dict)}
            if person in ids or (op.get("op") == "add_person" and people):
                return path
        return self._target(None)

    def _require_admin(self, author: str) -> None:
        if not self.is_admin(author):
            raise ChangeRefused(
                403, "forbidden", "changing the policy or the directory needs the admin role"
            )

    async def _audit(self, kind: str, author: str, data: Mapping[str, Any]) -> None:
        gateway = self.gateway
        await gateway.writer.append(
            AuditDraft(
                kind=kind, ts=gateway.clock(), actor=author, policy_version=gateway.engine.version,
                data=dict(data),
            )
        )  # fmt: skip

    async def _propose(
        self, kind: str, author: str, path: Path, new_text: str, summary: str,
        op: dict[str, Any] | None,
    ) -> ChangeRecord:  # fmt: skip
        gateway = self.gateway
        self._require_admin(author)
        action = DIRECTORY_CHANGE if kind == "directory" else POLICY_CHANGE
        try:
            current = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as exc:
            raise ChangeRefused(409, "unreadable_policy", f"cannot read {path}: {exc}") from None
        if new_text == current:
            raise ChangeRefused(409, "no_change", "the proposed text is the policy in force")
        # 1. Validate with the normal loader, with the other files as they are.
        sources = []
        for other in gateway.config_paths:
            if Path(other) == path:
                sources.append((str(path), new_text))
            else:
                sources.append((other, await asyncio.to_thread(Path(other).read_text, "utf-8")))
        try:
            proposed = load_policy_texts(sources)
        except PolicyError as exc:
            problems = [str(p) for p in exc.problems]
            await self._audit(
                "admin.change_rejected", author,
                {"action": action, "file": str(path), "code": "invalid_policy",
                 "problems": problems[:50]},
            )  # fmt: skip
            raise ChangeRefused(
                422, "invalid_policy",
                f"the proposed policy does not load ({len(problems)} problem"
                f"{'' if len(problems) == 1 else 's'}); nothing was asked",
                problems,
            ) from None  # fmt: skip
        # 2. Who decides: the admin-change approvers in force, other than the author.
        settings = AdminSettings.from_settings(gateway.policy.settings)
        approvers = tuple(p for p in settings.resolve(gateway.policy.directory) if p != author)
        if len(approvers) < settings.required:
            await self._audit(
                "admin.change_rejected", author,
                {"action": action, "file": str(path), "code": "no_other_admin"},
            )  # fmt: skip
            raise ChangeRefused(
                409, "no_other_admin",
                f"this change needs {settings.required} approval"
                f"{'' if settings.required == 1 else 's'} from administrators other than "
                f"{author}, and there {'is' if len(approvers) == 1 else 'are'} only "
                f"{len(approvers)}: add another admin first (with a change approved by an "
                "existing one) — no administrator changes the gateway alone",
            )  # fmt: skip
        # 3. The approval and the change, in one transaction.
        diff = unified_diff(current, new_text, path.name)
        change_id = "chg_" + secrets.token_hex(10)
        base = text_hash(current)
        summary = summary or f"edit {path.name}"
        now = gateway.clock()
        params = {
            "change_id": change_id, "file": path.name, "summary": summary[:500],
            "base_hash": base, "new_hash": text_hash(new_text),
            "new_policy_version": proposed.version,
        }  # fmt: skip
        row = {
            "id": change_id, "kind": kind, "author": author, "file": str(path),
            "base_hash": base, "new_text": new_text, "diff": diff, "summary": summary,
            "op_json": op,
        }  # fmt: skip
        reason = f"{author} proposes to {summary}: four eyes — another administrator decides"
        made: list[StoredApproval] = []

        def create(tx: WriteTx) -> ChangeRecord:
            record, stored = self._open(tx, action, row, params, approvers, settings, reason, now)
            made.append(stored)
            return record

        record = await gateway.writer.run(create)
        created = CheckResult(Decision.from_json(made[0].decision), made[0])
        for listener in gateway.on_check:  # wakes the scheduler and the channel dispatcher
            listener(created)
        return record

    def _open(
        self, tx: WriteTx, action: str, row: dict[str, Any], params: dict[str, Any],
        approvers: tuple[str, ...], settings: AdminSettings, reason: str, now: datetime,
    ) -> tuple[ChangeRecord, StoredApproval]:  # fmt: skip
        """The approval deciding a change and the change's row, in the caller's transaction:
        requested by the author, decided by `approvers` (never the author)."""
        gateway = self.gateway
        author = str(row["author"])
        plan = ResolvedPlan(
            (
                ResolvedStage(
                    "admins", (ResolvedRequirement(approvers, settings.required),), settings.mfa
                ),
            ),
            settings.timeout_s,
        )
        actor = {"user": author}
        approval = workflow.open_approval(
            approval_id=new_approval_id(), action=action, params=params,
            binding_hash=binding_hash(action, params, actor), actor=actor, plan=plan, now=now,
        )  # fmt: skip
        stored = StoredApproval(
            approval=approval,
            agent=None,
            decision={"effect": "approve", "rules": [], "reasons": [reason],
                      "approval": plan.to_json(), "policy_version": gateway.engine.version},
            reasons=(reason,),
            policy_version=gateway.engine.version,
            params_hash=params_hash(params),
        )  # fmt: skip
        records.insert_approval(tx.conn, stored)
        tx.conn.execute(
            insert(admin_changes).values(
                **row, state="pending", approval_id=approval.id, created_at=now
            )
        )
        tx.audit(
            AuditDraft(
                kind=Kind.APPROVAL_CREATED, ts=now, actor=author, action=action,
                params_hash=stored.params_hash, effect="pending",
                policy_version=stored.policy_version, approval_id=approval.id,
                data={"plan": plan.to_json(), "expires_at": approval.expires_at.isoformat(),
                      "binding_hash": approval.binding_hash},
            )
        )  # fmt: skip
        tx.audit(
            AuditDraft(
                kind="admin.change_proposed", ts=now, actor=author, action=action,
                policy_version=stored.policy_version, approval_id=approval.id,
                data={"change_id": row["id"], "file": row["file"], "summary": row["summary"],
                      "base_hash": row["base_hash"], "new_hash": text_hash(row["new_text"]),
                      "op": row["op_json"]},
            )
        )  # fmt: skip
        for hook in gateway.approvals.in_transaction:
            hook(tx, stored, ("approval.created",), now)
        found = load_change(tx.conn, str(row["id"]))
        if found is None:  # pragma: no cover - inserted just above
            raise RuntimeError("the change vanished")
        return found, stored

    # -- standing grants above the configured lifetime -------------------------------------------
    def _hold_grant(
        self, tx: WriteTx, offer: Any, grantor: str, after: StoredApproval, lifetime: int,
        now: datetime,
    ) -> bool:  # fmt: skip
        """A grant living longer than `server.admin_changes.grants_longer_than` is not created
        by its approver alone: it becomes a `clearance.grant.create` approval for the other
        admins (the request itself is approved all the same). With too few of them the vote
        is refused whole (`grant_needs_admin`): approve once instead."""
        from .grants import GrantError

        settings = AdminSettings.from_settings(self.gateway.policy.settings)
        limit = settings.grants_longer_than_s
        if limit is None or lifetime <= limit:
            return False
        approvers = tuple(
            p for p in settings.resolve(self.gateway.policy.directory) if p != grantor
        )
        if len(approvers) < settings.required:
            # This transaction is undone by the refusal: record it in a unit of its own.
            self._spawn(
                self._audit(
                    "admin.change_rejected", grantor,
                    {"action": GRANT_CREATE, "code": "grant_needs_admin",
                     "approval_id": after.approval.id, "ttl_s": lifetime},
                )
            )  # fmt: skip
            raise GrantError(
                "grant_needs_admin",
                f"a standing grant for longer than {limit} s needs an administrator other "
                f"than {grantor}, and there is none: approve this request once instead",
                409,
            )
        change_id = "chg_" + secrets.token_hex(10)
        values = ", ".join(f"{k}={v}" for k, v in sorted(offer.values.items())) or "any"
        summary = (
            f"let {grantor}'s standing grant for {offer.action} ({values}) run "
            f"{_duration(lifetime)}"
        )
        op = {
            "offer": offer.to_json(), "grantor": grantor, "approval_id": after.approval.id,
            "ttl_s": lifetime,
        }  # fmt: skip
        row = {
            "id": change_id, "kind": "grant", "author": grantor, "file": "", "base_hash": "",
            "new_text": "", "diff": "", "summary": summary, "op_json": op,
        }  # fmt: skip
        params = {
            "change_id": change_id, "action": offer.action, "scope": offer.values,
            "ttl_s": lifetime, "for_approval": after.approval.id,
        }  # fmt: skip
        reason = (
            f"{grantor} approved {after.approval.id} always, for {_duration(lifetime)} (over "
            f"{_duration(limit)}): another administrator decides the standing grant"
        )
        self._open(tx, GRANT_CREATE, row, params, approvers, settings, reason, now)
        return True

    async def _apply_grant(self, change: ChangeRecord, stored: StoredApproval) -> ChangeRecord:
        from . import grants

        gateway = self.gateway
        approvers = [v.person for v in stored.approval.votes if v.decision.value == "approve"]
        op = change.op or {}
        try:
            original = await gateway.approvals.get(str(op["approval_id"]))
        except (KeyError, ApprovalError):
            return await self._close(change, "failed", "the approved request is gone", approvers)
        offer = grants.current_offer(original, gateway.policy)
        if offer is None or offer.scope_hash != op.get("offer", {}).get("scope_hash"):
            return await self._close(
                change, "stale", "the policy no longer allows this grant", approvers
            )
        now = gateway.clock()

        def work(tx: WriteTx) -> ChangeRecord:
            claimed = tx.conn.execute(
                update(admin_changes)
                .where(and_(admin_changes.c.id == change.id, admin_changes.c.state == "pending"))
                .values(state="applied", decided_at=now)
            )
            if claimed.rowcount == 1:
                grant = grants.create_grant(
                    tx, offer, grantor=str(op["grantor"]), approval_id=original.approval.id,
                    ttl_s=int(op["ttl_s"]), now=now, channel="admin",
                )  # fmt: skip
                tx.audit(
                    AuditDraft(
                        kind="admin.change_applied", ts=now, actor=change.author,
                        action=GRANT_CREATE, approval_id=change.approval_id,
                        data={"change_id": change.id, "grant_id": grant.id,
                              "approved_by": approvers},
                    )
                )  # fmt: skip
            found = load_change(tx.conn, change.id)
            return found if found is not None else change

        return await gateway.writer.run(work)

    # -- applying ------------------------------------------------------------------------------
    def _on_change(self, stored: StoredApproval, events: tuple[str, ...]) -> None:
        if stored.approval.action not in ACTIONS or not stored.approval.is_final:
            return
        self._spawn(self.settle(stored.approval.id))

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        """Run `job` in the background on the gateway's event loop (also when called from the
        audit writer's thread, where PostgreSQL units run)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            task = loop.create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._spawn, job)
        else:  # no loop known (a sync caller): `settle()` at start-up catches up
            job.close()

    async def wait_idle(self) -> None:
        """Wait for changes being applied in the background (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def settle(self, approval_id: str | None = None) -> list[ChangeRecord]:
        """Apply or close every pending change whose approval is decided (or just one)."""
        gateway = self.gateway
        self._loop = asyncio.get_running_loop()
        async with self._lock:

            def pending(conn: Connection) -> list[ChangeRecord]:
                query = select(admin_changes).where(admin_changes.c.state == "pending")
                if approval_id is not None:
                    query = query.where(admin_changes.c.approval_id == approval_id)
                return [_record(r) for r in conn.execute(query).mappings()]

            out = []
            for change in await read(gateway.db, pending):
                stored = await gateway.approvals.get(change.approval_id)
                state = stored.approval.state
                if state is ApprovalState.PENDING:
                    continue
                voted = any(v.decision.value == "approve" for v in stored.approval.votes)
                if state is ApprovalState.APPROVED and not voted:
                    # Approved without an admin's vote (only an override does that): four
                    # eyes were not used, so the change is not made.
                    out.append(
                        await self._close(
                            change, "rejected", "approved without another admin's vote"
                        )
                    )
                elif state is ApprovalState.APPROVED and change.kind == "grant":
                    out.append(await self._apply_grant(change, stored))
                elif state is ApprovalState.APPROVED:
                    out.append(await self._apply(change, stored))
                else:
                    closed = "expired" if state is ApprovalState.EXPIRED else "rejected"
                    out.append(await self._close(change, closed, stored.approval.decided_reason))
            return out

    async def _close(
        self, change: ChangeRecord, state: str, error: str | None, approvers: Sequence[str] = ()
    ) -> ChangeRecord:
        gateway = self.gateway
        now = gateway.clock()

        def work(tx: WriteTx) -> ChangeRecord:
            done = tx.conn.execute(
                update(admin_changes)
                .where(and_(admin_changes.c.id == change.id, admin_changes.c.state == "pending"))
                .values(state=state, decided_at=now, error=error)
            )
            if done.rowcount == 1:
                tx.audit(
                    AuditDraft(
                        kind=f"admin.change_{state}", ts=now, actor=change.author,
                        action=change.action, approval_id=change.approval_id,
                        policy_version=gateway.engine.version,
                        data={"change_id": change.id, "file": change.file, "reason": error,
                              "approved_by": list(approvers)},
                    )
                )  # fmt: skip
            found = load_change(tx.conn, change.id)
            return found if found is not None else change

        return await gateway.writer.run(work)

    async def _apply(self, change: ChangeRecord, stored: StoredApproval) -> ChangeRecord:
        gateway = self.gateway
        path = Path(change.file)
        approvers = [v.person for v in stored.approval.votes if v.decision.value == "approve"]
        try:
            current = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as exc:
            return await self._close(change, "failed", f"cannot read {path}: {exc}", approvers)
        if text_hash(current) != change.base_hash:
            return await self._close(
                change, "stale",
                "the policy file changed after this change was proposed; propose it again",
                approvers,
            )  # fmt: skip
        await asyncio.to_thread(_replace_file, path, change.new_text)
        ok, detail = await gateway.reload(by=f"admin change {change.id}")
        if not ok:
            await asyncio.to_thread(_replace_file, path, current)
            await gateway.reload(by=f"admin change {change.id} (rolled back)")
            return await self._close(change, "failed", f"the reload failed: {detail}", approvers)
        log.info("admin_change_applied", change_id=change.id, policy_version=detail)
        return await self._close(change, "applied", None, approvers)


def _replace_file(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (atomic)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
