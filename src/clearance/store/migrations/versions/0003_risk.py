"""Risk signals: per-subject summaries (counters, first sightings, payee bank changes).

Revision ID: 0003_risk
Revises: 0002_channels
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the table of
`clearance.risk.tables`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_risk"
down_revision: str | None = "0002_channels"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "risk_state",
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("item", sa.String(255), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("subject", "kind", "item", name=op.f("pk_risk_state")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("risk_state")
