"""The shared database fixtures (tests/conftest_db.py), made available to these tests.

Imported rather than listed in `pytest_plugins`: pytest refuses `pytest_plugins` in a conftest
below the top level when the whole suite runs. Once tests/conftest.py lists
"tests.conftest_db" in its `pytest_plugins`, this file can go.
"""

from tests.conftest_db import database, db_url, pg_server, pg_url, sqlite_url

__all__ = ["database", "db_url", "pg_server", "pg_url", "sqlite_url"]
