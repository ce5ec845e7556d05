"""What one request says about itself, for the risk signals: who, what, from where, how much.

Pure. Every value here comes from the request as the caller sent it (`actor`, `params`,
`context`), read through the `risk:` settings (which parameter is the amount, the payee…).
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from .settings import RiskSettings

__all__ = ["Facts", "RequestLike", "facts_of", "ident", "key_part"]

#: Identifiers longer than this are stored as a digest (the key columns are 255 wide).
_MAX_KEY = 200
#: Larger amounts count as this much, so that the sums of a day stay finite.
MAX_AMOUNT = 1e15


class RequestLike(Protocol):
    """The parts of `clearance.policy.Request` the risk signals read."""

    @property
    def action(self) -> str: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def actor(self) -> dict[str, str]: ...
    @property
    def context(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class Facts:
    """The request's subjects and values; None where the request does not say. Read-only
    (not `frozen` only because a frozen dataclass costs twice as much to build, per check)."""

    action: str
    actor: str | None  # actor.user, else actor.agent (as the audit trail names the actor)
    user: str | None
    agent: str | None
    geo: str | None  # context.geo, upper-cased (a country code)
    device: str | None  # context.device_id
    payee: str | None  # the first of `payee_params` present, on one of `payment_actions`
    amount: float | None  # params.<amount_param>, when a finite number ≥ 0 (at most 1e15)
    bank_change_payee: str | None  # the payee whose bank details this request changes


def facts_of(request: RequestLike, settings: RiskSettings) -> Facts:
    """Read the facts of `request` (pure)."""
    actor_map = request.actor
    params = request.params
    context = request.context
    user = ident(actor_map.get("user"))
    agent = ident(actor_map.get("agent"))
    action = request.action
    pattern = settings.patterns.payee_bank_change
    payee: str | None = None
    bank_change: str | None = None
    changes, pays = pattern.roles(action)
    if not changes:
        if pays:
            payee = _first(params, settings.payee_params)
    elif _mentions(params.get(pattern.changes_param), pattern.changed_item):
        bank_change = _first(params, pattern.change_payee_params)
    geo = ident(context.get("geo"))
    return Facts(
        action,
        user or agent,
        user,
        agent,
        geo.upper() if geo else None,
        ident(context.get("device_id")),
        payee,
        _number(params.get(settings.amount_param)),
        bank_change,
    )


def key_part(value: str) -> str:
    """`value` as stored in a key column: itself, or a digest when too long."""
    if len(value) <= _MAX_KEY:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def ident(value: Any) -> str | None:
    """An identifier as the signals compare it: a string stripped and in Unicode's NFKC form
    (so that `Zoë` typed with a combining diaeresis, or in full-width letters, is the same
    payee as `Zoë`), an integer as its digits; None for anything else."""
    if isinstance(value, str):  # the common case first (ASCII is already in NFKC form)
        if not value.isascii():
            value = unicodedata.normalize("NFKC", value)
        value = value.strip()
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _first(params: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        found = ident(params.get(name))
        if found is not None:
            return found
    return None


def _number(value: Any) -> float | None:
    if type(value) is float:  # the common case first
        number = value
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, int | float | Decimal):
        try:
            number = float(value)
        except OverflowError:  # an integer of 400 digits: finite, and far above the cap
            return MAX_AMOUNT if value > 0 else None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None  # a negative amount would lower the 24 h total: it counts as none
    return min(number, MAX_AMOUNT)


def _mentions(changes: Any, item: str) -> bool:
    """Whether a `changes` parameter (a list, a mapping or one string) names `item`."""
    if isinstance(changes, str):
        return changes == item
    if isinstance(changes, list | tuple | set | frozenset | Mapping):
        return item in changes
    return False
