"""Shared builders for gateway tests: a gateway on a temporary SQLite, people, keys."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from clearance.gateway import Gateway
from clearance.identity import keys, passwords

ROOT = Path(__file__).resolve().parents[1]
ENTERPRISE = ROOT / "examples" / "enterprise" / "clearance.yaml"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Keys:
    agent: str
    other_agent: str
    alice: str
    bob: str
    carol: str
    dana: str
    ivan: str


def open_gateway(tmp_path: Path, *, url: str | None = None, clock: object = None) -> Gateway:
    kwargs = {"clock": clock} if clock is not None else {}
    return Gateway.open(ENTERPRISE, database_url=url or f"sqlite:///{tmp_path}/c.db", **kwargs)  # type: ignore[arg-type]


def make_keys(gateway: Gateway) -> Keys:
    now = gateway.clock()

    def work(tx: object) -> Keys:
        conn = tx.conn  # type: ignore[attr-defined]

        def person(pid: str) -> str:
            return keys.create_key(conn, kind="person", subject=pid, now=now).token

        return Keys(
            agent=keys.create_key(conn, kind="agent", subject="billing-bot", now=now).token,
            other_agent=keys.create_key(conn, kind="agent", subject="other-bot", now=now).token,
            alice=person("alice"),
            bob=person("bob"),
            carol=person("carol"),
            dana=person("dana"),
            ivan=person("ivan"),
        )

    return gateway.writer.run_sync(work)


def set_passwords(gateway: Gateway, password: str = "correct-horse", *people: str) -> None:
    now = gateway.clock()

    def work(tx: object) -> None:
        for pid in people:
            passwords.set_password(tx.conn, pid, password, now)  # type: ignore[attr-defined]

    gateway.writer.run_sync(work)


@contextlib.asynccontextmanager
async def policy_gateway(tmp_path: Path, policy: str, clock: object) -> AsyncIterator[Gateway]:
    """A gateway on `policy` (YAML text, written to p.yaml) and a SQLite file of the test's
    own, closed after."""
    path = tmp_path / "p.yaml"
    path.write_text(policy)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)  # type: ignore[arg-type]
    try:
        yield gateway
    finally:
        await gateway.aclose()


def csrf_of(html: str) -> str:
    """The CSRF token a web inbox page carries in its forms."""
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@contextlib.asynccontextmanager
async def inbox_as(
    gw: Gateway, person: str, password: str, *, set_password: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the web inbox (the app on `gw`, without scheduler or channels), signed in
    as `person` with `password` (set first unless `set_password` is false)."""
    from clearance.server.app import create_app

    if set_password:
        now = gw.clock()
        await gw.writer.run(lambda tx: passwords.set_password(tx.conn, person, password, now))
    app = create_app(gw, scheduler=False, channels=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        login = await client.get("/ui/login")
        signed = await client.post(
            "/ui/login",
            data={"person": person, "password": password, "csrf_token": csrf_of(login.text)},
        )
        assert signed.status_code == 303, signed.text
        yield client
