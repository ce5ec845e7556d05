"""Test helpers: build valid audit chains in memory, and tamper with them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from clearance.audit.chain import GENESIS, Head, entry_hash
from clearance.audit.entry import AuditDraft, AuditEntry

T0 = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)


def draft(i: int = 0, **overrides: object) -> AuditDraft:
    """A plausible `check` entry, distinguishable by `i`."""
    fields: dict[str, object] = {
        "kind": "check",
        "ts": T0 + timedelta(seconds=i),
        "actor": "carol",
        "action": "payments.transfer",
        "params_hash": "sha256:" + "a" * 64,
        "effect": "allow",
        "rule_ids": ("payments-small",),
        "policy_version": "sha256:" + "b" * 64,
        "data": {"i": i, "agent": "billing-bot"},
    }
    fields.update(overrides)
    return AuditDraft(**fields)  # type: ignore[arg-type]


def chain(drafts: Sequence[AuditDraft], chain_id: str = "main") -> list[AuditEntry]:
    """A valid chain holding `drafts` in order."""
    entries: list[AuditEntry] = []
    prev = GENESIS
    for seq, d in enumerate(drafts, start=1):
        h = entry_hash(prev, chain_id, seq, d)
        fields = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
        entries.append(AuditEntry(**fields, chain_id=chain_id, seq=seq, prev_hash=prev, hash=h))
        prev = h
    return entries


def make_chain(n: int, chain_id: str = "main") -> list[AuditEntry]:
    return chain([draft(i) for i in range(n)], chain_id)


def head_of(entries: Sequence[AuditEntry]) -> dict[str, Head]:
    """The head records a writer would have kept for `entries`."""
    heads: dict[str, Head] = {}
    for e in entries:
        heads[e.chain_id] = Head(e.seq, e.hash)
    return heads


def with_field(entry: AuditEntry, **changes: object) -> AuditEntry:
    return dataclasses.replace(entry, **changes)  # type: ignore[arg-type]
