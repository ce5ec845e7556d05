"""Alembic migrations for the store, shipped inside the package and run programmatically.

No `alembic.ini` is needed: `upgrade_head(conn)` builds the configuration in code and runs
the migrations on the caller's connection (inside the caller's transaction). To write a new
migration, run alembic with `script_location` pointing here (see `alembic_config()`), e.g.::

    python -c "from alembic import command; from clearance.store.migrations import \
alembic_config; command.revision(alembic_config(), 'add x', rev_id='0002_add_x')"
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade_head"]

_HERE = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for these migrations, optionally bound to `connection`."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration's revision id (there is exactly one head: a test checks it)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError("no migrations found")
    return head


def upgrade_head(connection: Connection) -> None:
    """Upgrade the schema on `connection` to the newest revision (a no-op when there)."""
    command.upgrade(alembic_config(connection), "head")


def current_revision(connection: Connection) -> str | None:
    """The revision `connection`'s database is at (None when never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()
