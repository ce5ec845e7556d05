"""The `risk:` settings section: defaults, validation, and YAML's quirks."""

from __future__ import annotations

from datetime import date, time

import pytest

from clearance.policy.yamlpos import parse
from clearance.risk import (
    DEFAULT_CACHE_ROWS,
    DEFAULT_WEIGHTS,
    RiskEngine,
    RiskSettings,
    RiskSettingsError,
    load_risk_settings,
)


def test_a_missing_section_means_the_defaults() -> None:
    """No `risk:` section gives the documented defaults."""
    s = load_risk_settings(None)
    assert s == RiskSettings()
    assert s.time_zone == "UTC"
    assert (s.business_hours.start, s.business_hours.end) == (time(9), time(18))
    assert s.working_weekdays == frozenset(range(5))
    assert s.effective_weights == DEFAULT_WEIGHTS
    assert s.velocity_limits.per_minute == 5 and s.agent_velocity_limits.per_hour == 600
    assert s.patterns.payee_bank_change.days == 30 and s.patterns.denial_burst.count == 5
    assert s.cache_rows == DEFAULT_CACHE_ROWS == RiskEngine().cache.size


def test_the_row_cache_is_sized_by_the_section_unless_the_engine_is_told() -> None:
    assert RiskEngine({"cache_rows": 7}).cache.size == 7
    assert RiskEngine({"cache_rows": 7}, cache_rows=0).cache.size == 0


def test_a_yaml_section_loads_with_unquoted_times_and_dates() -> None:
    """YAML's base-60 reading of 18:00 (1080) and its dates are understood."""
    doc = parse(
        "risk:\n"
        "  time_zone: Europe/Berlin\n"
        "  business_hours: {start: 08:30, end: 17:30}\n"
        "  working_days: [mon, tue, wed, thu, fri, sat]\n"
        "  holidays: [2026-12-25, '2026-12-26']\n"
        "  velocity_limits: {1m: 3}\n"
        "  weights: {off_hours: 40}\n",
        "x.yaml",
    )
    s = load_risk_settings(doc.data["risk"])
    assert s.business_hours.start == time(8, 30) and s.business_hours.end == time(17, 30)
    assert s.holidays == {date(2026, 12, 25), date(2026, 12, 26)}
    assert s.velocity_limits.per_minute == 3 and s.velocity_limits.per_hour == 60
    assert s.effective_weights["off_hours"] == 40
    assert s.effective_weights["new_geo"] == DEFAULT_WEIGHTS["new_geo"]
    assert 5 in s.working_weekdays and 6 not in s.working_weekdays


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"time_zone": "Mars/Olympus"}, "risk.time_zone: unknown time zone"),
        ({"time_zones": {"carol": "Nowhere"}}, "unknown time zone 'Nowhere'"),
        ({"business_hours": {"start": "18:00", "end": "09:00"}}, "must be before end"),
        ({"business_hours": {"start": 90000}}, "write it quoted"),
        ({"business_hours": {"start": 0, "end": 1440}}, "1440 is not a time of day"),  # 24:00
        (
            {"business_hours": {"start": 9}},
            "write the time of day with its minutes, quoted: '09:00'",
        ),
        (
            {"weights": {"off_hours": float("nan")}},
            "risk.weights.off_hours: Input should be a finite",
        ),
        (
            {"anomaly": {"threshold": float("inf")}},
            "risk.anomaly.threshold: Input should be a finite",
        ),
        ({"weights": {"velocityy": 3}}, "unknown signal velocityy"),
        ({"weights": {"velocity": -1}}, "must not be negative"),
        ({"anomaly": {"min_history": 20, "history_size": 10}}, "at least anomaly.min_history"),
        ({"working_days": ["funday"]}, "risk.working_days.0"),
        ({"score_cap": 150}, "risk.score_cap"),
        ({"cache_rows": -1}, "risk.cache_rows: Input should be greater than or equal to 0"),
        ({"velocity": 3}, "risk.velocity: Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_named(section: dict[str, object], message: str) -> None:
    """Each invalid setting is an error naming its `risk.` path."""
    with pytest.raises(RiskSettingsError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_risk_settings(section)


def test_base_60_times_read_as_yaml_writes_them() -> None:
    """Unquoted, YAML 1.1 reads `8:30` as 510 (minutes) and `9:00:00` as 32400 (seconds): both
    are the times they look like."""
    s = load_risk_settings({"business_hours": {"start": 510, "end": 17 * 3600 + 30 * 60}})
    assert s.business_hours.start == time(8, 30) and s.business_hours.end == time(17, 30)


def test_each_problem_is_placed_on_its_own_line() -> None:
    """The loader names each problem of the `risk:` section at its own line and column."""
    from clearance.policy import PolicyError
    from clearance.policy.load import load_policy_texts

    text = (
        "version: 1\n"
        "policies:\n  rules:\n    - {id: ok, actions: [pay], effect: allow}\n"
        "risk:\n"
        "  anomaly:\n"
        "    threshold: -1\n"
        "  holidays: [2026-12-25, Christmas]\n"
    )
    with pytest.raises(PolicyError) as failed:
        load_policy_texts([("p.yaml", text)])
    where = sorted((p.location.line, p.message.split(":")[0]) for p in failed.value.problems)
    assert where == [(7, "risk.anomaly.threshold"), (8, "risk.holidays.1")]


def test_a_date_that_does_not_exist_is_a_yaml_error_with_its_place() -> None:
    """`2026-02-30` is no date: an error at its line, not a traceback."""
    from clearance.policy import PolicyError
    from clearance.policy.load import load_policy_texts

    text = "version: 1\nrisk:\n  holidays: [2026-02-30]\n"
    with pytest.raises(PolicyError) as failed:
        load_policy_texts([("p.yaml", text)])
    (problem,) = failed.value.problems
    assert problem.location.line == 3 and "2026-02-30" in problem.message


def test_a_section_that_is_not_a_mapping_is_refused() -> None:
    """`risk: 3` is an error, not the defaults."""
    with pytest.raises(RiskSettingsError, match="must be a mapping"):
        load_risk_settings(3)  # type: ignore[arg-type]


def test_payment_and_change_actions_are_globs() -> None:
    """The pattern's action lists match like policy rule actions (fnmatch globs)."""
    s = load_risk_settings(
        {"patterns": {"payee_bank_change": {"payment_actions": ["payments.*", "ap.pay"]}}}
    )
    bank = s.patterns.payee_bank_change
    assert bank.is_payment_action("payments.transfer") and bank.is_payment_action("ap.pay")
    assert not bank.is_payment_action("data.read")
    assert bank.is_change_action("procurement.change_supplier_terms")
    assert not bank.is_change_action("procurement.change_supplier_terms.x")
