"""`RiskEngine`: settings and time zones in, a `risk` map that policies can use out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from clearance.policy.cel import compile_condition
from clearance.risk import RiskEngine, RiskSettingsError
from clearance.risk.signals import History

from .helpers import T0, request


def test_directory_time_zones_apply_and_settings_override_them() -> None:
    """Zones given by the caller (the directory) count; `risk.time_zones` wins over them."""
    friday = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)  # 00:30 Saturday in Tokyo
    engine = RiskEngine(time_zones={"carol": "Asia/Tokyo"})
    assert engine.signals(request(), History(), friday)["off_hours"] is True
    engine = RiskEngine({"time_zones": {"carol": "UTC"}}, time_zones={"carol": "Asia/Tokyo"})
    assert engine.signals(request(), History(), friday)["off_hours"] is False


def test_time_zones_find_a_person_however_their_name_is_composed() -> None:
    """A directory (or `risk.time_zones`) key written with a combining accent is the same
    person as a request's precomposed name: the signals compare names in NFKC form."""
    friday = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)  # 00:30 Saturday in Tokyo
    for zones in ({"time_zones": {"zoe\u0308": "Asia/Tokyo"}}, None):
        engine = RiskEngine(zones, time_zones=None if zones else {"zoe\u0308": "Asia/Tokyo"})
        assert engine.signals(request(user="zo\u00eb"), History(), friday)["off_hours"] is True


def test_an_unknown_directory_time_zone_is_an_error() -> None:
    """A person's bad time zone is reported with the person's id."""
    with pytest.raises(RiskSettingsError, match="'carol'"):
        RiskEngine(time_zones={"carol": "Moon/Base"})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("risk.off_hours", False),
        ("risk.velocity_1m > 5 || risk.agent_velocity_1h > 100", False),
        ("risk.new_geo && risk.new_device", True),
        ("risk.amount_anomaly >= 3.5", False),
        ("risk.amount_24h > 100", True),
        ("'payee_bank_change' in risk.patterns", True),
        ("risk.score >= 80 && size(risk.reasons) >= 3", True),
    ],
)
def test_policies_read_the_map_with_cel(condition: str, expected: bool) -> None:
    """Conditions written against `risk.*` type-check and evaluate on the computed map."""
    engine = RiskEngine()
    history = History(payee_bank_changed_at=T0.timestamp() - 3600)
    req = request(amount=150, payee="s-1", geo="BR", device="new-phone")
    risk = engine.signals(req, history, T0)
    data = {**{f.name: getattr(req, f.name) for f in dataclasses.fields(req)}, "risk": risk}
    data["labels"] = list(req.labels)
    assert compile_condition(condition).evaluate(data) is expected
