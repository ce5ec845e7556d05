"""Microsoft Teams: a Bot Framework bot against a local fake of the Bot Connector and login,
and notify-only Workflows webhooks."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance.audit.export import iter_entries
from clearance.channels.base import CallbackRejected, ChannelError, RawRequest
from clearance.channels.hub import ChannelHub
from clearance.channels.teams import TeamsChannel
from clearance.gateway import Gateway
from clearance.policy import Request
from clearance.server.app import create_app
from clearance.testing import FrozenClock
from clearance.testing.fakes import serve_in_thread
from clearance.testing.fakes.teams import FakeTeams
from clearance.testing.outbox import run_outbox

POLICY = """
directory:
  people:
    - {id: alice, name: Alice Ng, groups: [managers], channels: {teams: aad-alice}}
    - {id: bob, name: Bob Ortiz, groups: [managers], channels: {teams: aad-bob}}
    - {id: carol, name: Carol Diaz, groups: [staff], channels: {teams: aad-carol}}
    - {id: dana, name: Dana Lee, groups: [finance], channels: {teams: aad-dana}}
    - {id: erin, name: Erin Wu, groups: [finance], channels: {teams: workflows}}
policies:
  default: deny
  rules:
    - id: pay
      description: Payments need a manager
      actions: [pay]
      effect: approve
      approval:
        stages: [{name: manager, approvers: [group:managers]}]
        timeout: 2h
    - id: wire
      description: Wires need finance
      actions: [wire]
      effect: approve
      approval:
        stages: [{name: finance, approvers: [group:finance]}]
        timeout: 2h
channels:
  teams: SETTINGS
server: {public_url: "http://clearance.test"}
"""


@pytest.fixture(scope="module")
def served() -> Iterator[FakeTeams]:
    fake = FakeTeams()
    with serve_in_thread(fake.app) as server:
        fake.base_url = server.url
        yield fake


@pytest.fixture
def fake(served: FakeTeams) -> FakeTeams:
    served.reset()
    return served


async def open_gateway(tmp_path: Path, clock: FrozenClock, settings: dict[str, Any]) -> Gateway:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("SETTINGS", json.dumps(settings)))
    return Gateway.open(path, database_url=f"sqlite:///{tmp_path}/c.db", clock=clock)


@pytest.fixture
async def gw(tmp_path: Path, clock: FrozenClock, fake: FakeTeams) -> AsyncIterator[Gateway]:
    gateway = await open_gateway(tmp_path, clock, fake.settings())
    yield gateway
    await gateway.aclose()


@pytest.fixture
async def hub(gw: Gateway) -> AsyncIterator[ChannelHub]:
    hub = ChannelHub.from_settings(gw)
    yield hub
    await hub.aclose()


async def drain(hub: ChannelHub, clock: FrozenClock, rounds: int = 3) -> None:
    """Run the dispatcher until nothing is due, letting retry back-offs pass."""
    await run_outbox(hub, clock, rounds=rounds, step=timedelta(minutes=5))


_APPS: weakref.WeakKeyDictionary[ChannelHub, Any] = weakref.WeakKeyDictionary()


async def post(hub: ChannelHub, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST a callback to /hooks/teams of an app serving `hub` (built once per hub)."""
    app = _APPS.get(hub)
    if app is None:
        app = _APPS[hub] = create_app(hub.gateway, scheduler=False, inbox=False, channels=False)
        app.state.channels = hub
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/hooks/teams", content=body, headers=headers)


def kinds(gw: Gateway) -> list[str]:
    return [e.kind for e in iter_entries(gw.db)]


def sent_to(fake: FakeTeams, user: str) -> dict[str, Any]:
    """The activity the bot posted in its 1:1 conversation with `user`."""
    conversation_id = f"a:conv-{user}"
    return next(a for (c, _), a in fake.activities.items() if c == conversation_id)


def card_of(activity: dict[str, Any]) -> dict[str, Any]:
    card: dict[str, Any] = activity["attachments"][0]["content"]
    return card


def action_types(card: dict[str, Any]) -> list[str]:
    return [a["type"] for a in card["actions"]]


def token_of(card: dict[str, Any], verb: str = "approve") -> str:
    action = next(a for a in card["actions"] if a.get("verb") == verb)
    token: str = action["data"]["token"]
    return token


async def pending_pay(gw: Gateway, hub: ChannelHub, clock: FrozenClock, user: str = "carol") -> str:
    result = await gw.check(Request("pay", {"amount": 500, "to": "ACME"}, {"user": user}))
    assert result.approval is not None
    await drain(hub, clock)
    return result.approval.approval.id


def click(
    fake: FakeTeams, clock: FrozenClock, user: str, verb: str = "approve", **kw: Any
) -> tuple[bytes, dict[str, str]]:
    """`user` clicks `verb` on the card the bot sent to `kw.get('owner', user)`."""
    owner = kw.pop("owner", user)
    activity = sent_to(fake, f"aad-{owner}")
    token = kw.pop("token", None) or token_of(card_of(activity), verb)
    return fake.invoke(
        token,
        verb,
        user=f"aad-{user}",
        now=clock(),
        conversation_id=f"a:conv-aad-{owner}",
        reply_to=activity["id"],
        **kw,
    )


def invoke_response(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    assert data["statusCode"] == 200
    return data


# -- the happy path ----------------------------------------------------------------------------
async def test_execute_approve_lets_the_agent_proceed_and_refreshes_the_cards(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A signed Action.Execute approve ends the agent's wait; the invoke answer and both
    approvers' cards show the decision without buttons."""
    approval_id = await pending_pay(gw, hub, clock)
    waiter = asyncio.create_task(gw.approvals.wait(approval_id, timeout=30))
    assert sorted(fake.conversations) == ["a:conv-aad-alice", "a:conv-aad-bob"]
    create = next(c for c in fake.calls if c.path == "/v3/conversations")
    assert create.body["members"] == [{"id": create.body["members"][0]["id"]}]
    assert create.body["tenantId"] == fake.tenant_id and create.body["isGroup"] is False
    card = card_of(sent_to(fake, "aad-bob"))
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts == {"amount": "500", "to": "ACME"}
    assert any(b["type"] == "Input.Text" and b["id"] == "reason" for b in card["body"])
    assert action_types(card) == ["Action.Execute", "Action.Execute", "Action.OpenUrl"]
    approve = card["actions"][0]
    assert approve["verb"] == "approve" and set(approve["data"]) == {"token"}
    assert approve["fallback"]["type"] == "Action.Submit"
    assert approve["fallback"]["data"] == {"verb": "approve", "token": approve["data"]["token"]}
    assert card["actions"][2]["url"] == f"http://clearance.test/ui/approvals/{approval_id}"

    response = await post(hub, *click(fake, clock, "bob"))
    answer = invoke_response(response)
    assert answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert action_types(answer["value"]) == ["Action.OpenUrl"]
    assert "Approved by Bob Ortiz" in json.dumps(answer["value"])
    stored = await asyncio.wait_for(waiter, 5)
    assert stored.approval.state.value == "approved"
    assert [(v.person, v.channel) for v in stored.approval.votes] == [("bob", "teams")]

    await drain(hub, clock)
    refreshed = {u["conversation"]["id"]: card_of(u) for u in fake.updates}
    assert set(refreshed) == {"a:conv-aad-alice", "a:conv-aad-bob"}
    for updated in refreshed.values():
        assert action_types(updated) == ["Action.OpenUrl"]
        assert "Approved by Bob Ortiz" in json.dumps(updated)
    assert len(fake.token_requests) == 1  # one token for every call
    assert fake.token_requests[0]["scope"] == "https://api.botframework.com/.default"


async def test_deny_with_a_reason_from_the_input(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """Deny carries the Input.Text reason into the decision and the refreshed card."""
    approval_id = await pending_pay(gw, hub, clock)
    response = await post(hub, *click(fake, clock, "bob", "deny", reason="  not today  "))
    answer = invoke_response(response)
    assert "Denied by Bob Ortiz: not today" in json.dumps(answer["value"])
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "denied"
    assert stored.approval.votes[0].comment == "not today"


async def test_action_submit_fallback_decides_and_replaces_the_card(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A client without Universal Actions sends a message with `value`; it decides, the hook
    answers 200, and the card is replaced through the Bot Connector at once."""
    approval_id = await pending_pay(gw, hub, clock)
    activity = sent_to(fake, "aad-alice")
    body, headers = fake.submit(
        token_of(card_of(activity)),
        "approve",
        user="aad-alice",
        now=clock(),
        conversation_id="a:conv-aad-alice",
        reply_to=activity["id"],
    )
    response = await post(hub, body, headers)
    assert response.status_code == 200
    assert (await gw.approvals.get(approval_id)).approval.state.value == "approved"
    assert len(fake.updates) == 1 and fake.updates[0]["id"] == activity["id"]
    assert action_types(card_of(fake.updates[0])) == ["Action.OpenUrl"]


async def test_refused_submit_is_answered_in_the_chat(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A fallback click that does not count gets a text reply; the card is left alone."""
    await pending_pay(gw, hub, clock)
    activity = sent_to(fake, "aad-bob")
    body, headers = fake.submit(
        token_of(card_of(activity)),
        "approve",
        user="aad-dana",
        now=clock(),
        conversation_id="a:conv-aad-bob",
        reply_to=activity["id"],
    )
    assert (await post(hub, body, headers)).status_code == 200
    reply = fake.posted[-1]
    assert reply["text"] and reply["replyToId"] == activity["id"] and not fake.updates


# -- the JWT -----------------------------------------------------------------------------------
BAD_TOKENS = (
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "unknown_key",
    "bad_signature",
    "serviceurl_mismatch",
    "none_alg",
)


async def test_bad_tokens_are_rejected_before_anything_counts(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """Every kind of bad Bot Framework JWT is a 401 and an audited rejection, and no vote."""
    approval_id = await pending_pay(gw, hub, clock)
    for n, variant in enumerate(BAD_TOKENS, start=1):
        response = await post(hub, *click(fake, clock, "bob", variant=variant))
        assert response.status_code == 401, variant
        assert kinds(gw).count("channel.rejected") == n, variant
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert "vote.recorded" not in kinds(gw) and not fake.updates


async def test_missing_or_malformed_authorization_is_rejected(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """No bearer token, another scheme or garbage: 401, nothing recorded."""
    approval_id = await pending_pay(gw, hub, clock)
    body, headers = click(fake, clock, "bob")
    for authorization in (None, "Basic Ym9iOnB3", "Bearer not.a.jwt"):
        bad = {k: v for k, v in headers.items() if k != "authorization"}
        if authorization:
            bad["authorization"] = authorization
        assert (await post(hub, body, bad)).status_code == 401
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert kinds(gw).count("channel.rejected") == 3


async def test_a_token_within_the_clock_skew_is_accepted(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A token that expired four minutes ago still counts (five minutes of skew)."""
    approval_id = await pending_pay(gw, hub, clock)
    body, headers = click(fake, clock, "bob")
    clock.advance(minutes=59 + 4)
    invoke_response(await post(hub, body, headers))
    assert (await gw.approvals.get(approval_id)).approval.state.value == "approved"


async def test_activity_not_bound_to_the_token_is_rejected(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A valid token with an activity naming another service URL, or a channel the signing
    key is not endorsed for, is refused."""
    approval_id = await pending_pay(gw, hub, clock)
    body, headers = click(fake, clock, "bob")
    for change in ({"serviceUrl": "https://attacker.example/"}, {"channelId": "skype"}):
        activity = json.loads(body) | change
        response = await post(hub, json.dumps(activity).encode(), headers)
        assert response.status_code == 401
    assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert kinds(gw).count("channel.rejected") == 2


async def test_activity_from_another_tenant_is_rejected(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """With tenant_id set, a validly signed activity from another tenant is refused (403)."""
    approval_id = await pending_pay(gw, hub, clock)
    other = {"channelData": {"tenant": {"id": "other-tenant"}}}
    response = await post(hub, *click(fake, clock, "bob", tweak=other))
    assert response.status_code == 403
    assert (await gw.approvals.get(approval_id)).approval.votes == ()


async def test_signing_keys_are_cached_and_refetched_on_an_unknown_kid(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """Keys are fetched once; after a rollover the new kid triggers one refetch and passes,
    and a kid that stays unknown is refused without fetching again."""
    await pending_pay(gw, hub, clock)
    body, headers = fake.invoke("t", "approve", user="aad-nobody", now=clock())
    await post(hub, body, headers)
    body, headers = fake.invoke("t", "approve", user="aad-nobody", now=clock())
    await post(hub, body, headers)
    assert (fake.metadata_fetches, fake.keys_fetches) == (1, 1)
    fake.rotate_key()
    body, headers = fake.invoke("t", "approve", user="aad-nobody", now=clock())
    assert (await post(hub, body, headers)).status_code == 200
    assert fake.keys_fetches == 2
    for _ in range(2):
        body, headers = fake.invoke("t", "approve", user="x", now=clock(), variant="unknown_key")
        assert (await post(hub, body, headers)).status_code == 401
    assert fake.keys_fetches == 2  # an unknown kid refetches at most once per five minutes
    auth = hub.channels["teams"].auth  # type: ignore[attr-defined]
    later = auth.monotonic() + 301
    auth.monotonic = lambda: later
    body, headers = fake.invoke("t", "approve", user="x", now=clock(), variant="unknown_key")
    assert (await post(hub, body, headers)).status_code == 401
    assert fake.keys_fetches == 3


# -- clicks that must not count ----------------------------------------------------------------
async def test_replayed_activity_counts_once(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """The same activity id delivered twice is one vote; the replay is audited."""
    approval_id = await pending_pay(gw, hub, clock)
    body, headers = click(fake, clock, "bob", activity_id="f:once")
    invoke_response(await post(hub, body, headers))
    again = invoke_response(await post(hub, body, headers))
    assert again["type"] == "application/vnd.microsoft.activity.message"
    assert "already handled" in again["value"]
    assert len((await gw.approvals.get(approval_id)).approval.votes) == 1
    assert kinds(gw).count("channel.rejected") == 1


async def test_clicks_by_the_wrong_people_are_refused(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """Someone outside the stage, the requester and a stranger get a message, not a vote."""
    by_carol = await pending_pay(gw, hub, clock, user="carol")
    for clicker, expect in (("dana", "may not vote"), ("nobody", "directory")):
        answer = invoke_response(await post(hub, *click(fake, clock, clicker, owner="bob")))
        assert answer["type"] == "application/vnd.microsoft.activity.message"
        assert expect in answer["value"]
    fake.reset()
    by_alice = await pending_pay(gw, hub, clock, user="alice")  # a manager asking for herself
    assert "a:conv-aad-alice" not in fake.conversations
    answer = invoke_response(await post(hub, *click(fake, clock, "alice", owner="bob")))
    assert answer["type"] == "application/vnd.microsoft.activity.message"
    assert "requested this action" in answer["value"]
    for approval_id in (by_carol, by_alice):
        assert (await gw.approvals.get(approval_id)).approval.votes == ()
    assert "vote.recorded" not in kinds(gw)


async def test_click_after_the_decision_is_refused(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """Alice's stale card cannot change a request Bob already approved."""
    approval_id = await pending_pay(gw, hub, clock)
    invoke_response(await post(hub, *click(fake, clock, "bob")))
    answer = invoke_response(await post(hub, *click(fake, clock, "alice", "deny")))
    assert answer["type"] == "application/vnd.microsoft.activity.message"
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "approved" and len(stored.approval.votes) == 1


async def test_click_after_expiry_is_refused(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A click on an expired request records nothing, and the cards say it expired."""
    approval_id = await pending_pay(gw, hub, clock)
    clock.advance(hours=3)
    answer = invoke_response(await post(hub, *click(fake, clock, "bob")))
    assert answer["type"] == "application/vnd.microsoft.activity.message"
    stored = await gw.approvals.get(approval_id)
    assert stored.approval.state.value == "expired" and stored.approval.votes == ()
    await drain(hub, clock)
    assert fake.updates and all("Expired" in json.dumps(card_of(u)) for u in fake.updates)


# -- Workflows ---------------------------------------------------------------------------------
async def test_person_without_a_bot_address_gets_a_notify_only_workflows_card(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """Erin (`teams: workflows`) gets the card through the Workflows webhook, with only a link
    to the inbox; Dana gets the bot's card with buttons."""
    result = await gw.check(Request("wire", {"amount": 9}, {"user": "carol"}))
    assert result.approval is not None
    await drain(hub, clock)
    assert len(fake.workflows) == 1
    post_body = fake.workflows[0]
    assert post_body["type"] == "message"
    attachment = post_body["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert action_types(card) == ["Action.OpenUrl"]
    assert not any(b["type"].startswith("Input.") for b in card["body"])
    assert card["actions"][0]["url"].endswith(f"/ui/approvals/{result.approval.approval.id}")
    assert "Action.Execute" in action_types(card_of(sent_to(fake, "aad-dana")))
    await gw.approvals.decide(result.approval.approval.id, person="dana", decision="approve")
    await drain(hub, clock)  # the Workflows post cannot be edited: nothing more is sent there
    assert len(fake.workflows) == 1 and len(fake.updates) == 1


async def test_notify_only_channel_needs_no_bot_and_takes_no_callbacks(
    tmp_path: Path, clock: FrozenClock, fake: FakeTeams
) -> None:
    """`notify_only: true` sends everyone the Workflows card; callbacks are refused."""
    settings = {"notify_only": True, "workflows_url": fake.settings()["workflows_url"]}
    gateway = await open_gateway(tmp_path, clock, settings)
    hub = ChannelHub.from_settings(gateway)
    try:
        await pending_pay(gateway, hub, clock)
        assert len(fake.workflows) == 2 and not fake.token_requests and not fake.posted
        response = await post(hub, *fake.invoke("t", "approve", user="aad-bob", now=clock()))
        assert response.status_code == 404
    finally:
        await hub.aclose()
        await gateway.aclose()


# -- tokens and platform errors ----------------------------------------------------------------
async def test_token_is_cached_until_near_expiry_and_refreshed_after_a_401(
    fake: FakeTeams,
) -> None:
    """One token serves many calls; it is renewed when near expiry and after a 401."""
    from clearance.channels.base import Message, StageView
    from clearance.testing.clock import FrozenClock as Clock

    channel = TeamsChannel({"name": "teams", **fake.settings()}, "http://clearance.test")
    now = [1000.0]
    channel.monotonic = lambda: now[0]
    message = Message(
        approval_id="ap1",
        action="pay",
        params={"amount": 1},
        reasons=(),
        requester="Carol",
        agent=None,
        stage=StageView(0, "manager", 1),
        expires_at=Clock()(),
        state="pending",
        status_line="Waiting for manager",
        approve_token="tok",
        deny_token="tok",
        inbox_url="http://clearance.test/ui/approvals/ap1",
    )
    try:
        sent = await channel.send(message, "aad-bob")
        await channel.update(sent.ref, message)
        assert len(fake.token_requests) == 1
        now[0] += fake.token_lifetime_s - 200  # within five minutes of expiry
        await channel.update(sent.ref, message)
        assert len(fake.token_requests) == 2
        fake.revoke_tokens()
        await channel.update(sent.ref, message)
        assert len(fake.token_requests) == 3 and len(fake.updates) == 3
        assert sent.ref == {
            "kind": "bot",
            "service_url": fake.service_url,
            "conversation_id": "a:conv-aad-bob",
            "activity_id": sent.ref["activity_id"],
        }
    finally:
        await channel.aclose()


async def test_server_error_then_success_delivers_once(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """The Bot Connector answering 500 is retried; each approver gets exactly one card."""
    fake.fail_next = [500, 503]
    await pending_pay(gw, hub, clock)
    cards = [a for a in fake.posted if a.get("attachments")]
    assert sorted(a["conversation"]["id"] for a in cards) == ["a:conv-aad-alice", "a:conv-aad-bob"]
    assert kinds(gw).count("delivery.sent") == 2 and "delivery.failed" not in kinds(gw)


async def test_platform_errors_map_to_channel_errors(fake: FakeTeams) -> None:
    """4xx is permanent, 429/5xx and connection failures are retryable; no secret leaks."""
    from clearance.channels.base import Message, StageView

    message = Message(
        approval_id="ap1",
        action="pay",
        params={},
        reasons=(),
        requester=None,
        agent="bot",
        stage=StageView(0, "manager", 1),
        expires_at=FrozenClock()(),
        state="pending",
        status_line="Waiting",
    )
    channel = TeamsChannel({"name": "teams", **fake.settings()}, "http://x")
    try:
        for status, retry in ((403, False), (404, False), (429, True), (502, True)):
            fake.fail_next = [status]
            with pytest.raises(ChannelError) as info:
                await channel.send(message, "aad-bob")
            assert info.value.retry is retry and str(status) in str(info.value)
        fake.fail_next = [500]
        with pytest.raises(ChannelError) as info:
            await channel.send(message, "workflows")
        assert info.value.retry and "fake-signature" not in str(info.value)
    finally:
        await channel.aclose()
    wrong = TeamsChannel(
        {"name": "teams", **fake.settings(app_password="wrong-secret")}, "http://x"
    )
    try:
        with pytest.raises(ChannelError) as info:
            await wrong.send(message, "aad-bob")
        assert info.value.retry is False and "invalid_client" in str(info.value)
        assert "wrong-secret" not in str(info.value)
    finally:
        await wrong.aclose()
    down = TeamsChannel(
        {"name": "teams", **fake.settings(token_url="http://127.0.0.1:9/token")}, "http://x"
    )
    try:
        with pytest.raises(ChannelError) as info:
            await down.send(message, "aad-bob")
        assert info.value.retry is True
    finally:
        await down.aclose()


def test_settings_errors_name_the_missing_key_and_never_the_secret() -> None:
    """Missing or malformed settings are ValueErrors naming the key, not the values."""
    full = {
        "name": "teams",
        "app_id": "app",
        "app_password": "s3cret-pw",
        "service_url": "https://smba.trafficmanager.net/teams/",
    }
    for key in ("app_id", "app_password", "service_url"):
        with pytest.raises(ValueError, match=key):
            TeamsChannel({k: v for k, v in full.items() if k != key}, "http://x")
    with pytest.raises(ValueError, match="workflows_url"):
        TeamsChannel({"name": "teams", "notify_only": True}, "http://x")
    with pytest.raises(ValueError, match="token_url") as info:
        TeamsChannel({**full, "token_url": "ftp://s3cret-pw"}, "http://x")
    assert "s3cret-pw" not in str(info.value)
    with pytest.raises(ValueError, match="timeout"):
        TeamsChannel({**full, "timeout": "soon"}, "http://x")


async def test_agent_text_cannot_forge_links_in_the_card(fake: FakeTeams) -> None:
    """Markdown in the agent's arguments is escaped, so it cannot become a link; an alert
    card has no buttons."""
    from clearance.channels.base import Message, StageView
    from clearance.channels.teams import build_card

    message = Message(
        approval_id="ap1",
        action="pay",
        params={"note": "[Approve safely](https://evil.example)"},
        reasons=(),
        requester=None,
        agent="bot",
        stage=StageView(0, "manager", 1),
        expires_at=FrozenClock()(),
        state="pending",
        status_line="Waiting",
    )
    text = json.dumps(build_card(message))
    assert "[Approve safely](" not in text and "\\\\[Approve safely\\\\]" in text
    alert = build_card(replace(message, state="blocked", status_line="BLOCKED: pay"))
    assert action_types(alert) == [] and "Blocked: pay" in json.dumps(alert)


async def test_unrelated_activities_are_accepted_and_ignored(
    gw: Gateway, hub: ChannelHub, clock: FrozenClock, fake: FakeTeams
) -> None:
    """A signed conversationUpdate or plain message is answered 200 and decides nothing."""
    base = json.loads(fake.invoke("t", "approve", user="aad-bob", now=clock())[0])
    for extra in ({"type": "conversationUpdate"}, {"type": "message", "text": "hi"}):
        activity = {k: v for k, v in base.items() if k not in ("name", "value")} | extra
        body, headers = fake.activity_request(activity, now=clock())
        raw = RawRequest("POST", "/hooks/teams", headers, {}, body, clock())
        parsed = await hub.handle("teams", raw)
        assert parsed.interactions == () and parsed.reply.status == 200
    with pytest.raises(CallbackRejected):
        body, headers = fake.activity_request(base, now=clock(), variant="expired")
        await hub.handle("teams", RawRequest("POST", "/hooks/teams", headers, {}, body, clock()))
