"""Standing grants ("approve always"): a human approval that also covers later requests.

How it works, and the rules a security reviewer can rely on:

- A rule opts in with `allow_always: {max_ttl: 30d, scope: [actor.agent, params.payee_id]}`.
  The policy loader accepts it only on `approve` rules whose plan is **one stage of one
  requirement with `required: 1`**: one person can speak for such an approval; nobody can
  speak alone for a multi-stage or N-of-M approval, so those are never offered "always".
- When such a request is held for approval, the gateway computes its *offer* (`GrantOffer`)
  and stores it with the approval: the approve rules it answers, the action, the scope fields,
  and the values the request has for them. The offer exists only when every approve rule that
  decided the request allows "always", the merged plan is still one person, and every scoped
  field has a value. The offer's scope is the union of the rules' scopes (more fields pin the
  grant tighter), its maximum lifetime the smallest `max_ttl`.
- An "approve always" answer (any channel, the API, the web inbox, the CLI) is an *approve vote
  for this request* and a grant proposal. The grant is created in the same transaction as the
  vote, and only when that vote approves the request. Its lifetime is
  `min(requested, max_ttl)`; its scope values are the approved request's values. An
  "always" answer on a request without an offer is refused (code `grant_not_allowed`) and
  audited; the approver can still answer a plain approve.
- A later check whose policy decision is `approve` looks up a live grant with one indexed read
  on `scope_hash` (the rules, the action and the scoped values, hashed). Block and deny rules
  win: they decide before any grant is looked at. A grant applies only when the same set of
  approve rules decides the later request (a second approve rule that also matches — say a
  risk rule — still needs a person), its scope values are equal, it is neither revoked nor
  expired, it is younger than the rule's *current* `max_ttl`, and the requester is not the
  grantor (nobody approves their own request, not even through a grant). Changing a rule's
  `scope` or removing `allow_always` retires its grants at once (their hash no longer matches
  or no lookup happens). The check is audited as allowed, with `grant_id`.
- `revoke` ends a grant at once (audited). The grantor or an admin may revoke.

`create_grant` is the one place a grant comes to exist: wrap it to add further conditions.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, select, update

from .approvals.model import ApprovalState
from .approvals.records import StoredApproval
from .approvals.service import ApprovalError, ApprovalService
from .audit.entry import AuditDraft
from .audit.writer import AuditWriter, WriteTx
from .canonical import REDACTED, canonical_json, redact, sha256_hex
from .policy import Decision, Effect, Policy, Request
from .store.database import Database
from .store.reads import read
from .store.schema import grants

GRANT_CREATED = "grant.created"
GRANT_REFUSED = "grant.refused"
GRANT_REVOKED = "grant.revoked"
_MISSING = object()


class GrantError(ApprovalError):
    """A grant operation refused: `grant_not_allowed`, `not_found`, `forbidden`, …"""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(code, message)
        self.status = status


@dataclass(frozen=True, slots=True)
class GrantOffer:
    """What "approve always" would grant for one held request (stored with the approval)."""

    rules: tuple[str, ...]
    action: str
    scope: tuple[str, ...]
    values: dict[str, Any]  # the scoped values as shown to people (redacted ones masked)
    scope_hash: str
    max_ttl_s: int

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": list(self.rules),
            "action": self.action,
            "scope": list(self.scope),
            "values": self.values,
            "scope_hash": self.scope_hash,
            "max_ttl_s": self.max_ttl_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GrantOffer:
        return cls(
            rules=tuple(str(r) for r in data["rules"]),
            action=str(data["action"]),
            scope=tuple(str(f) for f in data["scope"]),
            values=dict(data["values"]),
            scope_hash=str(data["scope_hash"]),
            max_ttl_s=int(data["max_ttl_s"]),
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """A stored grant."""

    id: str
    rules: tuple[str, ...]
    action: str
    scope: dict[str, Any]
    grantor: str
    approval_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "rules": list(self.rules),
            "action": self.action,
            "scope": self.scope,
            "grantor": self.grantor,
            "approval_id": self.approval_id,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
        }
        if now is not None:
            out["live"] = self.live(now)
        return out


# ---------------------------------------------------------------------------------------------
# Offers and lookups (pure, then one indexed read)


def has_grant_rules(policy: Policy) -> bool:
    """Whether any rule allows "always" (when none does, checks skip grants entirely)."""
    return any(rule.allow_always is not None for rule in policy.rules)


def offer_for(policy: Policy, decision: Decision, request: Request) -> GrantOffer | None:
    """The grant an "approve always" answer would create for `request`, or None.

    None unless: the decision is `approve`, every deciding rule allows "always", the plan is
    one stage of one requirement of one approval, and the request has every scoped value."""
    if decision.effect is not Effect.APPROVE or decision.approval is None:
        return None
    plan = decision.approval
    if len(plan.stages) != 1 or len(plan.stages[0].requirements) != 1:
        return None
    if plan.stages[0].requirements[0].required != 1:
        return None
    by_id = {rule.id: rule for rule in policy.rules}
    scope: list[str] = []
    ttls: list[int] = []
    for rule_id in decision.rules:
        rule = by_id.get(rule_id)
        if rule is None or rule.allow_always is None:
            return None
        ttls.append(rule.allow_always.max_ttl_s)
        scope.extend(f for f in rule.allow_always.scope if f not in scope)
    if not ttls:
        return None
    rules = tuple(sorted(decision.rules))
    actual: dict[str, Any] = {}
    for name in scope:
        value = field_value(request, name)
        if value is _MISSING:
            return None
        actual[name] = value
    shown_params = redact(request.params, decision.redact) if decision.redact else request.params
    shown = {
        name: (field_value(Request(request.action, shown_params, request.actor), name))
        for name in scope
    }
    return GrantOffer(
        rules=rules,
        action=request.action,
        scope=tuple(scope),
        values={k: (REDACTED if v is _MISSING else v) for k, v in shown.items()},
        scope_hash=scope_hash(rules, request.action, actual),
        max_ttl_s=min(ttls),
    )


def field_value(request: Request, name: str) -> Any:
    """The value of `actor.<field>` or `params.<a>.<b>` in `request` (`_MISSING` if none)."""
    head, _, rest = name.partition(".")
    node: Any = request.actor if head == "actor" else request.params if head == "params" else None
    for part in rest.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return _MISSING if node is None else node


def scope_hash(rules: Sequence[str], action: str, values: Mapping[str, Any]) -> str:
    """The lookup key of a grant: its rules, its action and its scoped values."""
    body = {"rules": sorted(rules), "action": action, "values": dict(values)}
    return "sha256:" + sha256_hex(canonical_json(body))


_LIVE = (
    select(grants)
    .where(
        and_(
            grants.c.scope_hash == bindparam("h"),
            grants.c.revoked_at.is_(None),
            grants.c.expires_at > bindparam("now"),
        )
    )
    .order_by(grants.c.created_at)
)


def find_live(
    conn: Connection, offer: GrantOffer, now: datetime, requester: str | None
) -> Grant | None:
    """A live grant covering `offer` (indexed on scope_hash): not revoked, not expired, within
    the rule's current max_ttl, and not granted by the requester themself."""
    oldest = now - timedelta(seconds=offer.max_ttl_s)
    for row in conn.execute(_LIVE, {"h": offer.scope_hash, "now": now}).mappings():
        grant = _grant(row)
        if grant.created_at <= oldest or (requester is not None and grant.grantor == requester):
            continue
        if grant.rules == offer.rules and grant.action == offer.action:
            return grant
    return None


# ---------------------------------------------------------------------------------------------
# Writes


def new_grant_id() -> str:
    return "grt_" + secrets.token_hex(12)


def create_grant(
    tx: WriteTx,
    offer: GrantOffer,
    *,
    grantor: str,
    approval_id: str,
    ttl_s: int,
    now: datetime,
    channel: str | None = None,
) -> Grant:
    """Store a grant and its audit entry, in the caller's transaction. The one place a grant is
    created: `ttl_s` is capped at the offer's max_ttl (and must be positive)."""
    if ttl_s <= 0:
        raise GrantError("invalid_ttl", "a grant's lifetime must be positive", 400)
    grant = Grant(
        id=new_grant_id(),
        rules=offer.rules,
        action=offer.action,
        scope=dict(offer.values),
        grantor=grantor,
        approval_id=approval_id,
        created_at=now,
        expires_at=now + timedelta(seconds=min(ttl_s, offer.max_ttl_s)),
    )
    tx.conn.execute(
        insert(grants).values(
            id=grant.id,
            scope_hash=offer.scope_hash,
            rules_key=",".join(grant.rules),
            action=grant.action,
            scope_json=grant.scope,
            grantor=grantor,
            approval_id=approval_id,
            created_at=now,
            expires_at=grant.expires_at,
        )
    )
    tx.audit(
        AuditDraft(
            kind=GRANT_CREATED,
            ts=now,
            approver=grantor,
            channel=channel,
            action=grant.action,
            rule_ids=grant.rules,
            approval_id=approval_id,
            data={
                "grant_id": grant.id,
                "scope": grant.scope,
                "expires_at": grant.expires_at.isoformat(),
                "ttl_s": min(ttl_s, offer.max_ttl_s),
            },
        )
    )
    return grant


async def approve_always(
    approvals: ApprovalService,
    policy: Policy,
    approval_id: str,
    *,
    person: str,
    comment: str | None = None,
    channel: str = "api",
    ttl_s: int | None = None,
    **vote_options: Any,
) -> tuple[StoredApproval, Grant | None]:
    """An "approve always" answer: an approve vote on this request and, when that vote approves
    it, a grant — in one transaction. Refused (and audited) when the request has no offer or
    the policy no longer allows one. Returns the approval and the grant (None when the vote
    was a repeat that changed nothing). `vote_options` go to `ApprovalService.decide` as they
    are (e.g. the step-up proof), so the vote meets every check a plain approve meets."""
    stored = await approvals.get(approval_id)
    offer = current_offer(stored, policy)
    now = approvals.clock()
    if offer is None:
        await _refuse(approvals.writer, stored, person, channel, now, "grant_not_allowed")
        raise GrantError(
            "grant_not_allowed",
            "this request cannot be approved always: its rule does not allow standing grants "
            "(or needs more than one approver); approve it once instead",
            403,
        )
    if ttl_s is not None and ttl_s <= 0:
        raise GrantError("invalid_ttl", "a grant's lifetime must be positive", 400)
    made: list[Grant] = []

    def then(tx: WriteTx, after: StoredApproval, at: datetime) -> None:
        if after.approval.state is ApprovalState.APPROVED:
            lifetime = min(ttl_s or offer.max_ttl_s, offer.max_ttl_s)
            for hold in approvals.grant_holds:  # e.g. four eyes on long grants (admin_changes)
                if hold(tx, offer, person, after, lifetime, at):
                    return
            made.append(
                create_grant(
                    tx,
                    offer,
                    grantor=person,
                    approval_id=after.approval.id,
                    ttl_s=ttl_s or offer.max_ttl_s,
                    now=at,
                    channel=channel,
                )
            )

    decided = await approvals.decide(
        approval_id,
        person=person,
        decision="approve",
        comment=comment,
        channel=channel,
        then=then,
        **vote_options,
    )
    return decided, (made[0] if made else None)


def current_offer(stored: StoredApproval, policy: Policy) -> GrantOffer | None:
    """The approval's stored offer, if the current policy still allows it (a rule whose
    `allow_always` was removed or whose scope changed offers nothing any more)."""
    raw = stored.decision.get("grant_offer")
    if not raw:
        return None
    offer = GrantOffer.from_json(raw)
    by_id = {rule.id: rule for rule in policy.rules}
    ttls = []
    scope: list[str] = []
    for rule_id in offer.rules:
        rule = by_id.get(rule_id)
        if rule is None or rule.allow_always is None:
            return None
        ttls.append(rule.allow_always.max_ttl_s)
        scope.extend(f for f in rule.allow_always.scope if f not in scope)
    if set(scope) != set(offer.scope):
        return None
    return GrantOffer(
        offer.rules,
        offer.action,
        offer.scope,
        offer.values,
        offer.scope_hash,
        min([*ttls, offer.max_ttl_s]),
    )


async def revoke(
    db: Database,
    writer: AuditWriter,
    grant_id: str,
    *,
    by: str,
    reason: str | None,
    now: datetime,
    channel: str = "api",
) -> Grant:
    """End a grant at once (audited). Revoking a revoked grant changes nothing."""

    def work(tx: WriteTx) -> Grant | None:
        row = tx.conn.execute(select(grants).where(grants.c.id == grant_id)).mappings().first()
        if row is None:
            return None
        grant = _grant(row)
        if grant.revoked_at is not None:
            return grant
        tx.conn.execute(
            update(grants)
            .where(and_(grants.c.id == grant_id, grants.c.revoked_at.is_(None)))
            .values(revoked_at=now, revoked_by=by, revoke_reason=reason)
        )
        tx.audit(
            AuditDraft(
                kind=GRANT_REVOKED,
                ts=now,
                approver=by,
                channel=channel,
                action=grant.action,
                rule_ids=grant.rules,
                approval_id=grant.approval_id,
                data={"grant_id": grant_id, "reason": reason, "grantor": grant.grantor},
            )
        )
        return dataclasses.replace(grant, revoked_at=now, revoked_by=by, revoke_reason=reason)

    result = await writer.run(work)
    if result is None:
        raise GrantError("not_found", f"no grant with id {grant_id!r}", 404)
    return result


async def get(db: Database, grant_id: str) -> Grant:
    def fetch(conn: Connection) -> Grant | None:
        row = conn.execute(select(grants).where(grants.c.id == grant_id)).mappings().first()
        return _grant(row) if row is not None else None

    found = await read(db, fetch)
    if found is None:
        raise GrantError("not_found", f"no grant with id {grant_id!r}", 404)
    return found


async def list_grants(
    db: Database,
    *,
    now: datetime,
    live_only: bool = False,
    grantor: str | None = None,
    limit: int = 200,
) -> list[Grant]:
    """Grants, newest first (`live_only`: neither revoked nor expired)."""

    def fetch(conn: Connection) -> list[Grant]:
        query = select(grants).order_by(grants.c.created_at.desc()).limit(limit)
        if live_only:
            query = query.where(and_(grants.c.revoked_at.is_(None), grants.c.expires_at > now))
        if grantor is not None:
            query = query.where(grants.c.grantor == grantor)
        return [_grant(row) for row in conn.execute(query).mappings()]

    return await read(db, fetch)


async def _refuse(
    writer: AuditWriter,
    stored: StoredApproval,
    person: str,
    channel: str,
    now: datetime,
    code: str,
) -> None:
    await writer.append(
        ApprovalService.draft(
            GRANT_REFUSED,
            stored,
            now,
            approver=person,
            channel=channel,
            data={"code": code, "reason": "the request's rules do not allow standing grants"},
        )
    )


def _grant(row: Any) -> Grant:
    return Grant(
        id=row["id"],
        rules=tuple(r for r in str(row["rules_key"]).split(",") if r),
        action=row["action"],
        scope=dict(row["scope_json"]),
        grantor=row["grantor"],
        approval_id=row["approval_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        revoke_reason=row["revoke_reason"],
    )


__all__ = [
    "GRANT_CREATED",
    "GRANT_REFUSED",
    "GRANT_REVOKED",
    "Grant",
    "GrantError",
    "GrantOffer",
    "approve_always",
    "create_grant",
    "current_offer",
    "find_live",
    "has_grant_rules",
    "list_grants",
    "offer_for",
    "revoke",
]
