"""Audit records: a draft (what happened) and an entry (a draft placed in a hash chain)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

__all__ = ["KINDS", "AuditDraft", "AuditEntry", "Kind", "entry_from_draft"]


class Kind:
    """The kinds of audit entries Clearance writes (other strings are allowed too)."""

    CHECK: Final = "check"
    APPROVAL_CREATED: Final = "approval.created"
    VOTE: Final = "vote"
    APPROVAL_DECIDED: Final = "approval.decided"
    APPROVAL_EXPIRED: Final = "approval.expired"
    APPROVAL_CANCELLED: Final = "approval.cancelled"
    APPROVAL_RELEASED: Final = "approval.released"
    RISK_SEEN: Final = "risk.seen"  # an approved call's country, device and payee now known
    EXECUTION_RESULT: Final = "execution.result"
    LOGIN: Final = "login"
    LOGIN_FAILED: Final = "login.failed"
    POLICY_RELOAD: Final = "policy.reload"
    POLICY_RELOAD_FAILED: Final = "policy.reload_failed"
    KEY_CREATED: Final = "key.created"
    KEY_REVOKED: Final = "key.revoked"


KINDS: Final = frozenset(
    value for name, value in vars(Kind).items() if name.isupper() and isinstance(value, str)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditDraft:
    """One fact to record, before it has a place in a chain.

    `ts` is passed in (the core never reads the clock) and must be timezone-aware. `data`
    holds further facts and must be JSON-serialisable with string keys; secrets never go here.
    """

    kind: str
    ts: datetime
    actor: str | None = None
    approver: str | None = None
    channel: str | None = None
    action: str | None = None
    params_hash: str | None = None
    effect: str | None = None
    rule_ids: tuple[str, ...] = ()
    policy_version: str | None = None
    approval_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry(AuditDraft):
    """A committed draft: its chain, its place in it, and the hashes that link it."""

    chain_id: str
    seq: int
    prev_hash: str
    hash: str

    def to_draft(self) -> AuditDraft:
        """The draft this entry records."""
        return AuditDraft(
            kind=self.kind,
            ts=self.ts,
            actor=self.actor,
            approver=self.approver,
            channel=self.channel,
            action=self.action,
            params_hash=self.params_hash,
            effect=self.effect,
            rule_ids=self.rule_ids,
            policy_version=self.policy_version,
            approval_id=self.approval_id,
            data=self.data,
        )


_new = object.__new__
_set = object.__setattr__


def entry_from_draft(
    draft: AuditDraft, chain_id: str, seq: int, prev_hash: str, hash_: str
) -> AuditEntry:
    """`AuditEntry(**draft fields, chain_id=…, …)`, built twice as fast (the writer's hot
    path): a frozen dataclass's generated `__init__` looks up `object.__setattr__` per field."""
    e = _new(AuditEntry)
    _set(e, "kind", draft.kind)
    _set(e, "ts", draft.ts)
    _set(e, "actor", draft.actor)
    _set(e, "approver", draft.approver)
    _set(e, "channel", draft.channel)
    _set(e, "action", draft.action)
    _set(e, "params_hash", draft.params_hash)
    _set(e, "effect", draft.effect)
    _set(e, "rule_ids", tuple(draft.rule_ids))
    _set(e, "policy_version", draft.policy_version)
    _set(e, "approval_id", draft.approval_id)
    _set(e, "data", draft.data)
    _set(e, "chain_id", chain_id)
    _set(e, "seq", seq)
    _set(e, "prev_hash", prev_hash)
    _set(e, "hash", hash_)
    return e
