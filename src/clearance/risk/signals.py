"""The risk signals of one request: pure arithmetic over its facts and a history snapshot.

No I/O and no clock: `now` is passed in, and `History` is what the store read for this
request (`clearance.risk.journal.Journal.history`). `compute` returns the `risk` map policies see:

    off_hours            bool   outside business hours, working days or on a holiday, in the
                                person's (else the agent's, else the organisation's) time zone
    velocity_1m/1h/24h   int    requests by this actor for this action in each window, this
                                one included (0 when the request names no actor)
    agent_velocity_…     int    the same for the agent (0 without one)
    amount_24h           float  this actor's amounts for this action in 24 h, this one included
                                (denied and blocked requests' amounts are not kept)
    amount_anomaly       float  robust z-score of this amount against the actor's recent
                                amounts for this action; 0.0 below `anomaly.min_history`
    new_geo/new_device/new_payee  bool  first time, within `retention_days`, that this actor
                                is seen from this country / on this device / paying this payee
    patterns             list   names of the patterns that match: payee_bank_change,
                                denial_burst
    score                int    0–100: Σ weight of each firing signal, capped at `score_cap`
    reasons              list   one plain-language sentence per firing signal

Which signals *fire* (count towards the score and get a reason): `off_hours`; `velocity` when
any window of the actor or the agent has more requests than its limit (`velocity_limits`,
`agent_velocity_limits`); `amount_24h` above `amount_24h_limit`; `amount_anomaly` at or above
`anomaly.threshold`; each `new_*`; each pattern.

The amount anomaly is the modified z-score of Iglewicz and Hoaglin: 0.6745·(x − median) / MAD
over the ring of recent amounts (positive when larger than usual). When the MAD is 0 (more
than half the amounts are equal) the mean absolute deviation takes its place, scaled
by 1.2533 so that both estimate the same spread; when that is 0 too (every amount equal), 1% of
the median's size stands in for the MAD (1.0 if the median is 0): after a run of 100s, 101
scores 0.67, 106 scores 4.05 and 5,000 scores 3,305.05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..policy.model import DEFAULT_RISK
from .activity import Activity, WindowTotals
from .facts import Facts
from .settings import RiskSettings, VelocityLimits

__all__ = ["History", "ago", "compute", "local_time_zone", "neutral_risk", "robust_z"]

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WINDOW_WORDS = (("1m", "minute"), ("1h", "hour"), ("24h", "24 hours"))


@dataclass(slots=True)
class History:
    """What the store knows about this request's subjects, read just before it is assessed.

    Times are epoch seconds. `rows` (store key → (version, value)) lets `record` detect a
    concurrent update of the rows it read; the signals never read it. Read-only, like the
    values in it (they may be shared with the store's cache).
    """

    actor_activity: Activity | None = None
    agent_activity: Activity | None = None
    geo_seen_at: float | None = None
    device_seen_at: float | None = None
    payee_seen_at: float | None = None
    payee_bank_changed_at: float | None = None
    agent_denials: tuple[float, ...] = ()
    rows: Mapping[tuple[str, str, str], tuple[int, Any]] = field(default_factory=dict)
    keys: Any = None  # the store's keys of these rows, by role (set by the store's `read`)


EMPTY_HISTORY = History()


def neutral_risk() -> dict[str, Any]:
    """The `risk` map of a request with nothing to say: every signal at rest, score 0 (the
    policy language's `DEFAULT_RISK`, so a rule reads the same keys with or without signals)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in DEFAULT_RISK.items()}


def local_time_zone(facts: Facts, settings: RiskSettings, time_zones: Mapping[str, str]) -> str:
    """The time zone the request's hours are judged in: the person's, the agent's, the org's."""
    if facts.user is not None and facts.user in time_zones:
        return time_zones[facts.user]
    if facts.agent is not None and facts.agent in time_zones:
        return time_zones[facts.agent]
    return settings.time_zone


def compute(
    facts: Facts,
    history: History,
    now: datetime,
    settings: RiskSettings,
    time_zones: Mapping[str, str] | None = None,
    *,
    counted: bool = False,
) -> dict[str, Any]:
    """The `risk` map for a request with `facts`, given `history`, at `now` (aware).

    `counted`: the request is already in `history` (an approved call being released, checked
    before): the velocity windows and the 24 h amount do not count it a second time."""
    zones = settings.time_zones if time_zones is None else time_zones
    ts = now.timestamp()
    weights = settings.effective_weights
    reasons: list[str] = []
    fired: list[str] = []

    # -- off hours -----------------------------------------------------------------------------
    zone_name = local_time_zone(facts, settings, zones)
    off_reason = _off_hours(now, zone_name, settings)
    if off_reason is not None:
        fired.append("off_hours")
        reasons.append(off_reason)

    # -- velocity and the 24 h amount ----------------------------------------------------------
    amount = facts.amount
    velocity = agent_velocity = (0, 0, 0)
    amount_24h = 0.0
    this = 0 if counted else 1
    if facts.actor is not None:
        totals = history.actor_activity.totals(ts) if history.actor_activity else _NONE
        velocity = (totals[0] + this, totals[1] + this, totals[2] + this)
        amount_24h = totals[3] + (amount if amount is not None and this else 0.0)
    if facts.agent is not None:
        totals = history.agent_activity.totals(ts) if history.agent_activity else _NONE
        agent_velocity = (totals[0] + this, totals[1] + this, totals[2] + this)
    over = _over(velocity, settings.velocity_limits)
    agent_over = _over(agent_velocity, settings.agent_velocity_limits)
    if over or agent_over:
        fired.append("velocity")
        if over:
            reasons.append(_velocity_reason(str(facts.actor), facts.action, over))
        if agent_over:
            reasons.append(_velocity_reason(f"agent {facts.agent}", facts.action, agent_over))
    limit = settings.amount_24h_limit
    if limit is not None and amount_24h > limit:
        fired.append("amount_24h")
        reasons.append(
            f"{facts.actor}'s {facts.action} amounts in the last 24 hours total "
            f"{_money(amount_24h)}, above {_money(limit)}"
        )

    # -- amount anomaly ------------------------------------------------------------------------
    anomaly = 0.0
    if amount is not None and facts.actor and history.actor_activity is not None:
        ring = history.actor_activity.amounts
        if len(ring) >= settings.anomaly.min_history:
            anomaly, typical = robust_z(amount, ring)
            if anomaly >= settings.anomaly.threshold:
                fired.append("amount_anomaly")
                reasons.append(
                    f"the amount {_money(amount)} is unusually large for {facts.actor}'s "
                    f"{facts.action} (typically {_money(typical)}; robust z-score {anomaly:g})"
                )

    # -- first sightings -----------------------------------------------------------------------
    new = {"new_geo": False, "new_device": False, "new_payee": False}
    if facts.actor is not None:
        retention = settings.retention_days * 86400.0
        for name, value, seen_at, words in (
            ("new_geo", facts.geo, history.geo_seen_at, _NEW_GEO),
            ("new_device", facts.device, history.device_seen_at, _NEW_DEVICE),
            ("new_payee", facts.payee, history.payee_seen_at, _NEW_PAYEE),
        ):
            if value is not None and _is_new(seen_at, ts, retention):
                new[name] = True
                fired.append(name)
                days = _days(settings.retention_days)
                reasons.append(f"{facts.actor} " + words.format(value=value, days=days))

    # -- patterns ------------------------------------------------------------------------------
    patterns: list[str] = []
    bank = settings.patterns.payee_bank_change
    changed = history.payee_bank_changed_at
    if (
        facts.payee is not None
        and changed is not None
        and ts - changed < bank.days * 86400.0
        and bank.is_payment_action(facts.action)
    ):
        patterns.append("payee_bank_change")
        fired.append("payee_bank_change")
        reasons.append(
            f"the bank details of payee {facts.payee} were changed {ago(ts - changed)}, "
            f"less than {bank.days:g} days before this payment"
        )
    burst = settings.patterns.denial_burst
    if facts.agent is not None and history.agent_denials:
        window = burst.minutes * 60.0
        recent = sum(1 for t in history.agent_denials if ts - t < window)
        if recent >= burst.count:
            patterns.append("denial_burst")
            fired.append("denial_burst")
            reasons.append(
                f"agent {facts.agent} had {recent} requests denied in the last "
                f"{burst.minutes:g} minutes"
            )

    score = sum(weights[name] for name in fired)
    return {
        "off_hours": off_reason is not None,
        "velocity_1m": velocity[0],
        "velocity_1h": velocity[1],
        "velocity_24h": velocity[2],
        "agent_velocity_1m": agent_velocity[0],
        "agent_velocity_1h": agent_velocity[1],
        "agent_velocity_24h": agent_velocity[2],
        "amount_24h": round(amount_24h, 6),
        "amount_anomaly": anomaly,
        "new_geo": new["new_geo"],
        "new_device": new["new_device"],
        "new_payee": new["new_payee"],
        "patterns": patterns,
        "score": int(min(settings.score_cap, round(score))),
        "reasons": reasons,
    }


def robust_z(value: float, history: Sequence[float]) -> tuple[float, float]:
    """(modified z-score of `value` against `history`, rounded to 2 places; the median)."""
    med = _median(sorted(history))
    deviations = sorted([abs(x - med) for x in history])
    mad = _median(deviations)
    if mad > 0:
        z = 0.6745 * (value - med) / mad
    else:
        mean_ad = sum(deviations) / len(deviations)
        if mean_ad > 0:
            z = (value - med) / (1.2533 * mean_ad)
        else:
            spread = abs(med) * 0.01 if med != 0 else 1.0
            z = 0.6745 * (value - med) / spread
    return round(z, 2), med


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    half = n // 2
    return ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2


# ---------------------------------------------------------------------------------------------


def off_hours_reason(now: datetime, settings: RiskSettings) -> str | None:
    """Why `now` is off hours for the organisation (`time_zone`), or None within hours."""
    return _off_hours(now, settings.time_zone, settings)


def _off_hours(now: datetime, zone_name: str, settings: RiskSettings) -> str | None:
    """Why `now` is off hours in `zone_name`, or None when it is within business hours."""
    zone = _ZONES.get(zone_name)
    if zone is None:
        zone = _ZONES[zone_name] = settings.zone_for(zone_name)
    local = now.astimezone(zone)
    weekday = local.weekday()
    day = local.date()
    hours = settings.business_hours
    holiday = day in settings.holidays
    working = weekday in settings.working_weekdays
    if not holiday and working and hours.start <= local.time() < hours.end:
        return None
    clock = local.strftime("%H:%M")
    name = _DAY_NAMES[weekday]
    if holiday:
        return f"requested on a holiday ({name} {day.isoformat()} {clock} in {zone_name})"
    if not working:
        return f"requested outside working days ({name} {clock} in {zone_name})"
    return (
        f"requested outside business hours ({name} {clock} in {zone_name}; hours are "
        f"{hours.start.strftime('%H:%M')} to {hours.end.strftime('%H:%M')})"
    )


_ZONES: dict[str, ZoneInfo] = {}


_NONE = WindowTotals()
_NEW_GEO = "has not made a request from {value} in the last {days}"
_NEW_DEVICE = "is on a device not seen in the last {days} ({value})"
_NEW_PAYEE = "has not paid {value} in the last {days}"


def _over(counts: tuple[int, int, int], limits: VelocityLimits) -> list[tuple[str, int, int]]:
    """The windows whose count is above its limit, as (window words, count, limit)."""
    per_minute, per_hour, per_day = limits.per_minute, limits.per_hour, limits.per_day
    if counts[0] <= per_minute and counts[1] <= per_hour and counts[2] <= per_day:
        return []
    return [
        (word, count, limit)
        for (_, word), count, limit in zip(
            _WINDOW_WORDS, counts, (per_minute, per_hour, per_day), strict=True
        )
        if count > limit
    ]


def _velocity_reason(who: str, action: str, over: list[tuple[str, int, int]]) -> str:
    parts = [f"{count} times in the last {word} (limit {limit})" for word, count, limit in over]
    return f"{who} asked for {action} " + " and ".join(parts)


def _days(n: float) -> str:
    return f"{n:g} days"


def _is_new(seen_at: float | None, ts: float, retention: float) -> bool:
    return seen_at is None or ts - seen_at >= retention


def _money(value: float) -> str:
    text = f"{value:,.2f}"
    return text[:-3] if text.endswith(".00") else text


def ago(seconds: float) -> str:
    """How long ago, in words ("3 minutes ago"); "just now" for a time in the future."""
    if seconds < 0:
        return "just now"
    if seconds < 60:
        return "less than a minute ago"
    if seconds < 3600:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' * (minutes != 1)} ago"
    if seconds < 86400 * 2:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' * (hours != 1)} ago"
    days = int(seconds // 86400)
    return f"{days} days ago"
