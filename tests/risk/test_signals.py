"""Each risk signal on crafted histories, boundaries included; the score and its reasons."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from clearance.policy.celfast import plain_inputs
from clearance.policy.model import Request
from clearance.risk import neutral_risk
from clearance.risk.facts import facts_of
from clearance.risk.settings import RiskSettings
from clearance.risk.signals import History, compute, robust_z

from .helpers import T0, activity, request, risk, settings

DAY = 86400.0


# -- the map -------------------------------------------------------------------------------------


def test_a_first_request_with_no_context_scores_zero() -> None:
    """Empty history, no country, device or payee: counts of 1 and nothing fires."""
    r = risk(request())
    assert r == {**neutral_risk(), **{k: 1 for k in r if "velocity" in k}}
    assert r["score"] == 0 and r["reasons"] == []


def test_a_request_without_actor_or_agent_counts_nothing() -> None:
    """With nobody named there is nobody to count: velocities stay 0."""
    r = risk(request(user=None, agent=None, amount=50, geo="US"))
    assert r["velocity_1m"] == 0 and r["agent_velocity_1m"] == 0 and r["amount_24h"] == 0
    assert r["new_geo"] is False


def test_the_map_has_the_same_keys_and_plain_types_as_the_neutral_one() -> None:
    """Policies can rely on every key; the CEL fast path accepts the values as plain."""
    r = risk(request(amount=10, geo="US", device="d1", payee="p1"))
    assert r.keys() == neutral_risk().keys()
    assert isinstance(r["amount_24h"], float) and isinstance(r["amount_anomaly"], float)
    assert isinstance(r["score"], int) and isinstance(r["off_hours"], bool)
    assert plain_inputs({"risk": r}, ("risk",))


# -- off hours -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "off"),
    [
        (datetime(2026, 11, 24, 9, 0, tzinfo=UTC), False),  # start: inclusive
        (datetime(2026, 11, 24, 8, 59, 59, 999999, tzinfo=UTC), True),
        (datetime(2026, 11, 24, 17, 59, 59, tzinfo=UTC), False),
        (datetime(2026, 11, 24, 18, 0, tzinfo=UTC), True),  # end: exclusive
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), True),  # a Saturday
        (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), True),  # a Sunday
    ],
)
def test_off_hours_at_the_edges_of_business_hours(when: datetime, off: bool) -> None:
    """09:00 is in hours, 18:00 is not; weekends are off."""
    assert risk(request(), when)["off_hours"] is off


def test_a_holiday_is_off_hours_all_day() -> None:
    """A listed holiday is off hours even at noon on a weekday, and says so."""
    cfg = settings(holidays=["2026-12-24"])
    r = risk(request(), datetime(2026, 12, 24, 12, 0, tzinfo=UTC), config=cfg)
    assert r["off_hours"] is True
    assert r["reasons"] == ["requested on a holiday (Thursday 2026-12-24 12:00 in UTC)"]
    assert (
        risk(request(), datetime(2026, 12, 23, 12, 0, tzinfo=UTC), config=cfg)["off_hours"] is False
    )


def test_a_holiday_is_judged_in_the_local_calendar() -> None:
    """23:30 UTC on 23 December is already the 24th (a holiday) in Berlin."""
    cfg = settings(
        time_zone="Europe/Berlin",
        holidays=["2026-12-24"],
        business_hours={"start": "00:00", "end": "23:59"},
    )
    r = risk(request(), datetime(2026, 12, 23, 23, 30, tzinfo=UTC), config=cfg)
    assert r["off_hours"] is True and "holiday" in r["reasons"][0]


def test_midnight_in_the_persons_own_time_zone() -> None:
    """Friday 15:00 UTC is Saturday 00:00 in Tokyo: off hours for a person based there."""
    friday = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    zones = {"carol": "Asia/Tokyo"}
    assert risk(request(), friday)["off_hours"] is False
    r = risk(request(), friday, zones=zones)
    assert r["off_hours"] is True
    assert r["reasons"] == ["requested outside working days (Saturday 00:00 in Asia/Tokyo)"]
    one_before = friday - timedelta(microseconds=1)  # Friday 23:59:59 in Tokyo: after hours
    assert "business hours (Friday 23:59" in risk(request(), one_before, zones=zones)["reasons"][0]


def test_the_person_zone_wins_over_the_agents_and_the_agents_over_the_orgs() -> None:
    """Person, else agent, else the organisation's time zone."""
    when = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)  # 20:00 UTC, 12:00 in Los Angeles
    cfg = settings(time_zones={"billing-bot": "America/Los_Angeles"})
    assert risk(request(), when, config=cfg)["off_hours"] is False  # the agent's zone
    zones = {"billing-bot": "America/Los_Angeles", "carol": "Europe/London"}
    assert risk(request(), when, config=cfg, zones=zones)["off_hours"] is True
    assert risk(request(user=None), when, config=cfg, zones=zones)["off_hours"] is False


def test_daylight_saving_moves_business_hours_in_utc() -> None:
    """New York: 13:30 UTC is 08:30 (EST, off) before the March change, 09:30 (EDT) after."""
    cfg = settings(time_zone="America/New_York")
    friday_before = datetime(2026, 3, 6, 13, 30, tzinfo=UTC)
    monday_after = datetime(2026, 3, 9, 13, 30, tzinfo=UTC)
    assert risk(request(), friday_before, config=cfg)["off_hours"] is True
    assert risk(request(), monday_after, config=cfg)["off_hours"] is False


def test_the_daylight_saving_change_day_itself() -> None:
    """On the 23-hour day (8 March 2026, New York) 13:00 UTC is 09:00 EDT, 12:59 is 08:59."""
    cfg = settings(time_zone="America/New_York", working_days=["sun"])
    assert (
        risk(request(), datetime(2026, 3, 8, 13, 0, tzinfo=UTC), config=cfg)["off_hours"] is False
    )
    r = risk(request(), datetime(2026, 3, 8, 12, 59, tzinfo=UTC), config=cfg)
    assert r["off_hours"] is True
    assert r["reasons"] == [
        "requested outside business hours (Sunday 08:59 in America/New_York; hours are "
        "09:00 to 18:00)"
    ]
    # Before the jump, 06:59 UTC is 01:59 EST; after it, 07:00 UTC is 03:00 EDT.
    early = settings(
        time_zone="America/New_York",
        working_days=["sun"],
        business_hours={"start": "03:00", "end": "04:00"},
    )
    assert (
        risk(request(), datetime(2026, 3, 8, 6, 59, tzinfo=UTC), config=early)["off_hours"] is True
    )
    assert (
        risk(request(), datetime(2026, 3, 8, 7, 0, tzinfo=UTC), config=early)["off_hours"] is False
    )


# -- velocity and 24 h amounts -------------------------------------------------------------------


def test_velocity_counts_this_request_and_fires_only_above_the_limit() -> None:
    """Four past requests in a minute make 5 (the limit: quiet); five make 6 (fires)."""
    four = activity(*((T0 + timedelta(seconds=i), None) for i in range(4)))
    now = T0 + timedelta(seconds=10)
    r = risk(request(), now, History(actor_activity=four))
    assert (r["velocity_1m"], r["velocity_1h"], r["velocity_24h"]) == (5, 5, 5)
    assert r["score"] == 0
    five = activity(*((T0 + timedelta(seconds=i), None) for i in range(5)))
    r = risk(request(), now, History(actor_activity=five))
    assert r["velocity_1m"] == 6 and r["score"] == 25
    assert r["reasons"] == [
        "carol asked for payments.transfer 6 times in the last minute (limit 5)"
    ]


def test_a_request_already_counted_is_not_counted_again() -> None:
    """An approved call being released was counted by its check: the windows, the agent's and
    the 24 h amount read what the history holds, without adding it a second time."""
    cfg = RiskSettings()
    five = activity(*((T0 + timedelta(seconds=i), 100.0) for i in range(5)))
    req = request(amount=100)
    history = History(actor_activity=five, agent_activity=five)
    now = T0 + timedelta(seconds=10)
    again = compute(facts_of(req, cfg), history, now, cfg, counted=True)
    assert (again["velocity_1m"], again["agent_velocity_1m"], again["amount_24h"]) == (5, 5, 500)
    fresh = compute(facts_of(req, cfg), history, now, cfg)
    assert (fresh["velocity_1m"], fresh["agent_velocity_1m"], fresh["amount_24h"]) == (6, 6, 600)


def test_velocity_slides_out_of_the_minute_but_not_the_hour() -> None:
    """A minute later the same requests count in the hour window only."""
    five = activity(*((T0 + timedelta(seconds=i), None) for i in range(5)))
    r = risk(request(), T0 + timedelta(seconds=64), History(actor_activity=five))
    assert (r["velocity_1m"], r["velocity_1h"], r["velocity_24h"]) == (1, 6, 6)
    assert r["score"] == 0


def test_agent_velocity_is_counted_separately_with_its_own_limits() -> None:
    """The agent's counters and limits are its own; either firing counts once in the score."""
    busy = activity(*((T0 + timedelta(seconds=i % 50), None) for i in range(40)))
    cfg = settings(agent_velocity_limits={"1m": 30})
    r = risk(request(), T0 + timedelta(seconds=55), History(agent_activity=busy), config=cfg)
    assert r["velocity_1m"] == 1 and r["agent_velocity_1m"] == 41
    assert r["reasons"] == [
        "agent billing-bot asked for payments.transfer 41 times in the last minute (limit 30)"
    ]
    both = History(actor_activity=busy, agent_activity=busy)
    r = risk(request(), T0 + timedelta(seconds=55), both, config=cfg)
    assert r["score"] == 25 and len(r["reasons"]) == 2


def test_several_windows_over_their_limits_share_one_reason() -> None:
    """A reason lists every window over its limit."""
    burst = activity(*((T0 + timedelta(seconds=i), None) for i in range(9)))
    cfg = settings(velocity_limits={"1m": 5, "1h": 8, "24h": 100})
    r = risk(request(), T0 + timedelta(seconds=20), History(actor_activity=burst), config=cfg)
    assert r["reasons"] == [
        "carol asked for payments.transfer 10 times in the last minute (limit 5) and "
        "10 times in the last hour (limit 8)"
    ]


def test_amount_24h_includes_this_amount_and_fires_above_the_limit() -> None:
    """9,000 in the last day plus 1,000 now is 10,000: at the limit (quiet); 1,001 fires."""
    past = activity((T0 - timedelta(hours=23), 4000), (T0 - timedelta(hours=2), 5000))
    cfg = settings(amount_24h_limit=10000)
    r = risk(request(amount=1000), T0, History(actor_activity=past), config=cfg)
    assert r["amount_24h"] == 10000.0 and r["score"] == 0
    r = risk(request(amount=1001), T0, History(actor_activity=past), config=cfg)
    assert r["amount_24h"] == 10001.0 and r["score"] == 20
    assert r["reasons"] == [
        "carol's payments.transfer amounts in the last 24 hours total 10,001, above 10,000"
    ]
    r = risk(
        request(amount=1001), T0 + timedelta(hours=2), History(actor_activity=past), config=cfg
    )
    assert r["amount_24h"] == 6001.0


# -- amount anomaly ------------------------------------------------------------------------------

USUAL = [100, 110, 95, 105, 98, 102, 100, 97, 103, 101]


def ring(amounts: Sequence[float]) -> History:
    return History(
        actor_activity=activity(
            *((T0 - timedelta(days=3, minutes=i), a) for i, a in enumerate(amounts))
        )
    )


def test_the_anomaly_is_silent_below_the_minimum_history() -> None:
    """Nine past amounts (minimum ten): a huge amount scores 0.0."""
    r = risk(request(amount=1_000_000), T0, ring(USUAL[:9]))
    assert r["amount_anomaly"] == 0.0 and r["score"] == 0


def test_the_anomaly_speaks_at_the_minimum_history() -> None:
    """With exactly ten past amounts, an outlier gets a large robust z-score and a reason."""
    r = risk(request(amount=5000), T0, ring(USUAL))
    assert r["amount_anomaly"] > 1000
    assert r["score"] == 30
    assert r["reasons"][0].startswith(
        "the amount 5,000 is unusually large for carol's payments.transfer (typically 100.50;"
    )


def test_a_usual_amount_is_not_an_anomaly_and_a_small_one_is_negative() -> None:
    """An amount near the median scores near 0; a much smaller one is negative and quiet."""
    assert abs(risk(request(amount=101), T0, ring(USUAL))["amount_anomaly"]) < 1
    low = risk(request(amount=1), T0, ring(USUAL))
    assert low["amount_anomaly"] < -10 and low["score"] == 0


def test_the_anomaly_fires_exactly_at_the_threshold() -> None:
    """z = 3.5 fires; just below does not (threshold inclusive)."""
    # median 100, MAD 2 → z = 0.6745·(x − 100)/2; x = 100 + 3.5·2/0.6745 ≈ 110.378
    history = ring([96, 98, 98, 100, 100, 100, 102, 102, 104, 100])
    assert robust_z(110.38, [96, 98, 98, 100, 100, 100, 102, 102, 104, 100])[0] == 3.5
    assert risk(request(amount=110.38), T0, history)["score"] == 30
    assert risk(request(amount=110.30), T0, history)["score"] == 0


def test_zero_mad_falls_back_to_the_mean_absolute_deviation() -> None:
    """More than half the amounts equal: the mean absolute deviation sets the scale."""
    z, median = robust_z(200, [100] * 8 + [110, 90])
    assert median == 100 and z == pytest.approx(100 / (1.2533 * 2), abs=0.01)


def test_identical_amounts_use_one_percent_of_the_median() -> None:
    """All amounts equal: 1% of the median stands in for the MAD (1.0 when it is 0)."""
    assert robust_z(101, [100] * 10) == (0.67, 100)
    assert robust_z(106, [100] * 10)[0] == 4.05
    assert robust_z(100, [100] * 10)[0] == 0.0
    assert robust_z(2, [0] * 10)[0] == 1.35


def test_an_amount_given_as_text_is_read_and_a_boolean_is_not() -> None:
    """`"5000"` is an amount; `true` is not one."""
    text = Request("payments.transfer", {"amount": "5000"}, {"user": "carol"})
    assert risk(text, T0, ring(USUAL))["amount_anomaly"] > 1000
    flag = Request("payments.transfer", {"amount": True}, {"user": "carol"})
    assert risk(flag, T0, ring(USUAL))["amount_anomaly"] == 0.0


# -- first sightings -----------------------------------------------------------------------------


def test_a_new_country_device_and_payee_each_fire() -> None:
    """Never seen: each is new, with its own reason and weight."""
    r = risk(request(geo="de", device="laptop-7", payee="p-9", amount=10))
    assert (r["new_geo"], r["new_device"], r["new_payee"]) == (True, True, True)
    assert r["score"] == 20 + 20 + 15
    assert r["reasons"] == [
        "carol has not made a request from DE in the last 90 days",
        "carol is on a device not seen in the last 90 days (laptop-7)",
        "carol has not paid p-9 in the last 90 days",
    ]


def test_a_sighting_within_retention_is_known_and_at_retention_new_again() -> None:
    """Seen 89.99 days ago: known; seen exactly 90 days ago: new again."""
    ts = T0.timestamp()
    req = request(geo="DE", device="d", payee="p")
    recent = History(geo_seen_at=ts - 89.99 * DAY, device_seen_at=ts - 1, payee_seen_at=ts)
    r = risk(req, T0, recent)
    assert (r["new_geo"], r["new_device"], r["new_payee"]) == (False, False, False)
    expired = History(
        geo_seen_at=ts - 90 * DAY, device_seen_at=ts - 90 * DAY, payee_seen_at=ts - 91 * DAY
    )
    r = risk(req, T0, expired)
    assert (r["new_geo"], r["new_device"], r["new_payee"]) == (True, True, True)
    short = settings(retention_days=30)
    assert risk(req, T0, History(geo_seen_at=ts - 31 * DAY), config=short)["new_geo"] is True


# -- patterns ------------------------------------------------------------------------------------


def test_a_payment_soon_after_a_bank_change_matches_the_pattern() -> None:
    """Bank details changed 2 days before a payment to the payee: the pattern and its reason."""
    changed = T0.timestamp() - 2 * DAY
    r = risk(
        request(payee="s-1", amount=10),
        T0,
        History(payee_bank_changed_at=changed, payee_seen_at=changed),
    )
    assert r["patterns"] == ["payee_bank_change"]
    assert r["score"] == 80
    assert r["reasons"] == [
        "the bank details of payee s-1 were changed 2 days ago, "
        "less than 30 days before this payment"
    ]


def test_the_bank_change_pattern_ends_after_its_days() -> None:
    """Exactly 30 days after the change the pattern no longer matches; just before, it does."""
    ts = T0.timestamp()
    assert (
        risk(request(payee="s-1"), T0, History(payee_bank_changed_at=ts - 30 * DAY))["patterns"]
        == []
    )
    assert risk(request(payee="s-1"), T0, History(payee_bank_changed_at=ts - 30 * DAY + 1))[
        "patterns"
    ] == ["payee_bank_change"]


def test_the_bank_change_pattern_only_on_payment_actions() -> None:
    """With payment actions configured, other actions naming the payee do not match."""
    cfg = settings(patterns={"payee_bank_change": {"payment_actions": ["payments.*"]}})
    h = History(payee_bank_changed_at=T0.timestamp() - 60)
    assert risk(request("payments.transfer", payee="s-1"), T0, h, config=cfg)["patterns"] == [
        "payee_bank_change"
    ]
    assert risk(request("crm.update", payee="s-1"), T0, h, config=cfg)["patterns"] == []


def test_a_burst_of_denials_from_one_agent_matches_at_the_count() -> None:
    """Five denials in the last ten minutes match; four, or five spread wider, do not."""
    ts = T0.timestamp()
    five = tuple(ts - 60 * i for i in range(5))
    r = risk(request(), T0, History(agent_denials=five))
    assert r["patterns"] == ["denial_burst"] and r["score"] == 50
    assert r["reasons"] == ["agent billing-bot had 5 requests denied in the last 10 minutes"]
    assert risk(request(), T0, History(agent_denials=five[:4]))["patterns"] == []
    old = (*five[:4], ts - 600)  # exactly ten minutes ago: outside
    assert risk(request(), T0, History(agent_denials=old))["patterns"] == []
    assert risk(request(agent=None), T0, History(agent_denials=five))["patterns"] == []


# -- score ---------------------------------------------------------------------------------------


def test_the_score_adds_configured_weights_and_is_capped() -> None:
    """Custom weights add up; the total is capped at `score_cap`."""
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    ts = saturday.timestamp()
    h = History(payee_bank_changed_at=ts - 60, agent_denials=tuple(ts - i for i in range(5)))
    req = request(payee="p-1", geo="FR")
    assert risk(req, saturday, h)["score"] == 100  # 10+20+15+80+50, capped
    cfg = settings(
        weights={"payee_bank_change": 5, "denial_burst": 0, "new_geo": 2.5}, score_cap=40
    )
    r = risk(req, saturday, h, config=cfg)
    assert r["score"] == round(10 + 2.5 + 15 + 5)
    assert r["patterns"] == ["payee_bank_change", "denial_burst"]  # fired, even at weight 0
    capped = settings(score_cap=30)
    assert risk(req, saturday, h, config=capped)["score"] == 30


def test_several_signals_together_reach_the_blocking_threshold() -> None:
    """New country + new device + unusual amount + off hours = 80 with the default weights."""
    saturday = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    r = risk(request(amount=9000, geo="RU", device="x"), saturday, ring(USUAL))
    assert r["score"] == 10 + 20 + 20 + 30
    assert len(r["reasons"]) == 4
