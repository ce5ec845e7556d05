"""Standing grants, emergency overrides and remembered denials.

Revision ID: 0005_grants_override
Revises: 0004_escalation
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the tables
of `clearance.store.schema` that this revision adds (`grants`, `overrides`,
`remembered_denials`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_grants_override"
down_revision: str | None = "0004_escalation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("scope_hash", sa.String(80), nullable=False),
        sa.Column("rules_key", sa.String(255), nullable=False),
        sa.Column("action", sa.String(255), nullable=False),
        sa.Column("scope_json", sa.Text(), nullable=False),
        sa.Column("grantor", sa.String(255), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
    )
    op.create_index("ix_grants_scope_hash", "grants", ["scope_hash"])
    op.create_table(
        "overrides",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("person", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("action", sa.String(255), nullable=False),
        sa.Column("binding_hash", sa.String(80), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("review_state", sa.String(16), nullable=False),
        sa.Column("reviewed_by", sa.String(255), nullable=True),
        sa.Column("reviewed_at", _time(), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "review_state IN ('open', 'justified', 'flagged')",
            name=op.f("ck_overrides_review_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_overrides")),
    )
    op.create_index("ix_overrides_person_created_at", "overrides", ["person", "created_at"])
    op.create_index("ix_overrides_binding_hash", "overrides", ["binding_hash"])
    op.create_index("ix_overrides_review_state", "overrides", ["review_state"])
    op.create_table(
        "remembered_denials",
        sa.Column("binding_hash", sa.String(80), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("denied_by", sa.String(255), nullable=True),
        sa.Column("denied_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("binding_hash", name=op.f("pk_remembered_denials")),
    )


def downgrade() -> None:
    op.drop_table("remembered_denials")
    op.drop_index("ix_overrides_review_state", table_name="overrides")
    op.drop_index("ix_overrides_binding_hash", table_name="overrides")
    op.drop_index("ix_overrides_person_created_at", table_name="overrides")
    op.drop_table("overrides")
    op.drop_index("ix_grants_scope_hash", table_name="grants")
    op.drop_table("grants")
