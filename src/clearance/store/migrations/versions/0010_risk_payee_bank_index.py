"""Risk signals: a partial index of the payees whose bank details changed.

Revision ID: 0010_risk_payee_bank_index
Revises: 0009_risk_folds
Create Date: 2026-12-07

Exactly the `ix_risk_state_payee_bank` index of `clearance.risk.tables`: only the
`payee_bank` rows are in it, so a process can read them all at once and keep them (a payment
to any other payee then needs no read to know that its bank details did not change), and no
other row's write touches it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_risk_payee_bank_index"
down_revision: str | None = "0009_risk_folds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_risk_state_payee_bank",
        "risk_state",
        ["subject"],
        sqlite_where=sa.text("kind = 'payee_bank'"),
        postgresql_where=sa.text("kind = 'payee_bank'"),
    )


def downgrade() -> None:
    op.drop_index("ix_risk_state_payee_bank", table_name="risk_state")
