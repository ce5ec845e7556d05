"""Fixtures for the integration tests: an embedded gate on the shared test policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clearance import Gate
from clearance.sdk.local import LocalGate

from .helpers import POLICY


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[LocalGate]:
    g = Gate.local(POLICY, database_url=f"sqlite:///{tmp_path}/c.db")
    yield g
    await g.aclose()
