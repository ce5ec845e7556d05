""" "Approve always" from channels: the button, the callback, the text command."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clearance import grants
from clearance.channels import discord, slack, teams, textcommand
from clearance.channels.base import Message, RawRequest
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.testing import FrozenClock, MemoryChannel, run_outbox, sign_memory_callback

from .helpers import POLICY, pay, write_policy

CHANNEL_POLICY = POLICY.replace(
    "{id: alice, name: Alice Ng, groups: [managers]}",
    "{id: alice, name: Alice Ng, groups: [managers], channels: {memory: u-alice}}",
).replace("controls:", "channels:\n  memory: {secret: s3cret}\ncontrols:")


@dataclass
class Env:
    gateway: Gateway
    hub: ChannelHub
    clock: FrozenClock

    @property
    def channel(self) -> MemoryChannel:
        return MemoryChannel.instances["memory"]

    async def click(self, event: str, token: str | None, decision: str) -> None:
        body = json.dumps(
            {"event_id": event, "user": "u-alice", "token": token, "decision": decision}
        ).encode()
        raw = RawRequest(
            "POST",
            "/hooks/memory",
            {"x-memory-signature": sign_memory_callback("s3cret", body)},
            {},
            body,
            self.clock(),
        )
        await self.hub.handle("memory", raw)

    async def sent_to_alice(self, approval_id: str) -> Message:
        await run_outbox(self.hub, self.clock, rounds=1)
        return next(m for _, m in reversed(self.channel.sent) if m.approval_id == approval_id)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = FrozenClock()
    path = write_policy(tmp_path, CHANNEL_POLICY)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    yield Env(gateway, hub, clock)
    await hub.aclose()
    await gateway.aclose()


async def test_always_button_creates_a_grant(env: Env) -> None:
    """The message offers "approve always"; clicking it approves and grants the scope."""
    held = await env.gateway.check(pay())
    assert held.approval is not None
    message = await env.sent_to_alice(held.approval.approval.id)
    assert message.always_token is not None
    await env.click("ev-1", message.always_token, "always")
    stored = await env.gateway.approvals.get(held.approval.approval.id)
    assert stored.approval.state == "approved"
    made = await grants.list_grants(env.gateway.db, now=env.clock())
    assert [g.grantor for g in made] == ["alice"]
    assert env.channel.acknowledged[-1].ok


async def test_no_always_button_where_the_rule_does_not_allow_it(env: Env) -> None:
    """A multi-stage request offers no "always"; a forged "always" click is refused."""
    held = await env.gateway.check(pay(amount=9000))
    assert held.approval is not None
    message = await env.sent_to_alice(held.approval.approval.id)
    assert message.always_token is None and message.approve_token is not None
    await env.click("ev-2", message.approve_token, "always")
    outcome = env.channel.acknowledged[-1]
    assert not outcome.ok and "cannot be approved always" in outcome.text
    stored = await env.gateway.approvals.get(held.approval.approval.id)
    assert stored.approval.state == "pending" and stored.approval.votes == ()


def test_text_command_accepts_always() -> None:
    """`/approve <id> always [comment]` parses to the always decision."""
    command = textcommand.parse("/approve apr_1 always trusted vendor")
    assert command == textcommand.Command("apr_1", "always", "trusted vendor")
    with pytest.raises(textcommand.CommandError):
        textcommand.parse("/deny apr_1 always")


async def test_platform_renderings_carry_the_always_button(env: Env) -> None:
    """Slack, Discord and Teams render a third button only when the message offers it."""
    held = await env.gateway.check(pay())
    assert held.approval is not None
    message = await env.sent_to_alice(held.approval.approval.id)
    slack_ids = [
        e.get("action_id")
        for block in slack.render_blocks(message)
        if block.get("type") == "actions"
        for e in block["elements"]
    ]
    assert slack.ALWAYS in slack_ids
    buttons = discord.render(message)["components"][0]["components"]
    assert any(str(b.get("custom_id", "")).startswith("always:") for b in buttons)
    assert "always" in json.dumps(teams.build_card(message))
    plain = slack.render_blocks(_without_always(message))
    assert slack.ALWAYS not in json.dumps(plain)


def _without_always(message: Message) -> Message:
    from dataclasses import replace

    return replace(message, always_token=None)


async def test_override_alerts_security_on_every_channel(tmp_path: Path) -> None:
    """An override alert reaches each security person on each of their channels, naming the
    override; a blocked-action alert still goes to the first channel only."""
    from clearance import override as ovr

    text = CHANNEL_POLICY.replace(
        "{id: sam, name: Sam Rivera, groups: [security]}",
        "{id: sam, name: Sam Rivera, groups: [security], channels: {memory: u-sam, pager: p-sam}}",
    ).replace(
        "  memory: {secret: s3cret}\n",
        "  memory: {secret: s3cret}\n  pager: {kind: memory, name: pager, secret: p}\n",
    )
    clock = FrozenClock()
    path = write_policy(tmp_path, text)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    hub = ChannelHub.from_settings(gateway)
    try:
        await ovr.override(gateway, person="frank", reason="incident 9", request=pay(amount=9000))
        await run_outbox(hub, clock, rounds=1)
        memory, pager = MemoryChannel.instances["memory"], MemoryChannel.instances["pager"]
        to_sam = [m for a, m in memory.sent if a == "u-sam"] + [
            m for a, m in pager.sent if a == "p-sam"
        ]
        assert len(to_sam) == 2
        assert all("EMERGENCY OVERRIDE" in m.status_line for m in to_sam)
        assert {m.alert_title for m in to_sam} == {"Emergency override: payments.transfer"}
        await gateway.check(pay(payee="evil"))
        await run_outbox(hub, clock, rounds=1)
        blocked = [m for a, m in pager.sent if "BLOCKED" in m.status_line]
        assert blocked == []
    finally:
        await hub.aclose()
        await gateway.aclose()
