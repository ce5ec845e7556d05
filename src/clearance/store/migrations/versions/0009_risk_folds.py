"""Risk signals written behind the check: how far each audit chain is counted.

Revision ID: 0009_risk_folds
Revises: 0008_approval_people
Create Date: 2026-12-07

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the
`risk_folds` table of `clearance.risk.tables`. Until now every check updated `risk_state` in
its own transaction, so the rows already count every check of every chain: each existing
chain starts at its head (its older entries carry no journal to fold anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_risk_folds"
down_revision: str | None = "0008_approval_people"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_folds",
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name=op.f("pk_risk_folds")),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO risk_folds (chain_id, seq, updated_at) "
        "SELECT chain_id, seq, updated_at FROM audit_heads"
    )


def downgrade() -> None:
    op.drop_table("risk_folds")
