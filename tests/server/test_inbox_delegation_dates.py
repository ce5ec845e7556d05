"""The inbox's Delegation page: the date is the last day away (today works, the whole day is
covered), refusals are worded for the page (no CLI flags), and "Change delegate" replaces the
current delegation on purpose (audited) while a stale form does not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.delegation import get_delegation
from clearance.gateway import Gateway
from clearance.store.reads import read
from clearance.testing import FrozenClock

from ..fixtures import csrf_of, inbox_as, policy_gateway

POLICY = """
version: 1
directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [staff]}
    - {id: carol, groups: [staff]}
policies:
  default: deny
  rules: []
"""


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    async with policy_gateway(tmp_path, POLICY, clock) as gateway:
        yield gateway


@contextlib.asynccontextmanager
async def signed_in(gw: Gateway, person: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client signed in as `person`, and the delegation page's CSRF token."""
    async with inbox_as(gw, person, "correct-horse-battery") as client:
        page = await client.get("/ui/delegation")
        yield client, csrf_of(page.text)


@pytest.fixture
async def alice(gw: Gateway) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with signed_in(gw, "alice") as signed:
        yield signed


async def test_today_is_a_valid_last_day_and_is_covered_whole(
    gw: Gateway, alice: tuple[httpx.AsyncClient, str]
) -> None:
    """The clock says 2026-11-24 14:00 UTC: choosing 2026-11-24 names a delegate until the
    end of that day (00:00 UTC on the 25th). The page explains what the date means."""
    client, csrf = alice
    page = await client.get("/ui/delegation")
    assert "Last day away" in page.text and "this day included" in page.text
    ok = await client.post(
        "/ui/delegation", data={"delegate": "bob", "until": "2026-11-24", "csrf_token": csrf}
    )
    assert ok.status_code == 303, ok.text
    made = await read(gw.db, lambda c: get_delegation(c, "alice"))
    assert made is not None and made.until == datetime(2026, 11, 25, tzinfo=UTC)


async def test_a_past_day_is_refused_in_the_pages_words(
    alice: tuple[httpx.AsyncClient, str],
) -> None:
    client, csrf = alice
    past = await client.post(
        "/ui/delegation", data={"delegate": "bob", "until": "2026-11-23", "csrf_token": csrf}
    )
    assert past.status_code == 400
    assert "the end of 2026-11-23 is not in the future: choose today or a later day" in past.text
    assert "--until" not in past.text and "00:00:00+00:00" not in past.text


async def test_change_delegate_replaces_on_purpose_and_a_stale_form_does_not(
    gw: Gateway, alice: tuple[httpx.AsyncClient, str]
) -> None:
    """With a delegate shown, the form carries `replace` and "Change delegate" replaces it,
    audited as cleared (replaced_by) then set. A form posted without it (from a page that
    showed no delegate) is refused and the delegation kept."""
    client, csrf = alice
    first = await client.post(
        "/ui/delegation", data={"delegate": "bob", "until": "2026-12-24", "csrf_token": csrf}
    )
    assert first.status_code == 303
    page = await client.get("/ui/delegation")
    assert 'name="replace" value="1"' in page.text and "Change delegate" in page.text
    stale = await client.post(
        "/ui/delegation", data={"delegate": "carol", "until": "2026-12-20", "csrf_token": csrf}
    )
    assert stale.status_code == 400
    assert "alice already has a delegate: bob until 2026-12-25 00:00 UTC" in stale.text
    kept = await read(gw.db, lambda c: get_delegation(c, "alice"))
    assert kept is not None and kept.delegate == "bob"
    changed = await client.post(
        "/ui/delegation",
        data={"delegate": "carol", "until": "2026-12-20", "replace": "1", "csrf_token": csrf},
    )
    assert changed.status_code == 303
    entries = [e for e in iter_entries(gw.db) if e.kind.startswith("delegation")]
    assert [(e.kind, e.approver, e.channel) for e in entries] == [
        ("delegation.set", "bob", "web"),
        ("delegation.cleared", "bob", "web"),
        ("delegation.set", "carol", "web"),
    ]
    assert entries[1].data["replaced_by"] == "carol"


ZONED = """
version: 1
directory:
  people:
    - {id: kenji, timezone: Asia/Tokyo}
    - {id: bob}
policies: {default: deny, rules: []}
"""


async def test_the_last_day_is_a_day_of_the_approvers_own_time_zone(
    tmp_path: Path, clock: FrozenClock
) -> None:
    """kenji works in Tokyo: his last day away, 2026-11-30, ends at midnight in Tokyo
    (15:00 UTC on the 30th), and the page says so in his time as well as in UTC."""
    async with (
        policy_gateway(tmp_path, ZONED, clock) as gw,
        signed_in(gw, "kenji") as (client, csrf),
    ):
        page = await client.get("/ui/delegation")
        assert "to the end of this day (Asia/Tokyo)" in page.text
        ok = await client.post(
            "/ui/delegation", data={"delegate": "bob", "until": "2026-11-30", "csrf_token": csrf}
        )
        assert ok.status_code == 303, ok.text
        made = await read(gw.db, lambda c: get_delegation(c, "kenji"))
        assert made is not None and made.until == datetime(2026, 11, 30, 15, tzinfo=UTC)
        page = await client.get("/ui/delegation")
        assert "until 2026-11-30 15:00 UTC (2026-12-01 00:00 your time, Asia/Tokyo)" in page.text
