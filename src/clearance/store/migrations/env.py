"""Alembic environment: runs on the connection given in `config.attributes["connection"]`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from clearance.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "clearance migrations run on a given connection: use Database.migrate() "
            "or clearance.store.migrations.upgrade_head(conn)"
        )
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported")
    _run(connection)


_main()
