"""A crash after the platform accepted a request but before our commit, then recovery: Slack
and Discord end with exactly one message; Teams, Telegram and WhatsApp, which offer no way to
find or dedupe the first attempt, get the request again marked as a re-send."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from clearance.audit.export import iter_entries
from clearance.channels.base import RESENT_NOTE, ChannelError, Message, Sent
from clearance.channels.hub import ChannelHub
from clearance.channels.outbox import LEASE
from clearance.gateway import CheckResult, Gateway
from clearance.policy import Request
from clearance.testing import FrozenClock
from clearance.testing.fakes import serve_in_thread
from clearance.testing.fakes.discord import FakeDiscord
from clearance.testing.fakes.slack import FakeSlack
from clearance.testing.fakes.teams import FakeTeams
from clearance.testing.fakes.telegram import FakeTelegram
from clearance.testing.fakes.whatsapp import FakeWhatsApp
from clearance.testing.outbox import run_outbox

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {NAME: "ADDRESS"}}
    - {id: carol, name: Carol Diaz, groups: [staff]}
policies:
  default: deny
  rules:
    - id: pay
      description: Payments need a manager
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
        timeout: 1h
    - id: stop
      description: Exfiltration is blocked and managers are alerted
      actions: [exfiltrate]
      effect: block
      alert: [group:managers]
channels:
  NAME: SETTINGS
server: {public_url: "http://clearance.test"}
"""


class Crash(BaseException):
    """The process dies: nothing after this line of the dispatcher runs."""


@dataclass
class Platform:
    name: str
    address: str
    settings: dict[str, Any]
    texts: Callable[[], list[str]]  # the approval requests the fake holds for alice, as text
    fake: Any = None


def _slack(url: str, fake: FakeSlack) -> Platform:
    def texts() -> list[str]:
        return [json.dumps(m) for (c, _), m in fake.messages.items() if c == "D0ALICE"]

    settings = {
        "bot_token": fake.bot_token,
        "signing_secret": fake.signing_secret,
        "base_url": f"{url}/api/",
    }
    return Platform("slack", "U0ALICE", settings, texts, fake)


def _discord(url: str, fake: FakeDiscord) -> Platform:
    settings = {
        "bot_token": fake.bot_token,
        "public_key": fake.public_key,
        "application_id": fake.application_id,
        "base_url": f"{url}/api/v10",
    }
    return Platform(
        "discord",
        "900000000000000001",
        settings,
        lambda: [json.dumps(m) for m in fake.messages.values()],
    )


def _telegram(url: str, fake: FakeTelegram) -> Platform:
    settings = {
        "bot_token": fake.token,
        "secret_token": "s3cret",
        "base_url": url,
        "mode": "webhook",
    }
    return Platform(
        "telegram", "1001", settings, lambda: [m.text for m in fake.requests_to(1001)], fake
    )


def _whatsapp(url: str, fake: FakeWhatsApp) -> Platform:
    settings = {
        "access_token": fake.access_token,
        "app_secret": fake.app_secret,
        "verify_token": "verify-me",
        "phone_number_id": fake.phone_number_id,
        "base_url": f"{url}/v21.0",
    }
    return Platform(
        "whatsapp",
        "15550001111",
        settings,
        lambda: [json.dumps(m.payload) for m in fake.to("15550001111")],
    )


def _teams(url: str, fake: FakeTeams) -> Platform:
    fake.base_url = url
    return Platform(
        "teams", "aad-alice", fake.settings(), lambda: [json.dumps(c) for c in fake.cards()]
    )


BUILDERS: dict[str, tuple[Callable[[], Any], Callable[[str, Any], Platform]]] = {
    "slack": (FakeSlack, _slack),
    "discord": (FakeDiscord, _discord),
    "telegram": (lambda: FakeTelegram("777001:AAH-test", secret_token="s3cret"), _telegram),
    "whatsapp": (FakeWhatsApp, _whatsapp),
    "teams": (FakeTeams, _teams),
}


@pytest.fixture
def platform(request: pytest.FixtureRequest, clock: FrozenClock) -> Iterator[Platform]:
    make_fake, describe = BUILDERS[request.param]
    fake = make_fake()
    if isinstance(fake, FakeSlack | FakeDiscord):
        fake.clock = lambda: clock().timestamp()  # the platform's clock is the test's
    with serve_in_thread(fake.app) as server:
        yield describe(server.url, fake)


def _open(
    tmp_path: Path, clock: FrozenClock, platform: Platform, url: str | None = None
) -> tuple[Gateway, ChannelHub]:
    path = tmp_path / "p.yaml"
    if not path.exists():
        policy = POLICY.replace("NAME", platform.name).replace("ADDRESS", platform.address)
        path.write_text(policy.replace("SETTINGS", json.dumps(platform.settings)))
    url = url or f"sqlite:///{tmp_path}/c.db"
    gateway = Gateway.open(path, database_url=url, clock=clock)
    return gateway, ChannelHub.from_settings(gateway)


async def _send_and_die(
    tmp_path: Path,
    clock: FrozenClock,
    platform: Platform,
    request: Request,
    down: timedelta = timedelta(0),
    url: str | None = None,
) -> tuple[Gateway, ChannelHub, CheckResult]:
    """`request` is checked and a dispatcher dies right after the platform accepted what it
    sent for it; then a new process (gateway, hub, channel) once the lease has run out."""
    gateway, hub = _open(tmp_path, clock, platform, url)
    result = await gateway.check(request)
    channel = hub.channels[platform.name]
    send = channel.send

    async def send_then_die(message: Message, address: str) -> Sent:
        await send(message, address)
        raise Crash

    channel.send = send_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await hub.dispatcher.run_once()
    assert len(platform.texts()) == 1  # the platform has it; we never recorded it
    await hub.aclose()
    await gateway.aclose()
    clock.now += LEASE + timedelta(seconds=1) + down
    gateway, hub = _open(tmp_path, clock, platform, url)
    return gateway, hub, result


async def _crash_after_send(
    tmp_path: Path,
    clock: FrozenClock,
    platform: Platform,
    down: timedelta = timedelta(0),
    url: str | None = None,
) -> tuple[Gateway, ChannelHub, str]:
    """An approval request, sent, then the crash (see `_send_and_die`)."""
    pay = Request("pay", {"amount": 500}, {"user": "carol"})
    gateway, hub, result = await _send_and_die(tmp_path, clock, platform, pay, down, url)
    assert result.approval is not None
    return gateway, hub, result.approval.approval.id


@pytest.mark.parametrize("platform", ["slack", "discord"], indirect=True)
async def test_recovery_after_a_crash_leaves_exactly_one_message(
    tmp_path: Path, clock: FrozenClock, platform: Platform, db_url: str
) -> None:
    """After a crash between the platform's answer and our commit, the recovered delivery
    finds (Slack: metadata in conversations.history) or dedupes (Discord: enforced nonce) the
    first message: alice has one request, recorded as sent, without a re-send note (on SQLite
    and PostgreSQL)."""
    gateway, hub, approval_id = await _crash_after_send(tmp_path, clock, platform, url=db_url)
    try:
        await run_outbox(hub, clock)
        texts = platform.texts()
        assert len(texts) == 1
        assert "sent again" not in texts[0]
        sent = [e for e in iter_entries(gateway.db) if e.kind == "delivery.sent"]
        assert len(sent) == 1 and sent[0].approval_id == approval_id
        assert sent[0].data.get("after_interrupted_attempt") is True
        decision = await gateway.approvals.decide(
            approval_id, person="alice", decision="approve", channel=platform.name
        )
        assert decision.approval.state.value == "approved"
        await run_outbox(hub, clock)
        assert "Approved by Alice Ng" in platform.texts()[0]  # the one message was updated
    finally:
        await hub.aclose()
        await gateway.aclose()


@pytest.mark.parametrize("platform", ["telegram", "whatsapp", "teams"], indirect=True)
async def test_recovery_without_dedupe_resends_with_a_note(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> None:
    """Where the platform can neither dedupe nor be searched, the recovered delivery sends the
    request again, saying so; the new copy is the one recorded and kept up to date."""
    gateway, hub, _ = await _crash_after_send(tmp_path, clock, platform)
    try:
        await run_outbox(hub, clock)
        texts = platform.texts()
        assert len(texts) == 2
        assert RESENT_NOTE.strip() not in texts[0]
        assert "sent again after an interrupted attempt" in texts[1]
        sent = [e for e in iter_entries(gateway.db) if e.kind == "delivery.sent"]
        assert [e.data.get("after_interrupted_attempt") for e in sent] == [True]
    finally:
        await hub.aclose()
        await gateway.aclose()


@pytest.mark.parametrize("platform", ["slack"], indirect=True)
async def test_slack_lost_answer_is_found_instead_of_posted_twice(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> None:
    """Slack posts the message but the answer is a 500: the retry finds the message by its
    metadata and records it, and no second message is posted."""
    gateway, hub = _open(tmp_path, clock, platform)
    try:
        fake = platform.fake
        assert isinstance(fake, FakeSlack)
        fake.fail_after_post = 1
        await gateway.check(Request("pay", {"amount": 500}, {"user": "carol"}))
        await run_outbox(hub, clock)
        assert len(platform.texts()) == 1
        assert len(fake.calls_to("chat.postMessage")) == 0  # the only post "failed"
        assert len(fake.calls_to("conversations.history")) == 1
        kinds = [e.kind for e in iter_entries(gateway.db)]
        assert kinds.count("delivery.sent") == 1
    finally:
        await hub.aclose()
        await gateway.aclose()


@pytest.mark.parametrize("platform", ["discord"], indirect=True)
async def test_discord_recovery_after_the_nonce_is_forgotten_is_marked(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> None:
    """Back only after Discord has forgotten the nonce (ten minutes down), the request goes
    out again and says it is a re-send."""
    gateway, hub, _ = await _crash_after_send(tmp_path, clock, platform, timedelta(minutes=10))
    try:
        await run_outbox(hub, clock)
        texts = platform.texts()
        assert len(texts) == 2
        assert "sent again after an interrupted attempt" in texts[1]
    finally:
        await hub.aclose()
        await gateway.aclose()


@pytest.mark.parametrize("uncertain", [True, False])
async def test_only_an_attempt_of_unknown_outcome_is_marked_as_a_re_send(
    tmp_path: Path, clock: FrozenClock, uncertain: bool
) -> None:
    """A send that timed out (it may have arrived) is retried with the re-send note; one the
    platform refused outright is retried without it."""
    path = tmp_path / "p.yaml"
    policy = POLICY.replace("NAME", "memory").replace("ADDRESS", "alice@memory")
    path.write_text(policy.replace("SETTINGS", json.dumps({"kind": "memory"})))
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    channel = hub.channels["memory"]
    send = channel.send
    failures = [ChannelError("timed out" if uncertain else "HTTP 500", uncertain=uncertain)]

    async def flaky(message: Message, address: str) -> Sent:
        if failures:
            raise failures.pop()
        return await send(message, address)

    channel.send = flaky  # type: ignore[method-assign]
    try:
        await gateway.check(Request("pay", {"amount": 500}, {"user": "carol"}))
        await run_outbox(hub, clock)
        sent = getattr(channel, "sent", [])
        assert len(sent) == 1
        assert sent[0][1].status_line.endswith(RESENT_NOTE) is uncertain
        assert sent[0][1].earlier_attempt_at is not None  # the retry knew of the attempt
    finally:
        await hub.aclose()
        await gateway.aclose()


@pytest.mark.parametrize("platform", ["slack"], indirect=True)
async def test_slack_lookup_that_fails_is_retried_before_anything_is_posted(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> None:
    """Slack failing the history lookup after a crash delays the recovery; the next try finds
    the first message, so alice still has exactly one."""
    gateway, hub, _ = await _crash_after_send(tmp_path, clock, platform)
    fake = platform.fake
    assert isinstance(fake, FakeSlack)
    try:
        fake.fail_next(503)
        while await hub.dispatcher.run_once():
            pass
        assert len(fake.calls_to("chat.postMessage")) == 1  # only the crashed attempt's
        await run_outbox(hub, clock)
        assert len(platform.texts()) == 1
        assert len(fake.calls_to("chat.postMessage")) == 1
        assert len(fake.calls_to("conversations.history")) == 1
    finally:
        await hub.aclose()
        await gateway.aclose()


async def _alert_then_crash(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> tuple[Gateway, ChannelHub]:
    """A blocked action alerts alice, then the crash (see `_send_and_die`)."""
    blocked = Request("exfiltrate", {"to": "evil"}, {"user": "carol"})
    gateway, hub, result = await _send_and_die(tmp_path, clock, platform, blocked)
    assert result.decision.effect.value == "block"
    return gateway, hub


@pytest.mark.parametrize("platform", ["slack", "discord"], indirect=True)
async def test_an_alert_interrupted_by_a_crash_is_not_sent_twice(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> None:
    """Security alerts keep the same promise as requests: after a crash between the
    platform's answer and our commit, Slack and Discord end with one alert."""
    gateway, hub = await _alert_then_crash(tmp_path, clock, platform)
    try:
        await run_outbox(hub, clock)
        texts = platform.texts()
        assert len(texts) == 1 and "Blocked" in texts[0]
    finally:
        await hub.aclose()
        await gateway.aclose()


@pytest.mark.parametrize("platform", ["telegram"], indirect=True)
async def test_an_alert_that_cannot_be_deduped_is_resent_with_a_note(
    tmp_path: Path, clock: FrozenClock, platform: Platform
) -> None:
    """Where the platform cannot dedupe, the alert goes again, marked as sent again."""
    fake = platform.fake
    assert isinstance(fake, FakeTelegram)
    alerts = lambda: [m.text for m in fake.sent if m.chat_id == 1001]  # noqa: E731
    platform = dataclasses.replace(platform, texts=alerts)
    gateway, hub = await _alert_then_crash(tmp_path, clock, platform)
    try:
        await run_outbox(hub, clock)
        texts = alerts()
        assert len(texts) == 2 and "sent again" in texts[1]
    finally:
        await hub.aclose()
        await gateway.aclose()
