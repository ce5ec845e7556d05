"""Escalation, reminders and delegation: scheduled jobs and delegates.

Revision ID: 0004_escalation
Revises: 0003_risk
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the tables
of `clearance.store.schema` that this revision adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_escalation"
down_revision: str | None = "0003_risk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("routing_json", sa.Text(), nullable=True))
    op.create_table(
        "approval_timers",
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("due_at", _time(), nullable=False),
        sa.Column("locked_by", sa.String(128), nullable=True),
        sa.Column("locked_until", _time(), nullable=True),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_approval_timers")),
    )
    op.create_index("ix_approval_timers_due_at", "approval_timers", ["due_at"])
    op.create_table(
        "routing_cursors",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_routing_cursors")),
    )
    op.create_table(
        "routing_picks",
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("stage_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("person", sa.String(255), nullable=False),
        sa.Column("picked_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint(
            "approval_id", "stage_index", "person", name=op.f("pk_routing_picks")
        ),
    )
    op.create_index("ix_routing_picks_person", "routing_picks", ["person"])
    op.create_table(
        "delegations",
        sa.Column("delegator", sa.String(255), nullable=False),
        sa.Column("delegate", sa.String(255), nullable=False),
        sa.Column("starts_at", _time(), nullable=False),
        sa.Column("until", _time(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("delegator", name=op.f("pk_delegations")),
    )


def downgrade() -> None:
    op.drop_table("delegations")
    op.drop_index("ix_routing_picks_person", table_name="routing_picks")
    op.drop_table("routing_picks")
    op.drop_table("routing_cursors")
    op.drop_index("ix_approval_timers_due_at", table_name="approval_timers")
    op.drop_table("approval_timers")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("routing_json")
