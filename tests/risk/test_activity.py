"""Sliding-window counters: exact bucket semantics, sliding, bounds, and encoding."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearance.risk.activity import EPOCH, WINDOWS, Activity

from .helpers import T0, activity

BASE = int(T0.timestamp())  # T0 is on a 15-minute boundary


def counted(events: list[tuple[float, float | None]], now: float) -> tuple[int, int, int, float]:
    """Brute force: the documented rule `floor(now/g) - floor(t/g) < W/g`, per window."""
    out: list[float] = []
    for _, window, bucket in WINDOWS:
        n = window // bucket
        out.append(sum(1 for t, _ in events if int(now) // bucket - int(t) // bucket < n))
    amount = sum(a or 0 for t, a in events if int(now) // 900 - int(t) // 900 < 96)
    return int(out[0]), int(out[1]), int(out[2]), float(amount)


def test_an_empty_activity_counts_nothing() -> None:
    """A subject never seen has zero requests in every window."""
    totals = Activity().totals(T0.timestamp())
    assert (totals.per_minute, totals.per_hour, totals.per_day, totals.amount_24h) == (0, 0, 0, 0)


def test_the_minute_window_slides_second_by_second() -> None:
    """A request counts in the 1-minute window for exactly 60 whole seconds."""
    a = activity((T0, 10))
    assert a.totals(T0.timestamp()).per_minute == 1
    assert a.totals(T0.timestamp() + 59.999).per_minute == 1
    assert a.totals(T0.timestamp() + 60).per_minute == 0
    assert a.totals(T0.timestamp() + 60).per_hour == 1


def test_the_hour_window_slides_minute_by_minute() -> None:
    """A request at 14:00:30 counts in the hour window until 14:59:59, not at 15:00:00."""
    a = activity((T0 + timedelta(seconds=30), None))
    assert a.totals(T0.timestamp() + 3599).per_hour == 1
    assert a.totals(T0.timestamp() + 3600).per_hour == 0
    assert a.totals(T0.timestamp() + 3600).per_day == 1


def test_the_day_window_slides_by_quarter_hours_with_its_amounts() -> None:
    """The 24-hour window (15-minute buckets) drops a request and its amount after 96 buckets."""
    a = activity((T0, 250), (T0 + timedelta(hours=1), 100))
    day = 86400
    assert a.totals(T0.timestamp() + day - 1).amount_24h == 350
    later = a.totals(T0.timestamp() + day)
    assert (later.per_day, later.amount_24h) == (1, 100)
    assert a.totals(T0.timestamp() + day + 3600).per_day == 0


def test_an_update_after_a_long_silence_forgets_the_old_buckets() -> None:
    """A request two days later starts from an empty window."""
    a = activity((T0, 5), (T0 + timedelta(seconds=1), 5))
    a.add(T0.timestamp() + 2 * 86400, 7, keep_amounts=50)
    assert (list(a.sc), list(a.mc), list(a.qc), list(a.qa)) == ([1], [1], [1], [7])
    assert list(a.sb) == [BASE - EPOCH + 2 * 86400]
    assert list(a.amounts) == [5, 5, 7]


def test_a_request_from_a_clock_behind_lands_in_its_own_bucket() -> None:
    """An earlier `now` (another instance's clock) is counted in its older bucket, in order."""
    a = activity((T0 + timedelta(seconds=30), None), (T0, None))
    assert list(a.sb) == [BASE - EPOCH, BASE - EPOCH + 30] and list(a.sc) == [1, 1]
    assert a.totals(T0.timestamp() + 60).per_minute == 1  # the 14:00:00 one has left
    a.add(T0.timestamp() - 60, None, keep_amounts=0)  # 90 s behind the newest: no 1 s bucket
    assert list(a.sc) == [1, 1] and list(a.mc) == [1, 2]  # 13:59 has its own minute


def test_the_amount_ring_keeps_the_most_recent() -> None:
    """Only the last `keep_amounts` amounts are kept, oldest first."""
    a = Activity()
    for i in range(8):
        a.add(T0.timestamp() + i, float(i), keep_amounts=5)
    assert list(a.amounts) == [3, 4, 5, 6, 7]
    a.add(T0.timestamp() + 9, 2.5, keep_amounts=5)
    assert list(a.amounts) == [4, 5, 6, 7, 2.5]
    a.add(T0.timestamp() + 10, 123.45, keep_amounts=5)
    assert a.amounts[-1] == pytest.approx(123.45, rel=1e-7)  # kept as float32


def test_encoding_round_trips_and_stays_compact() -> None:
    """The binary state decodes to the same activity; its size follows its buckets."""
    a = activity((T0, 12.5), (T0 + timedelta(seconds=3), None))
    data = a.encode()
    assert Activity.decode(data) == a
    assert len(data) == 9 + 4 * 2 * (2 + 1 + 1) + 8 * 1 + 4 * 1  # + one sum, one amount
    assert Activity.decode(Activity().encode()) == Activity()
    with pytest.raises(ValueError, match="truncated"):
        Activity.decode(data[:-8])
    with pytest.raises(ValueError, match="format"):
        Activity.decode(b"\x07" + data[1:])


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=60),
    amounts=st.lists(st.one_of(st.none(), st.integers(0, 10_000)), min_size=60, max_size=60),
    probe=st.integers(min_value=0, max_value=200_000),
)
def test_totals_equal_the_documented_rule(
    gaps: list[int], amounts: list[int | None], probe: int
) -> None:
    """For any request times, each window counts exactly the requests its rule says."""
    a = Activity()
    events: list[tuple[float, float | None]] = []
    t = float(BASE)
    for gap, amount in zip(gaps, amounts, strict=False):
        t += gap
        a.add(t, amount, keep_amounts=50)
        events.append((t, amount))
        a = Activity.decode(a.encode())  # as the store would, between checks
    now = t + probe
    totals = a.totals(now)
    assert (totals.per_minute, totals.per_hour, totals.per_day, totals.amount_24h) == counted(
        events, now
    )
    assert len(a.sb) <= 60 and len(a.mb) <= 60 and len(a.qb) <= 96
