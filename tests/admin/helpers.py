"""A policy with three administrators, a gateway app on it, and personal keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import keys
from clearance.server.app import create_app
from clearance.testing import FrozenClock

POLICY = """\
# The admin test policy: comments like this one survive directory edits.
version: 1
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers]}
    - id: bob
      name: Bob Ortiz
      groups: [managers]
    - {id: carol, name: Carol Diaz, groups: [staff]}
    - {id: ivan, name: Ivan Petrov, roles: [admin]}
    - {id: judy, name: Judy Chen, roles: [admin]}
    - {id: ken, name: Ken Adams, roles: [admin, auditor]}
policies:
  default: deny
  rules:
    - id: payments-medium
      actions: [payments.transfer]
      when: params.amount >= 500
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
"""

NEW_RULE = """\
    - id: reports-read
      actions: [reports.read]
      effect: allow
"""


@dataclass
class Admin:
    gateway: Gateway
    app: FastAPI
    client: httpx.AsyncClient
    path: Path
    tokens: dict[str, str]

    def auth(self, person: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[person]}"}

    async def settled(self) -> None:
        await self.app.state.admin_changes.wait_idle()


@asynccontextmanager
async def admin_env(
    tmp_path: Path, db_url: str, clock: FrozenClock, text: str = POLICY
) -> AsyncIterator[Admin]:
    path = tmp_path / "clearance.yaml"
    path.write_text(text, encoding="utf-8")
    gateway = Gateway.open(path, database_url=db_url, clock=clock)
    now = clock()

    def make(tx: WriteTx) -> dict[str, str]:
        people = ("alice", "bob", "carol", "ivan", "judy", "ken")
        return {
            p: keys.create_key(tx.conn, kind="person", subject=p, now=now).token for p in people
        }

    tokens = await gateway.writer.run(make)
    app = create_app(gateway, scheduler=False, inbox=True, channels=False)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Admin(gateway, app, client, path, tokens)
    finally:
        await app.state.admin_changes.wait_idle()
        await gateway.aclose()
