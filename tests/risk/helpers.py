"""Builders for the risk tests: requests, settings, and histories crafted event by event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clearance.policy.model import Request
from clearance.risk.activity import Activity
from clearance.risk.facts import facts_of
from clearance.risk.settings import RiskSettings, load_risk_settings
from clearance.risk.signals import History, compute

# A Tuesday, 14:00 UTC: inside default business hours.
T0 = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def request(
    action: str = "payments.transfer",
    *,
    amount: float | None = None,
    payee: str | None = None,
    user: str | None = "carol",
    agent: str | None = "billing-bot",
    geo: str | None = None,
    device: str | None = None,
    **params: Any,
) -> Request:
    p: dict[str, Any] = dict(params)
    if amount is not None:
        p["amount"] = amount
    if payee is not None:
        p["payee_id"] = payee
    actor = {k: v for k, v in (("user", user), ("agent", agent)) if v is not None}
    context = {k: v for k, v in (("geo", geo), ("device_id", device)) if v is not None}
    return Request(action, p, actor, context)


def settings(**section: Any) -> RiskSettings:
    return load_risk_settings(section)


def activity(*events: tuple[datetime, float | None], keep: int = 50) -> Activity:
    """An Activity with one request at each (time, amount)."""
    a = Activity()
    for when, amount in events:
        a.add(when.timestamp(), amount, keep_amounts=keep)
    return a


def risk(
    req: Request,
    now: datetime = T0,
    history: History | None = None,
    config: RiskSettings | None = None,
    zones: dict[str, str] | None = None,
) -> dict[str, Any]:
    cfg = config or RiskSettings()
    return compute(facts_of(req, cfg), history or History(), now, cfg, zones)
