"""Fixtures every test package may use: a gateway on a temporary SQLite, keys, an API client.

Database fixtures for both SQLite and PostgreSQL (`db_url`, `pg_url`, …) live in
`tests/conftest_db.py`, registered here as a plugin.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from clearance.gateway import Gateway
from clearance.server.app import create_app
from clearance.testing import FrozenClock

from .fixtures import Keys, make_keys, open_gateway

if importlib.util.find_spec("tests.conftest_db") is not None:
    pytest_plugins = ["tests.conftest_db"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def gateway(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gw = open_gateway(tmp_path, clock=clock)
    yield gw
    await gw.aclose()


@pytest.fixture
def keys(gateway: Gateway) -> Keys:
    return make_keys(gateway)


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway, scheduler=False, inbox=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
