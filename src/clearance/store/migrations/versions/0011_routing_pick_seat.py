"""Stage routing: whose seat each `least_loaded` pick fills.

Revision ID: 0011_routing_pick_seat
Revises: 0010_risk_payee_bank_index
Create Date: 2026-12-07

Exactly the `seat` column of `routing_picks` in `clearance.store.schema`: the approver a pick
chose, beside `person`, whom the request reaches (their delegate in force, or themselves).
When the approver votes in their own seat, the delegate's pick stops counting as load. Picks
recorded before have no seat: they count until their person votes, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_routing_pick_seat"
down_revision: str | None = "0010_risk_payee_bank_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("routing_picks", sa.Column("seat", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routing_picks") as batch:
        batch.drop_column("seat")
