"""`/approve <id> [approve|deny] [reason]` on Slack (a slash command), Discord (an
APPLICATION_COMMAND interaction) and Teams (a message to the bot): each verified the platform's
way, deduped on the platform's event id, and decided only by an eligible approver who is not
the requester."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

from clearance.audit.export import iter_entries
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import serve_in_thread
from clearance.testing.fakes.discord import FakeDiscord
from clearance.testing.fakes.slack import FakeSlack
from clearance.testing.fakes.teams import FakeTeams
from clearance.testing.outbox import run_outbox

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {NAME: "A_ID"}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {NAME: "B_ID"}}
    - {id: carol, name: Carol Diaz, groups: [managers], channels: {NAME: "C_ID"}}
    - {id: dana, name: Dana Li, groups: [finance], channels: {NAME: "D_ID"}}
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
channels:
  NAME: SETTINGS
server: {public_url: "http://clearance.test"}
"""


@dataclass
class Platform:
    name: str
    fake: Any
    ids: dict[str, str]  # person → their id on the platform
    settings: Callable[[str], dict[str, Any]]  # the channel settings, given the fake's URL
    build: Callable[[str, list[str], bool], tuple[bytes, dict[str, str]]]  # a (forged) command
    answer: Callable[[httpx.Response], str]  # what the sender was told


def _slack(clock: FrozenClock) -> Platform:
    fake = FakeSlack()
    ids = {"alice": "U0ALICE", "bob": "U0BOB", "carol": "U0CAROL", "dana": "U0DANA"}

    def build(person: str, words: list[str], forged: bool) -> tuple[bytes, dict[str, str]]:
        form = fake.slash_command(ids[person], " ".join(words))
        stamp = int(clock().timestamp())
        return fake.signed(form, timestamp=stamp, form=True, secret="forged" if forged else None)

    def answer(response: httpx.Response) -> str:
        body = response.json()
        assert body["response_type"] == "ephemeral"
        return str(body["text"])

    def settings(url: str) -> dict[str, Any]:
        return {
            "bot_token": fake.bot_token,
            "signing_secret": fake.signing_secret,
            "base_url": f"{url}/api/",
        }

    return Platform("slack", fake, ids, settings, build, answer)


def _discord(clock: FrozenClock) -> Platform:
    fake = FakeDiscord()
    ids = {p: f"90000000000000000{n}" for n, p in enumerate(("alice", "bob", "carol", "dana"))}

    def build(person: str, words: list[str], forged: bool) -> tuple[bytes, dict[str, str]]:
        options = dict(zip(("id", "decision", "reason"), words, strict=False))
        interaction = fake.command(ids[person], "approve", **options)
        key = SigningKey.generate() if forged else None
        return fake.signed(interaction, timestamp=int(clock().timestamp()), key=key)

    def answer(response: httpx.Response) -> str:
        body = response.json()
        assert body["type"] == 4 and body["data"]["flags"] == 64  # an ephemeral message
        return str(body["data"]["content"])

    def settings(url: str) -> dict[str, Any]:
        return {
            "bot_token": fake.bot_token,
            "public_key": fake.public_key,
            "application_id": fake.application_id,
            "base_url": f"{url}/api/v10",
        }

    return Platform("discord", fake, ids, settings, build, answer)


def _teams(clock: FrozenClock) -> Platform:
    fake = FakeTeams()
    ids = {p: f"aad-{p}" for p in ("alice", "bob", "carol", "dana")}

    def build(person: str, words: list[str], forged: bool) -> tuple[bytes, dict[str, str]]:
        text = "<at>Clearance</at> /approve " + " ".join(words)
        variant = "bad_signature" if forged else None
        return fake.message(text, user=ids[person], now=clock(), variant=variant)

    def answer(response: httpx.Response) -> str:
        assert response.status_code == 200
        return str(fake.posted[-1]["text"])  # the bot's reply, through the Bot Connector

    def settings(url: str) -> dict[str, Any]:
        fake.base_url = url
        return fake.settings()

    return Platform("teams", fake, ids, settings, build, answer)


MAKERS = {"slack": _slack, "discord": _discord, "teams": _teams}


@dataclass
class Env:
    platform: Platform
    gateway: Gateway
    hub: ChannelHub
    clock: FrozenClock
    post: Callable[[bytes, dict[str, str]], Awaitable[httpx.Response]]

    async def ask(self) -> str:
        result = await self.gateway.check(Request("pay", {"amount": 500}, {"user": "carol"}))
        assert result.approval is not None
        await run_outbox(self.hub, self.clock)  # everyone has the request
        return result.approval.approval.id

    async def command(
        self, person: str, *words: str
    ) -> tuple[httpx.Response, bytes, dict[str, str]]:
        body, headers = self.platform.build(person, list(words), False)
        return await self.post(body, headers), body, headers

    async def votes(self, approval_id: str) -> list[tuple[str, str, str | None]]:
        stored = await self.gateway.approvals.get(approval_id)
        return [(v.person, v.decision.value, v.channel) for v in stored.approval.votes]

    def rejections(self) -> list[str]:
        return [
            str(e.data.get("reason"))
            for e in iter_entries(self.gateway.db)
            if e.kind == "channel.rejected"
        ]


@pytest.fixture(params=sorted(MAKERS))
def served(request: pytest.FixtureRequest, clock: FrozenClock) -> Iterator[tuple[Platform, str]]:
    platform = MAKERS[request.param](clock)
    with serve_in_thread(platform.fake.app) as server:
        yield platform, server.url


@pytest.fixture
async def env(
    tmp_path: Path, clock: FrozenClock, served: tuple[Platform, str]
) -> AsyncIterator[Env]:
    platform, url = served
    settings = json.dumps(platform.settings(url))
    policy = POLICY.replace("NAME", platform.name).replace("SETTINGS", settings)
    for person, key in (("alice", "A_ID"), ("bob", "B_ID"), ("carol", "C_ID"), ("dana", "D_ID")):
        policy = policy.replace(key, platform.ids[person])
    path = tmp_path / "p.yaml"
    path.write_text(policy)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    app = create_app(gateway, scheduler=False, inbox=False, channels=False)
    app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
            return await client.post(f"/hooks/{platform.name}", content=body, headers=headers)

        yield Env(platform, gateway, hub, clock, post)
    await hub.aclose()
    await gateway.aclose()


async def test_an_eligible_approver_decides_by_command(env: Env) -> None:
    """Bob's `/approve <id>` approves the request as Bob through this channel, tells him so,
    and the messages sent earlier are then refreshed."""
    approval_id = await env.ask()
    response, _, _ = await env.command("bob", approval_id)
    assert "Approved by Bob Ortiz" in env.platform.answer(response)
    assert await env.votes(approval_id) == [("bob", "approve", env.platform.name)]
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "approved"


async def test_a_denial_by_command_carries_its_reason(env: Env) -> None:
    """`/approve <id> deny <reason>` denies with that reason."""
    approval_id = await env.ask()
    response, _, _ = await env.command("alice", approval_id, "deny", "not this quarter")
    assert "Denied by Alice Ng: not this quarter" in env.platform.answer(response)
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.decided_reason == "not this quarter"


async def test_a_forged_command_is_refused_and_audited(env: Env) -> None:
    """A command whose signature (or token) was not made by the platform changes nothing."""
    approval_id = await env.ask()
    body, headers = env.platform.build("bob", [approval_id], True)
    response = await env.post(body, headers)
    assert response.status_code == 401
    assert await env.votes(approval_id) == []
    assert len(env.rejections()) == 1


async def test_a_replayed_command_counts_once(env: Env) -> None:
    """The same signed command delivered twice is one vote; the second is audited as a
    replay."""
    approval_id = await env.ask()
    first, body, headers = await env.command("alice", approval_id, "approve", "fine by me")
    assert first.status_code == 200
    again = await env.post(body, headers)
    assert again.status_code == 200
    assert await env.votes(approval_id) == [("alice", "approve", env.platform.name)]
    assert any(r.startswith("replayed event") for r in env.rejections())


async def test_someone_outside_the_stage_cannot_decide_by_command(env: Env) -> None:
    """Dana (finance) is a known person but not an approver of this stage: no vote."""
    approval_id = await env.ask()
    response, _, _ = await env.command("dana", approval_id)
    text = env.platform.answer(response)
    assert "Approved" not in text
    assert await env.votes(approval_id) == []


async def test_the_requester_cannot_approve_their_own_request_by_command(env: Env) -> None:
    """Carol asked; though she is a manager, her own `/approve` does not count."""
    approval_id = await env.ask()
    response, _, _ = await env.command("carol", approval_id)
    text = env.platform.answer(response)
    assert "Approved" not in text
    assert await env.votes(approval_id) == []
    stored = await env.gateway.approvals.get(approval_id)
    assert stored.approval.state.value == "pending"


async def test_a_malformed_command_gets_help_and_no_vote(env: Env) -> None:
    """`/approve <id> maybe` is answered with how to write the command; nothing is decided."""
    approval_id = await env.ask()
    response, _, _ = await env.command("bob", approval_id, "maybe")
    assert "approve or deny" in env.platform.answer(response)
    assert await env.votes(approval_id) == []
