"""Channels cannot carry a second factor: an MFA stage's message links to the inbox instead
of offering buttons, and a vote arriving from a channel is refused with that link."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from clearance.channels.base import RawRequest
from clearance.channels.hub import ChannelHub
from clearance.gateway import Gateway
from clearance.identity import mfa
from clearance.policy import Request
from clearance.testing import FrozenClock, MemoryChannel, run_outbox, sign_memory_callback

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {chat: C-ALICE}}
    - {id: carol, groups: [staff], channels: {chat: C-CAROL}}
    - {id: dana, name: Dana Kim, groups: [finance], channels: {chat: C-DANA}}
policies:
  default: deny
  rules:
    - id: big
      actions: [pay]
      effect: approve
      approval:
        stages:
          - {name: manager, approvers: [group:managers]}
          - {name: finance, approvers: [group:finance], mfa: totp}
channels:
  chat: {kind: memory, secret: chat-secret}
server: {public_url: "http://clearance.test"}
"""


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Gateway]:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    gateway = Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)
    gateway.approvals.mfa_settings = mfa.settings_provider(lambda: gateway.policy.settings)
    yield gateway
    await gateway.aclose()


async def click(hub: ChannelHub, clock: FrozenClock, user: str, token: str, n: int) -> None:
    body = json.dumps(
        {"event_id": f"e{n}", "user": user, "token": token, "decision": "approve"}
    ).encode()
    headers = {"x-memory-signature": sign_memory_callback("chat-secret", body)}
    await hub.handle("chat", RawRequest("POST", "/hooks/chat", headers, {}, body, clock()))


async def test_mfa_stage_message_has_no_buttons_and_a_click_is_refused(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Stage 1 has buttons; the MFA stage's message has none but an inbox link, and a vote
    sent from the channel anyway is refused (mfa_required) with the link in the reply."""
    hub = ChannelHub.from_settings(gw)
    result = await gw.check(Request("pay", {"amount": 5}, {"user": "carol"}))
    assert result.approval is not None
    approval_id = result.approval.approval.id
    await run_outbox(hub, clock, rounds=5, step=timedelta(minutes=1))
    chat = MemoryChannel.instances["chat"]
    first = next(m for a, m in chat.sent if a == "C-ALICE")
    assert first.approve_token is not None
    assert not any("second factor" in r for r in first.reasons)
    await click(hub, clock, "C-ALICE", first.approve_token, 1)
    await run_outbox(hub, clock, rounds=5, step=timedelta(minutes=1))
    to_dana = [m for a, m in chat.sent if a == "C-DANA"]
    assert to_dana, "the finance stage was not sent to dana"
    message = to_dana[-1]
    assert message.approve_token is None and message.deny_token is None and not message.open
    link = f"http://clearance.test/ui/approvals/{approval_id}"
    assert f"Open in the inbox (requires second factor): {link}" in message.reasons

    await click(hub, clock, "C-DANA", first.approve_token, 2)  # a forged attempt, old token
    outcome = chat.acknowledged[-1]
    assert not outcome.ok
    assert (await gw.approvals.get(approval_id)).approval.state.value == "pending"
    body = json.dumps(
        {"event_id": "e3", "user": "C-DANA", "approval_id": approval_id, "decision": "approve"}
    ).encode()
    headers = {"x-memory-signature": sign_memory_callback("chat-secret", body)}
    await hub.handle("chat", RawRequest("POST", "/hooks/chat", headers, {}, body, clock()))
    outcome = chat.acknowledged[-1]
    assert not outcome.ok and "second factor" in outcome.text and link in outcome.text
    assert (await gw.approvals.get(approval_id)).approval.state.value == "pending"
    await hub.aclose()
