"""Channels: deliveries of approval requests, opaque button tokens, processed platform events.

Revision ID: 0002_channels
Revises: 0001_initial
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_channels"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _serial() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", _serial(), autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("person", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("stage_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_ref", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.CheckConstraint("status IN ('sent', 'failed')", name=op.f("ck_deliveries_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "approval_id",
            "person",
            "channel",
            "stage_index",
            name=op.f("uq_deliveries_approval_id_person_channel_stage_index"),
        ),
    )
    op.create_index("ix_deliveries_approval_id", "deliveries", ["approval_id"])
    op.create_table(
        "channel_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("person", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("used_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_channel_tokens")),
    )
    op.create_table(
        "channel_events",
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "event_id", name=op.f("pk_channel_events")),
    )


def downgrade() -> None:
    op.drop_table("channel_events")
    op.drop_table("channel_tokens")
    op.drop_index("ix_deliveries_approval_id", table_name="deliveries")
    op.drop_table("deliveries")
