from __future__ import annotations

from pathlib import Path

import pytest

from clearance.store.database import open_database


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database URL of the test's own, created and migrated (as a gateway that has
    run there leaves it): the commands that only look at what is stored refuse a missing one."""
    url = f"sqlite:///{tmp_path}/c.db"
    database = open_database(url)
    try:
        database.migrate()
    finally:
        database.dispose()
    return url
