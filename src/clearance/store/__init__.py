"""The store: SQLAlchemy Core tables and migrations, one code path for SQLite and PostgreSQL."""

from clearance.store.database import Database, open_database
from clearance.store.errors import StoreUnavailable, translate_errors

__all__ = ["Database", "StoreUnavailable", "open_database", "translate_errors"]
