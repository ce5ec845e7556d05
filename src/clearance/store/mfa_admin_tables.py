"""Tables for second factors and four-eyes administrative changes (migration 0006_mfa_admin).

Importing this module registers them on the store's one `metadata`; `clearance.store.schema`
imports it at its end so that `metadata` is complete for migrations and the schema test.

- `mfa_factors`: one row per enrolled second factor. A TOTP row holds its shared secret,
  encrypted (`clearance.identity.mfa`), and `last_step`, the newest accepted time-step (a code
  is accepted only for a later step: single use), and counts wrong codes (`failures`,
  `locked_until`: brute force is capped). A WebAuthn row holds the credential id, its
  public key and the authenticator's signature counter. `confirmed_at` is empty until the
  person proved the factor works (a first code, or a completed registration).
- `mfa_challenges`: WebAuthn challenges, single-use (`used_at`) and short-lived (`expires_at`).
- `session_factors`: what an inbox session proved and when (a second factor is *fresh* for a
  configurable time after `verified_at`), and the approver's location recorded at sign-in.
- `admin_changes`: a proposed change to the policy file (the file's hash when proposed, the
  new text, the diff) and what became of it; the approval that decides it is an ordinary row
  of `approvals` (action `clearance.policy.change` / `clearance.directory.change`).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, String, Table, Text

from clearance.store.schema import JSONText, UTCDateTime, metadata

__all__ = [
    "ADMIN_CHANGE_STATES",
    "FACTOR_KINDS",
    "admin_changes",
    "mfa_challenges",
    "mfa_factors",
    "session_factors",
]

FACTOR_KINDS = ("totp", "webauthn")
ADMIN_CHANGE_STATES = ("pending", "applied", "rejected", "expired", "stale", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


mfa_factors = Table(
    "mfa_factors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("person_id", String(255), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("label", String(255)),
    Column("secret", Text()),  # TOTP only: encrypted; never logged, exported or audited
    Column("credential_id", String(512), unique=True),  # WebAuthn only: base64url
    Column("public_key", Text()),  # WebAuthn only: the COSE public key, base64url
    Column("sign_count", BigInteger(), nullable=False, server_default="0"),
    Column("last_step", BigInteger()),  # TOTP only: newest accepted time-step
    Column("failures", Integer(), nullable=False, server_default="0"),  # wrong codes in a row
    Column("locked_until", UTCDateTime()),  # after too many wrong codes
    Column("created_at", UTCDateTime(), nullable=False),
    Column("confirmed_at", UTCDateTime()),
    Column("last_used_at", UTCDateTime()),
    CheckConstraint(_in("kind", FACTOR_KINDS), name="kind"),
)

mfa_challenges = Table(
    "mfa_challenges",
    metadata,
    Column("challenge", String(128), primary_key=True),  # base64url, sent to the browser
    Column("person_id", String(255), nullable=False),
    Column("purpose", String(16), nullable=False),  # register | authenticate
    Column("session_id", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime()),
)

session_factors = Table(
    "session_factors",
    metadata,
    Column("session_id", String(64), primary_key=True),  # sessions.id
    Column("person_id", String(255), nullable=False),
    Column("method", String(16)),
    Column("verified_at", UTCDateTime()),
    Column("geo", String(64)),
    Column("updated_at", UTCDateTime(), nullable=False),
)

admin_changes = Table(
    "admin_changes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # policy | directory
    Column("state", String(16), nullable=False),
    Column("author", String(255), nullable=False),
    Column("approval_id", String(64), nullable=False),
    Column("file", Text(), nullable=False),
    Column("base_hash", String(80), nullable=False),  # sha256 of the file when proposed
    Column("new_text", Text(), nullable=False),
    Column("diff", Text(), nullable=False),
    Column("summary", Text(), nullable=False),
    Column("op_json", JSONText()),  # the structured directory operation, if any
    Column("created_at", UTCDateTime(), nullable=False),
    Column("decided_at", UTCDateTime()),
    Column("error", Text()),
    CheckConstraint(_in("state", ADMIN_CHANGE_STATES), name="state"),
    Index("ix_admin_changes_approval_id", "approval_id"),
)
