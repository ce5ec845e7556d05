"""A policy with second-factor stages, and a gateway on it for each database."""

from __future__ import annotations

from pathlib import Path

import pyotp

from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import mfa
from clearance.policy import Request
from clearance.testing import FrozenClock

POLICY = """\
version: 1
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers]}
    - {id: bob, name: Bob Ortiz, groups: [managers]}
    - {id: carol, name: Carol Diaz, groups: [staff]}
    - {id: dana, name: Dana Kim, groups: [finance-directors]}
    - {id: erin, name: Erin Park, groups: [finance-directors]}
policies:
  default: deny
  rules:
    - id: payments-huge
      description: Payments over $50,000 need a manager, then a finance director with a code
      actions: [payments.transfer]
      when: params.amount > 50000
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
          - {name: finance-director, approvers: [group:finance-directors], mfa: totp}
    - id: wire-abroad
      description: Wires are approved only from the US
      actions: [payments.wire]
      effect: approve
      require_context: {approver_geo: [US]}
      approval: {stages: [{name: manager, approvers: [group:managers]}]}
    - id: keys-rotate
      description: Rotating signing keys needs a security key
      actions: [keys.rotate]
      effect: approve
      approval: {stages: [{name: security, approvers: [group:managers], mfa: webauthn}]}
server:
  geo_header: X-Client-Geo
  public_url: http://localhost:8750
  mfa: {fresh_for: 300}
"""

HUGE = Request(
    "payments.transfer", params={"amount": 60000}, actor={"user": "carol", "agent": "bot"}
)
WIRE = Request("payments.wire", params={"amount": 10}, actor={"user": "carol", "agent": "bot"})
ROTATE = Request("keys.rotate", params={}, actor={"user": "carol", "agent": "bot"})


def open_mfa_gateway(
    tmp_path: Path, db_url: str, clock: FrozenClock, text: str = POLICY
) -> Gateway:
    path = tmp_path / "clearance.yaml"
    path.write_text(text, encoding="utf-8")
    gateway = Gateway.open(path, database_url=db_url, clock=clock)
    gateway.approvals.mfa_settings = mfa.settings_provider(lambda: gateway.policy.settings)
    return gateway


async def enrol_totp(gateway: Gateway, person: str, clock: FrozenClock) -> pyotp.TOTP:
    """Enrol and confirm a TOTP factor for `person` (the confirming code is used up)."""
    settings = gateway.approvals.mfa_settings()

    def work(tx: WriteTx) -> str:
        started = mfa.start_totp(tx.conn, person, clock(), settings)
        totp = pyotp.TOTP(started.secret)
        mfa.confirm_totp(tx.conn, person, totp.at(clock()), clock(), settings)
        return started.secret

    return pyotp.TOTP(await gateway.writer.run(work))
