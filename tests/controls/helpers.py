"""A policy with a standing-grant rule, break-glass settings and remembered denials."""

from __future__ import annotations

from pathlib import Path

from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.testing import FrozenClock

POLICY = """
version: 1
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers]}
    - {id: bob, name: Bob Ortiz, groups: [managers]}
    - {id: carol, name: Carol Diaz, groups: [staff]}
    - {id: dana, name: Dana Kim, groups: [finance-directors]}
    - {id: frank, name: Frank Li, groups: [security], roles: [emergency]}
    - {id: gina, name: Gina Wu, groups: [security], roles: [emergency]}
    - {id: sam, name: Sam Rivera, groups: [security]}
    - {id: ivan, name: Ivan Petrov, groups: [admins], roles: [admin]}
policies:
  default: deny
  rules:
    - id: vendor-payment
      description: Vendor payments up to $5,000 need a manager
      actions: [payments.transfer]
      when: params.amount <= 5000
      effect: approve
      approval: {approvers: [group:managers]}
      allow_always: {max_ttl: 30d, scope: [actor.agent, params.payee_id]}
    - id: large-payment
      actions: [payments.transfer]
      when: params.amount > 5000
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
          - {name: director, approvers: [group:finance-directors]}
    - id: embargo
      actions: [payments.transfer]
      when: context.geo == 'KP'
      on_error: skip
      effect: deny
    - id: sanctioned
      actions: [payments.transfer]
      when: params.payee_id == 'evil'
      effect: block
      alert: [group:security]
    - id: small-reads
      actions: [data.read]
      effect: allow
controls:
  override: {role: emergency, review_by: [group:security], rate_limit: 2/24h}
  remember_denials: 1h
"""


def write_policy(tmp_path: Path, text: str = POLICY) -> Path:
    path = tmp_path / "clearance.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def open_gateway(tmp_path: Path, db_url: str, clock: FrozenClock) -> Gateway:
    return Gateway.open(write_policy(tmp_path), database_url=db_url, clock=clock)


def pay(
    amount: int = 1200,
    payee: str = "acme",
    user: str = "carol",
    agent: str = "billing-bot",
    **context: str,
) -> Request:
    return Request(
        "payments.transfer",
        {"amount": amount, "payee_id": payee},
        {"user": user, "agent": agent},
        dict(context),
    )


async def audit_kinds(gateway: Gateway) -> list[str]:
    from clearance.audit.export import iter_entries

    return [e.kind for e in iter_entries(gateway.db)]


async def audit_data(gateway: Gateway, kind: str) -> list[dict[str, object]]:
    from clearance.audit.export import iter_entries

    return [dict(e.data) for e in iter_entries(gateway.db) if e.kind == kind]
