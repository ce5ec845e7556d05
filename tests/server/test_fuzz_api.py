"""`schemathesis run` against the OpenAPI document of a real server: no 5xx, ever."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearance.gateway import Gateway

from ..fixtures import ENTERPRISE, Keys, make_keys
from ..serverproc import ServerProcess


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Keys]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp}/c.db"
    setup = Gateway.open(ENTERPRISE, database_url=url)
    keys = make_keys(setup)
    asyncio.run(setup.aclose())
    server = ServerProcess(ENTERPRISE, url, tmp / "server.log")
    server.start()
    yield server, keys
    server.stop()


@pytest.mark.parametrize("who", ["agent", "admin", "anonymous"])
def test_schemathesis_finds_no_server_error(live: tuple[ServerProcess, Keys], who: str) -> None:
    """Generated requests of every shape, as an agent, an admin or nobody, never get a 5xx."""
    server, keys = live
    token = {"agent": keys.agent, "admin": keys.ivan}.get(who)
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency"
    cmd = [
        st,
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--seed",
        "7",
        "--request-timeout",
        "40",
        "--workers",
        "1",
        "--exclude-path-regex",
        "/wait$",
    ]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
