from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database URL of the test's own."""
    return f"sqlite:///{tmp_path}/c.db"
