"""The database schema: one set of SQLAlchemy Core tables for SQLite and PostgreSQL.

Conventions:
- Times are `UTCDateTime`: timezone-aware UTC datetimes in Python, `timestamptz` in
  PostgreSQL and naive-UTC text (`YYYY-MM-DD HH:MM:SS.ffffff`, which sorts correctly) in SQLite.
  Naive datetimes are refused on the way in; values always come back aware, in UTC.
- Structured values are `JSONText`: canonical JSON (`clearance.canonical.canonical_json`) in
  a text column, so both databases store identical bytes and hashes over them are stable.
- Constraint and index names follow `NAMING_CONVENTION`, so migrations can address them.

The Alembic migrations in `store/migrations/versions/` create exactly this schema; a test
compares the two.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from clearance.canonical import canonical_json

__all__ = [
    "APPROVAL_STATES",
    "EXECUTION_STATES",
    "KEY_KINDS",
    "NAMING_CONVENTION",
    "VOTE_DECISIONS",
    "JSONText",
    "UTCDateTime",
    "api_keys",
    "approval_timers",
    "approvals",
    "audit_checkpoints",
    "audit_entries",
    "audit_heads",
    "channel_events",
    "channel_tokens",
    "credentials",
    "delegations",
    "deliveries",
    "metadata",
    "outbox",
    "routing_cursors",
    "routing_picks",
    "sessions",
    "votes",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

APPROVAL_STATES = ("pending", "approved", "denied", "expired", "cancelled")
EXECUTION_STATES = ("succeeded", "failed")
VOTE_DECISIONS = ("approve", "deny")
KEY_KINDS = ("agent", "person")

# Auto-incrementing surrogate keys: BIGINT in PostgreSQL; in SQLite only a column declared
# exactly INTEGER PRIMARY KEY is the auto-assigned rowid.
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime (timestamptz in PostgreSQL, naive UTC text in SQLite)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: pass a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw text, e.g. read with a plain cursor
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class JSONText(TypeDecorator[Any]):
    """A JSON value stored as canonical JSON text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return canonical_json(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("action", String(255), nullable=False),
    Column("params_json", JSONText(), nullable=False),  # redacted for display
    Column("params_hash", String(80), nullable=False),
    Column("binding_hash", String(80), nullable=False),
    Column("actor_json", JSONText(), nullable=False),
    Column("context_json", JSONText(), nullable=False),
    Column("labels_json", JSONText(), nullable=False),
    Column("requester", String(255)),
    Column("agent", String(255)),  # scopes agent API keys to their own approvals
    Column("plan_json", JSONText(), nullable=False),  # the resolved approval plan
    Column("stage_index", Integer(), nullable=False),
    Column("decision_json", JSONText(), nullable=False),  # the policy decision
    Column("rules_json", JSONText(), nullable=False),
    Column("reasons_json", JSONText(), nullable=False),
    Column("policy_version", String(80), nullable=False),
    Column("idempotency_key", String(255), unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime()),
    Column("decided_reason", Text()),
    Column("released_at", UTCDateTime()),  # the approved call was handed to the agent, once
    Column("execution_state", String(16)),
    Column("execution_result", Text()),
    Column("executed_at", UTCDateTime()),
    Column("version", Integer(), nullable=False, server_default="0"),  # compare-and-set
    # delegations in force and the reminders/escalations that fired (migration 0004)
    Column("routing_json", JSONText()),
    CheckConstraint(_in("state", APPROVAL_STATES), name="state"),
    CheckConstraint(
        f"execution_state IS NULL OR {_in('execution_state', EXECUTION_STATES)}",
        name="execution_state",
    ),
    Index("ix_approvals_state_expires_at", "state", "expires_at"),
    Index("ix_approvals_agent", "agent"),
    Index("ix_approvals_requester", "requester"),
)

votes = Table(
    "votes",
    metadata,
    Column("id", _SERIAL, primary_key=True, autoincrement=True),
    Column("approval_id", String(64), ForeignKey("approvals.id"), nullable=False),
    Column("person", String(255), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("comment", Text()),
    Column("channel", String(64), nullable=False),
    Column("stage_index", Integer(), nullable=False),
    Column("on_behalf_of", String(255)),
    Column("at", UTCDateTime(), nullable=False),
    Column("factor", String(16)),  # the second factor the vote came with (migration 0006)
    Column("geo", String(64)),  # the approver's location, when a stage required it (0006)
    UniqueConstraint("approval_id", "person"),
    CheckConstraint(_in("decision", VOTE_DECISIONS), name="decision"),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("ts", UTCDateTime(), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(255)),
    Column("approver", String(255)),
    Column("channel", String(64)),
    Column("action", String(255)),
    Column("params_hash", String(80)),
    Column("effect", String(16)),
    Column("rule_ids", JSONText(), nullable=False),  # a JSON list of rule ids
    Column("policy_version", String(80)),
    Column("approval_id", String(64)),
    Column("data", JSONText(), nullable=False),  # a JSON object of further facts
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_entries_ts", "ts"),
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree less per append
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("seq", BigInteger(), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    sqlite_with_rowid=False,
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", _SERIAL, primary_key=True, autoincrement=True),
    Column("ts", UTCDateTime(), nullable=False),
    Column("heads_json", JSONText(), nullable=False),  # {chain_id: {"seq": n, "hash": h}}
    Column("hash", String(64), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("prefix", String(32), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex; keys are high-entropy
    Column("kind", String(16), nullable=False),
    Column("subject", String(255), nullable=False),  # agent name or person id
    Column("label", String(255)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("last_used_at", UTCDateTime()),
    CheckConstraint(_in("kind", KEY_KINDS), name="kind"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("person_id", String(255), primary_key=True),
    Column("password_hash", Text(), nullable=False),  # argon2, computed by the server
    Column("updated_at", UTCDateTime(), nullable=False),
)

approval_people = Table(  # who may ever vote on an approval: the inbox's index by person
    "approval_people",
    metadata,
    Column("person_id", String(255), primary_key=True),
    Column("approval_id", String(64), primary_key=True),
)

login_throttle = Table(  # failed web sign-ins, per person id and per client address
    "login_throttle",
    metadata,
    Column("subject", String(320), primary_key=True),  # "person:<id>" or "ip:<address>"
    Column("failures", Integer(), nullable=False),
    Column("window_start", UTCDateTime(), nullable=False),
    Column("locked_until", UTCDateTime()),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 hex of the session token
    Column("person_id", String(255), nullable=False, index=True),
    Column("csrf_token", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _SERIAL, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("approval_id", String(64)),
    Column("channel", String(64)),
    Column("recipient", String(255)),
    Column("payload", JSONText(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("available_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("locked_by", String(128)),
    Column("locked_until", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("last_error", Text()),
    Index("ix_outbox_sent_at_available_at", "sent_at", "available_at"),
)


# -- channels (migration 0002) -------------------------------------------------------------------

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", _SERIAL, primary_key=True, autoincrement=True),
    Column("approval_id", String(64), nullable=False),
    Column("person", String(255), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("stage_index", Integer(), nullable=False),
    Column("status", String(16), nullable=False),  # sent | failed
    Column("message_ref", JSONText()),  # the platform's handle, to update the message later
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("last_error", Text()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("approval_id", "person", "channel", "stage_index"),
    CheckConstraint(_in("status", ("sent", "failed")), name="status"),
    Index("ix_deliveries_approval_id", "approval_id"),
)

channel_tokens = Table(
    "channel_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 hex of the opaque token
    Column("approval_id", String(64), nullable=False),
    Column("person", String(255), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime()),
)

channel_events = Table(
    "channel_events",
    metadata,
    Column("channel", String(64), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("received_at", UTCDateTime(), nullable=False),
)


# -- escalation, reminders, stage routing, delegation (migration 0004) --------------------------

approval_timers = Table(
    "approval_timers",
    metadata,
    # The next reminder or escalation of a pending approval (clearance.approvals.jobs).
    Column("approval_id", String(64), primary_key=True),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("locked_by", String(128)),
    Column("locked_until", UTCDateTime()),
    Index("ix_approval_timers_due_at", "due_at"),
)

routing_cursors = Table(
    "routing_cursors",
    metadata,
    # Where `pick: round_robin` continues, per stage and group (clearance.delegation).
    Column("key", String(255), primary_key=True),
    Column("position", BigInteger(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

routing_picks = Table(
    "routing_picks",
    metadata,
    # Who `pick` paged for which stage of which request (the load `least_loaded` balances).
    Column("approval_id", String(64), primary_key=True),
    Column("stage_index", Integer(), primary_key=True, autoincrement=False),
    Column("person", String(255), primary_key=True),  # whom the request reaches
    Column("picked_at", UTCDateTime(), nullable=False),
    # The approver picked, when `person` stands in for them (else the same, or NULL for a
    # pick recorded before 0011): their own vote fills the seat too.
    Column("seat", String(255), nullable=True),
    Index("ix_routing_picks_person", "person"),
)

delegations = Table(
    "delegations",
    metadata,
    # A person's delegate while they are away: one at a time (clearance.delegation).
    Column("delegator", String(255), primary_key=True),
    Column("delegate", String(255), nullable=False),
    Column("starts_at", UTCDateTime(), nullable=False),
    Column("until", UTCDateTime(), nullable=False),
    Column("created_by", String(255)),
    Column("created_at", UTCDateTime(), nullable=False),
)


# -- standing grants, emergency overrides, remembered denials (migration 0005) ------------------

REVIEW_STATES = ("open", "justified", "flagged")

grants = Table(
    "grants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("scope_hash", String(80), nullable=False),  # rules + action + scoped values, hashed
    Column("rules_key", String(255), nullable=False),  # the approve rules it answers, sorted
    Column("action", String(255), nullable=False),
    Column("scope_json", JSONText(), nullable=False),  # {field: value shown (redacted)}
    Column("grantor", String(255), nullable=False),
    Column("approval_id", String(64), nullable=False),  # the request approved "always"
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("revoked_by", String(255)),
    Column("revoke_reason", Text()),
    Index("ix_grants_scope_hash", "scope_hash"),
)

overrides = Table(
    "overrides",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("approval_id", String(64), nullable=False),
    Column("person", String(255), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("action", String(255), nullable=False),
    Column("binding_hash", String(80), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("review_state", String(16), nullable=False),
    Column("reviewed_by", String(255)),
    Column("reviewed_at", UTCDateTime()),
    Column("review_comment", Text()),
    CheckConstraint(_in("review_state", REVIEW_STATES), name="review_state"),
    Index("ix_overrides_person_created_at", "person", "created_at"),
    Index("ix_overrides_binding_hash", "binding_hash"),
    Index("ix_overrides_review_state", "review_state"),
)

remembered_denials = Table(
    "remembered_denials",
    metadata,
    Column("binding_hash", String(80), primary_key=True),  # action + params + actor
    Column("approval_id", String(64), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("denied_by", String(255)),
    Column("denied_at", UTCDateTime(), nullable=False),
)


# Tables other packages define on this `metadata`, each created by its own migration, are
# imported here so that `metadata` is complete wherever the schema is used (Alembic, the
# schema test). Keep this at the end: those modules import the names above.
import clearance.risk.tables  # noqa: E402, F401 - registers risk_state (migration 0003_risk)
from clearance.store import mfa_admin_tables as _mfa_admin  # noqa: E402, F401 - (0006_mfa_admin)
