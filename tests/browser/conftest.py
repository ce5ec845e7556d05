"""Fixtures for browser tests: a real `clearance` server in a subprocess and headless Chromium.

Chromium is the Debian package at /usr/bin/chromium, driven by Playwright. When either is
missing the tests are skipped, unless CLEARANCE_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
import pytest

from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import keys, passwords

ROOT = Path(__file__).resolve().parents[2]
ENTERPRISE = ROOT / "examples" / "enterprise" / "clearance.yaml"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"
T = TypeVar("T")
START_TIMEOUT_S = 30.0

SERVE = (
    "import sys\n"
    "from clearance.server.run import serve\n"
    "serve([sys.argv[1]], host='127.0.0.1', port=int(sys.argv[2]), database_url=sys.argv[3])\n"
)


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the browser is required (CLEARANCE_REQUIRE_BROWSER=1)."""
    message = f"Chromium not available at {CHROMIUM}: {reason}"
    if os.environ.get("CLEARANCE_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    """A running server: its base URL, an agent API key, and the log it writes."""

    url: str
    agent_token: str
    database_url: str
    log: Path


def _write(database_url: str, work: Callable[[WriteTx, datetime], T]) -> T:
    """Run `work(tx, now)` in one writer unit on the database (migrated first), outside the
    server process."""
    gateway = Gateway.open(ENTERPRISE, database_url=database_url)
    now = datetime.now(UTC)
    try:
        return gateway.writer.run_sync(lambda tx: work(tx, now))
    finally:
        gateway.writer.close()
        gateway.db.dispose()


def _prepare(database_url: str) -> str:
    """Migrate the database, give alice a password and create billing-bot's key."""

    def work(tx: WriteTx, now: datetime) -> str:
        passwords.set_password(tx.conn, "alice", PASSWORD, now)
        return keys.create_key(tx.conn, kind="agent", subject="billing-bot", now=now).token

    return _write(database_url, work)


def give_password(server: LiveServer, person: str) -> None:
    """Give `person` the test password, in the running server's database."""
    _write(
        server.database_url,
        lambda tx, now: passwords.set_password(tx.conn, person, PASSWORD, now),
    )


def _start(database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server and wait for /healthz. A port taken between choosing it and binding
    it (other test runs share the machine) makes the child exit: try again on another."""
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(ENTERPRISE), str(port), database_url],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)  # waiting for a child process to listen: nothing to await
    raise RuntimeError(f"the server exited early three times:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """`clearance.server.run.serve` in a subprocess on a free port, stopped afterwards."""
    database_url = f"sqlite:///{tmp_path}/clearance.db"
    token = _prepare(database_url)
    log = tmp_path / "server.log"
    proc, url = _start(database_url, log)
    try:
        yield LiveServer(url, token, database_url, log)
    finally:
        _stop(proc)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium from /usr/bin/chromium (skipped when it or Playwright is missing)."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable("no executable there")
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        unavailable(f"Playwright is not installed ({exc})")
    async with async_playwright() as pw:
        try:
            launched = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except Exception as exc:
            unavailable(f"it did not start ({str(exc).strip().splitlines()[0]})")
        try:
            yield launched
        finally:
            await launched.close()
