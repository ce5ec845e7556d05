"""Failed web sign-ins, counted per person and per client address (brute-force protection).

Revision ID: 0007_login_throttle
Revises: 0006_mfa_admin
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the
`login_throttle` table of `clearance.store.schema`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_login_throttle"
down_revision: str | None = "0006_mfa_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", _time(), nullable=False),
        sa.Column("locked_until", _time(), nullable=True),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_login_throttle")),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
