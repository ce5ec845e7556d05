"""The Discord channel against a local fake of the Discord HTTP API and its interactions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

from clearance.audit.export import iter_entries
from clearance.channels.base import ChannelError, Message, StageView
from clearance.channels.discord import DiscordChannel
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import FakeServer, serve_in_thread
from clearance.testing.fakes.discord import FakeDiscord
from clearance.testing.outbox import run_outbox

ALICE, BOB, CAROL, DANA, STRANGER = (f"90000000000000000{n}" for n in range(1, 6))

POLICY = f"""
directory:
  people:
    - {{id: alice, name: Alice Ng, groups: [managers], channels: {{discord: "{ALICE}"}}}}
    - {{id: bob, name: Bob Ortiz, groups: [managers], channels: {{discord: "{BOB}"}}}}
    - {{id: carol, name: Carol Diaz, groups: [staff], channels: {{discord: "{CAROL}"}}}}
    - {{id: dana, name: Dana Li, groups: [finance], channels: {{discord: "{DANA}"}}}}
policies:
  default: deny
  rules:
    - id: pay
      description: Payments need a manager
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {{name: manager, approvers: [group:managers]}}
        timeout: 1h
channels:
  discord: SETTINGS
server: {{public_url: "http://clearance.test"}}
"""

Hooks = Callable[[bytes, dict[str, str]], Awaitable[httpx.Response]]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeDiscord, FakeServer]]:
    fake = FakeDiscord()
    with serve_in_thread(fake.app) as running:
        yield fake, running


@pytest.fixture
def discord(server: tuple[FakeDiscord, FakeServer]) -> FakeDiscord:
    server[0].reset()
    return server[0]


@pytest.fixture
def settings(server: tuple[FakeDiscord, FakeServer], discord: FakeDiscord) -> dict[str, Any]:
    return {
        "bot_token": discord.bot_token,
        "public_key": discord.public_key,
        "application_id": discord.application_id,
        "base_url": f"{server[1].url}/api/v10",
    }


@pytest.fixture
async def gw_hub(
    tmp_path: Path, clock: FrozenClock, settings: dict[str, Any]
) -> AsyncIterator[tuple[Gateway, ChannelHub]]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("SETTINGS", json.dumps(settings)))
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    yield gateway, hub
    await hub.aclose()
    await gateway.aclose()


@pytest.fixture
def hooks(gw_hub: tuple[Gateway, ChannelHub]) -> Hooks:
    gateway, hub = gw_hub
    app = create_app(gateway, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub

    async def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/hooks/discord", content=body, headers=headers)

    return post


async def drain(hub: ChannelHub, clock: FrozenClock, rounds: int = 3) -> None:
    """Run the dispatcher until nothing is due, letting short retry back-offs pass."""
    await run_outbox(hub, clock, rounds=rounds, step=timedelta(seconds=10))


async def ask(gateway: Gateway, requester: str = "carol") -> str:
    result = await gateway.check(
        Request("pay", {"amount": 500, "memo": "**urgent** @everyone"}, {"user": requester})
    )
    assert result.approval is not None
    return result.approval.approval.id


def message_for(discord: FakeDiscord, user_id: str) -> dict[str, Any]:
    channel_id = discord.dm_channel(user_id)
    return next(m for m in discord.messages.values() if m["channel_id"] == channel_id)


def now(clock: FrozenClock) -> int:
    return int(clock().timestamp())


def rejections(gateway: Gateway) -> list[str]:
    return [
        str(e.data.get("reason")) for e in iter_entries(gateway.db) if e.kind == "channel.rejected"
    ]


async def votes(gateway: Gateway, approval_id: str) -> tuple[Any, ...]:
    return (await gateway.approvals.get(approval_id)).approval.votes


async def test_click_approves_the_waiting_agent_and_refreshes_the_messages(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """A signed Approve click decides the request the agent waits on; the reply and the DMs
    show the decision without buttons."""
    gateway, hub = gw_hub
    ping = await hooks(*discord.signed(discord.ping(), timestamp=now(clock)))
    assert ping.status_code == 200 and ping.json() == {"type": 1}

    approval_id = await ask(gateway)
    waiter = asyncio.create_task(gateway.approvals.wait(approval_id, timeout=10))
    await drain(hub, clock)

    dms = discord.calls_to("POST", "/users/@me/channels")
    assert sorted(c.json["recipient_id"] for c in dms) == [ALICE, BOB]
    posts = discord.calls_to("POST", "/messages")
    assert len(posts) == 2
    for call in posts:
        assert call.headers["authorization"] == f"Bot {discord.bot_token}"
        assert call.headers["user-agent"].startswith("DiscordBot (")
        assert call.json["enforce_nonce"] is True and len(call.json["nonce"]) <= 25
        assert call.json["allowed_mentions"] == {"parse": []}
    sent = message_for(discord, BOB)
    [embed] = sent["embeds"]
    assert embed["title"] == "Approval needed: pay"
    assert embed["url"] == f"http://clearance.test/ui/approvals/{approval_id}"
    text = json.dumps(embed)
    assert "Carol Diaz" in text and "Payments need a manager" in text
    assert "\\\\*\\\\*urgent\\\\*\\\\* \\\\@everyone" in text  # agent input shown as typed
    [row] = sent["components"]
    approve, deny, link = row["components"]
    assert (approve["type"], approve["style"]) == (2, 3) and approve["custom_id"].startswith(
        "approve:"
    )
    assert (deny["style"], deny["custom_id"].split(":")[1]) == (4, approve["custom_id"][8:])
    assert approval_id not in approve["custom_id"] and link["style"] == 5

    click = discord.click(BOB, sent["id"])
    response = await hooks(*discord.signed(click, timestamp=now(clock)))
    assert response.status_code == 200
    reply = response.json()
    assert reply["type"] == 7 and reply["data"]["components"] == []
    assert "Approved by Bob Ortiz" in json.dumps(reply["data"]["embeds"])

    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    assert [(v.person, v.channel) for v in stored.approval.votes] == [("bob", "discord")]
    await drain(hub, clock)
    edits = discord.calls_to("PATCH", "")
    assert {c.path.rsplit("/", 1)[1] for c in edits} == set(discord.messages)
    for message in discord.messages.values():
        assert message["components"] == []
        assert "Approved by Bob Ortiz" in json.dumps(message["embeds"])


async def test_deny_opens_a_modal_and_its_submission_denies_with_the_reason(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """Deny answers with a modal; only its submission records the denial with the reason."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    waiter = asyncio.create_task(gateway.approvals.wait(approval_id, timeout=10))
    await drain(hub, clock)
    sent = message_for(discord, BOB)

    response = await hooks(
        *discord.signed(discord.click(BOB, sent["id"], "deny"), timestamp=now(clock))
    )
    modal = response.json()
    assert modal["type"] == 9 and modal["data"]["custom_id"].startswith("deny:")
    [label] = modal["data"]["components"]
    assert label["type"] == 18 and label["component"]["type"] == 4
    assert await votes(gateway, approval_id) == ()

    submission = discord.submit(BOB, sent["id"], modal, "Not this vendor")
    response = await hooks(*discord.signed(submission, timestamp=now(clock)))
    reply = response.json()
    assert reply["type"] == 7 and reply["data"]["components"] == []
    assert "Denied by Bob Ortiz: Not this vendor" in json.dumps(reply["data"])

    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "denied"
    assert stored.approval.decided_reason == "Not this vendor"
    await drain(hub, clock)
    assert "Denied by Bob Ortiz" in json.dumps(discord.messages[sent["id"]]["embeds"])


async def test_forged_signature_is_rejected_before_anything_counts(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """A click signed by another key, or tampered with after signing, gets 401 and no vote."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    await drain(hub, clock)
    click = discord.click(BOB, message_for(discord, BOB)["id"])
    other_key = SigningKey.generate()
    forged = await hooks(*discord.signed(click, timestamp=now(clock), key=other_key))
    assert forged.status_code == 401
    body, headers = discord.signed(click, timestamp=now(clock))
    tampered = await hooks(body.replace(BOB.encode(), DANA.encode()), headers)
    assert tampered.status_code == 401
    unsigned = await hooks(body, {"content-type": "application/json"})
    assert unsigned.status_code == 401
    assert rejections(gateway) == [
        "bad Discord signature",
        "bad Discord signature",
        "missing Discord signature headers",
    ]
    assert await votes(gateway, approval_id) == ()
    assert discord.calls_to("PATCH", "") == []


async def test_stale_timestamp_is_rejected(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """A correctly signed interaction older than five minutes is refused."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    await drain(hub, clock)
    click = discord.click(BOB, message_for(discord, BOB)["id"])
    response = await hooks(*discord.signed(click, timestamp=now(clock) - 301))
    assert response.status_code == 401
    assert rejections(gateway) == ["stale Discord interaction (older than 5 minutes)"]
    assert await votes(gateway, approval_id) == ()


async def test_replayed_interaction_counts_once(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """The same signed interaction delivered twice records one vote; the replay is refused."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway)
    await drain(hub, clock)
    signed = discord.signed(
        discord.click(BOB, message_for(discord, BOB)["id"]), timestamp=now(clock)
    )
    assert (await hooks(*signed)).json()["type"] == 7
    replay = (await hooks(*signed)).json()
    assert replay == {
        "type": 4,
        "data": {
            "content": "This click was already handled.",
            "flags": 64,
            "allowed_mentions": {"parse": []},
        },
    }
    assert [v.person for v in await votes(gateway, approval_id)] == ["bob"]
    assert len(rejections(gateway)) == 1 and "replayed event" in rejections(gateway)[0]


async def test_clicks_by_people_who_may_not_decide_are_refused(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """The requester, a non-approver (clicking from a server) and a stranger are each refused
    with an ephemeral reply."""
    gateway, hub = gw_hub
    approval_id = await ask(gateway, requester="alice")
    await drain(hub, clock)
    sent = message_for(discord, BOB)
    replies = {}
    for user, in_guild in [(ALICE, False), (DANA, True), (STRANGER, False)]:
        click = discord.click(user, sent["id"], in_guild=in_guild)
        response = await hooks(*discord.signed(click, timestamp=now(clock)))
        assert response.status_code == 200
        replies[user] = response.json()
    assert all(r["type"] == 4 and r["data"]["flags"] == 64 for r in replies.values())
    assert "requested this action" in replies[ALICE]["data"]["content"]
    assert "dana may not vote" in replies[DANA]["data"]["content"]  # member.user.id was read
    assert "directory" in replies[STRANGER]["data"]["content"]
    assert await votes(gateway, approval_id) == ()
    assert discord.messages[sent["id"]]["components"]  # nothing changed


async def test_clicks_after_the_decision_or_the_deadline_are_refused(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """A late click on a decided request, or on an expired one, records nothing."""
    gateway, hub = gw_hub
    decided = await ask(gateway)
    await drain(hub, clock)
    alice_click = discord.click(ALICE, message_for(discord, ALICE)["id"])
    await hooks(
        *discord.signed(discord.click(BOB, message_for(discord, BOB)["id"]), timestamp=now(clock))
    )
    late = (await hooks(*discord.signed(alice_click, timestamp=now(clock)))).json()
    assert late["type"] == 4 and late["data"]["flags"] == 64
    assert [v.person for v in await votes(gateway, decided)] == ["bob"]

    discord.reset()  # the fake forgets its DM channels too: the channel opens them again
    expired = await ask(gateway)
    await drain(hub, clock)
    click = discord.click(BOB, message_for(discord, BOB)["id"])
    clock.advance(hours=2)
    reply = (await hooks(*discord.signed(click, timestamp=now(clock)))).json()
    assert reply["type"] == 4 and "expired" in reply["data"]["content"]
    stored = await gateway.approvals.get(expired)
    assert stored.approval.state.value == "expired" and stored.approval.votes == ()


async def test_interactions_for_another_application_are_rejected(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock, hooks: Hooks
) -> None:
    """A validly signed interaction addressed to another application id is refused (400)."""
    gateway, _ = gw_hub
    ping = {**discord.ping(), "application_id": "42"}
    response = await hooks(*discord.signed(ping, timestamp=now(clock)))
    assert response.status_code == 400
    assert rejections(gateway) == ["interaction for another Discord application"]


async def test_lost_response_is_retried_without_a_second_message(
    gw_hub: tuple[Gateway, ChannelHub], discord: FakeDiscord, clock: FrozenClock
) -> None:
    """A 500 after Discord stored the message, then a 502: the nonce makes the retry return
    the first message, so each approver has exactly one."""
    gateway, hub = gw_hub
    discord.fail_after_create = 1
    discord.fail_next(502)
    await ask(gateway)
    await drain(hub, clock, rounds=4)
    assert next(c.status for c in discord.calls if c.path.endswith("/channels")) == 502
    posts = [c for c in discord.calls if c.path.endswith("/messages")]
    assert sorted(c.status for c in posts) == [200, 200, 500]
    nonces = [c.json["nonce"] for c in posts]
    assert sorted(nonces.count(n) for n in set(nonces)) == [1, 2]  # the retry reused its nonce
    assert len(discord.messages) == 2
    assert {m["channel_id"] for m in discord.messages.values()} == {
        discord.dm_channel(ALICE),
        discord.dm_channel(BOB),
    }
    kinds = [e.kind for e in iter_entries(gateway.db)]
    assert kinds.count("delivery.sent") == 2 and "delivery.failed" not in kinds


def message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "approval_id": "apr_1",
        "action": "pay",
        "params": {"amount": 5},
        "reasons": ("because",),
        "requester": "Carol",
        "agent": None,
        "stage": StageView(0, "manager", 1),
        "expires_at": datetime(2026, 11, 24, 15, 0, tzinfo=UTC),
        "state": "pending",
        "status_line": "Waiting for manager (stage 1 of 1)",
        "approve_token": "tok",
        "deny_token": "tok",
        "inbox_url": "http://clearance.test/ui/approvals/apr_1",
    }
    return Message(**{**fields, **overrides})


async def test_platform_errors_map_to_channel_errors(
    discord: FakeDiscord, settings: dict[str, Any]
) -> None:
    """Bad auth and closed DMs are permanent; rate limits and 5xx are retryable."""
    wrong = DiscordChannel({**settings, "bot_token": "wrong-token"}, "")
    with pytest.raises(ChannelError) as bad_auth:
        await wrong.send(message(), BOB)
    assert not bad_auth.value.retry and "401" in str(bad_auth.value)
    assert "wrong-token" not in str(bad_auth.value)
    await wrong.aclose()

    channel = DiscordChannel(settings, "")
    discord.no_dms.add(DANA)
    with pytest.raises(ChannelError) as closed:
        await channel.send(message(), DANA)
    assert not closed.value.retry and "50007" in str(closed.value)
    for status in (429, 500):
        discord.fail_next(status)
        with pytest.raises(ChannelError) as transient:
            await channel.send(message(approval_id=f"apr_{status}"), BOB)
        assert transient.value.retry
    with pytest.raises(ChannelError) as gone:
        await channel.update({"channel_id": "1", "message_id": "2"}, message())
    assert not gone.value.retry and "10008" in str(gone.value)
    await channel.aclose()


def test_settings_are_validated_without_echoing_secrets(settings: dict[str, Any]) -> None:
    """A missing key is named in the error; a malformed public key is refused; no secret leaks."""
    for key in ("bot_token", "public_key", "application_id"):
        partial = {k: v for k, v in settings.items() if k != key}
        with pytest.raises(ValueError, match=repr(key)) as missing:
            DiscordChannel(partial, "")
        assert settings["bot_token"] not in str(missing.value)
    with pytest.raises(ValueError, match="public_key"):
        DiscordChannel({**settings, "public_key": "zz" * 32}, "")
    with pytest.raises(ValueError, match="public_key"):
        DiscordChannel({**settings, "public_key": "ab" * 16}, "")
    channel = DiscordChannel({**settings, "application_id": 1300000000000000001}, "")
    assert channel.application_id == "1300000000000000001"
