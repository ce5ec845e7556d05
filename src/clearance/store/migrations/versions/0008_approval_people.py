"""Who may vote on each approval, indexed by person (the web inbox's lookup).

Revision ID: 0008_approval_people
Revises: 0007_login_throttle
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the
`approval_people` table of `clearance.store.schema`, filled from the approvals already stored
(their approvers, held-back `pick` reserves and delegates).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_approval_people"
down_revision: str | None = "0007_login_throttle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "approval_people",
        sa.Column("person_id", sa.String(255), nullable=False),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("person_id", "approval_id", name=op.f("pk_approval_people")),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, plan_json, routing_json FROM approvals")).all()
    batch: list[dict[str, str]] = []
    for approval_id, plan, routing in rows:
        people: set[str] = set()
        plan = (json.loads(plan) if isinstance(plan, str) else plan) or {}
        for stage in plan.get("stages", ()):
            for req in stage.get("all_of") or [stage]:
                people.update(req.get("approvers", ()))
                people.update(req.get("reserve", ()))
        routing = (json.loads(routing) if isinstance(routing, str) else routing) or {}
        people.update(str(pair[1]) for pair in routing.get("delegations", ()))
        batch.extend({"person_id": p, "approval_id": str(approval_id)} for p in people)
        if len(batch) >= 5000:
            op.bulk_insert(table, batch)
            batch = []
    if batch:
        op.bulk_insert(table, batch)


def downgrade() -> None:
    op.drop_table("approval_people")
