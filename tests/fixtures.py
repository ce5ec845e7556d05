"""Shared builders for gateway tests: a gateway on a temporary SQLite, people, keys."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from clearance.gateway import Gateway
from clearance.identity import keys, passwords

ROOT = Path(__file__).resolve().parents[1]
ENTERPRISE = ROOT / "examples" / "enterprise" / "clearance.yaml"


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
