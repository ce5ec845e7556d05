"""Second factors for approvers and four-eyes administrative changes.

Revision ID: 0006_mfa_admin
Revises: 0005_grants_override
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the tables
of `clearance.store.mfa_admin_tables`, and two columns of `votes` (the second factor and the
location a vote came with).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_mfa_admin"
down_revision: str | None = "0005_grants_override"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mfa_factors",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(255), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("credential_id", sa.String(512), nullable=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("sign_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", _time(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("confirmed_at", _time(), nullable=True),
        sa.Column("last_used_at", _time(), nullable=True),
        sa.CheckConstraint("kind IN ('totp', 'webauthn')", name=op.f("ck_mfa_factors_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_factors")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_mfa_factors_credential_id")),
    )
    op.create_index(op.f("ix_mfa_factors_person_id"), "mfa_factors", ["person_id"])
    op.create_table(
        "mfa_challenges",
        sa.Column("challenge", sa.String(128), nullable=False),
        sa.Column("person_id", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("used_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("challenge", name=op.f("pk_mfa_challenges")),
    )
    op.create_table(
        "session_factors",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(255), nullable=False),
        sa.Column("method", sa.String(16), nullable=True),
        sa.Column("verified_at", _time(), nullable=True),
        sa.Column("geo", sa.String(64), nullable=True),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_session_factors")),
    )
    op.create_table(
        "admin_changes",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("base_hash", sa.String(80), nullable=False),
        sa.Column("new_text", sa.Text(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("op_json", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("decided_at", _time(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'applied', 'rejected', 'expired', 'stale', 'failed')",
            name=op.f("ck_admin_changes_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_changes")),
    )
    op.create_index("ix_admin_changes_approval_id", "admin_changes", ["approval_id"])
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("factor", sa.String(16), nullable=True))
        batch.add_column(sa.Column("geo", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.drop_column("geo")
        batch.drop_column("factor")
    op.drop_index("ix_admin_changes_approval_id", table_name="admin_changes")
    op.drop_table("admin_changes")
    op.drop_table("session_factors")
    op.drop_table("mfa_challenges")
    op.drop_index(op.f("ix_mfa_factors_person_id"), table_name="mfa_factors")
    op.drop_table("mfa_factors")
