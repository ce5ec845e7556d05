"""The controls over HTTP: overrides, reviews, "approve always" and grants."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from clearance.gateway import Gateway
from clearance.identity import keys
from clearance.server.app import create_app
from clearance.testing import FrozenClock

from .helpers import open_gateway

TRANSFER = {"action": "payments.transfer", "params": {"amount": 1200, "payee_id": "acme"}}


@pytest.fixture
async def gw(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    gateway = open_gateway(tmp_path, db_url, FrozenClock())
    yield gateway
    await gateway.aclose()


@pytest.fixture
def tokens(gw: Gateway) -> dict[str, str]:
    now = gw.clock()

    def work(tx: object) -> dict[str, str]:
        conn = tx.conn  # type: ignore[attr-defined]
        out = {"agent": keys.create_key(conn, kind="agent", subject="billing-bot", now=now).token}
        for person in ("alice", "bob", "frank", "sam", "ivan", "carol"):
            out[person] = keys.create_key(conn, kind="person", subject=person, now=now).token
        return out

    return gw.writer.run_sync(work)


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gw, scheduler=False, inbox=False, channels=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _held(client: httpx.AsyncClient, tokens: dict[str, str], **extra: object) -> str:
    body = {**TRANSFER, "actor": {"user": "carol"}, **extra}
    response = await client.post("/v1/checks", json=body, headers=auth(tokens["agent"]))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["effect"] == "approve"
    return str(data["approval_id"])


async def test_approve_always_then_allowed_then_revoked(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    """Approve always over HTTP grants the scope; the grant is listed, revoked by its grantor,
    and the next check needs a person again."""
    approval_id = await _held(client, tokens)
    seen = await client.get(f"/v1/approvals/{approval_id}", headers=auth(tokens["alice"]))
    assert seen.json()["grant_offer"]["scope"] == ["actor.agent", "params.payee_id"]
    answer = await client.post(
        f"/v1/approvals/{approval_id}/always",
        json={"comment": "trusted vendor", "ttl": "7d"},
        headers=auth(tokens["alice"]),
    )
    assert answer.status_code == 200, answer.text
    grant = answer.json()["grant"]
    assert answer.json()["approval"]["state"] == "approved" and grant["live"] is True
    again = await client.post(
        "/v1/checks", json={**TRANSFER, "actor": {"user": "carol"}}, headers=auth(tokens["agent"])
    )
    assert again.json()["effect"] == "allow" and again.json()["grant_id"] == grant["id"]
    listed = await client.get("/v1/grants?live=true", headers=auth(tokens["alice"]))
    assert [g["id"] for g in listed.json()["grants"]] == [grant["id"]]
    other = await client.delete(f"/v1/grants/{grant['id']}", headers=auth(tokens["bob"]))
    assert other.status_code == 403
    revoked = await client.delete(
        f"/v1/grants/{grant['id']}?reason=done", headers=auth(tokens["alice"])
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "alice"
    third = await client.post(
        "/v1/checks", json={**TRANSFER, "actor": {"user": "carol"}}, headers=auth(tokens["agent"])
    )
    assert third.json()["effect"] == "approve"


async def test_agent_keys_cannot_use_controls(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    """An agent key can neither override, answer always, nor list grants."""
    approval_id = await _held(client, tokens)
    agent = auth(tokens["agent"])
    calls = [
        client.post(
            "/v1/overrides", json={"reason": "x", "approval_id": approval_id}, headers=agent
        ),
        client.post(f"/v1/approvals/{approval_id}/always", json={}, headers=agent),
        client.get("/v1/grants", headers=agent),
    ]
    for call in calls:
        assert (await call).status_code == 403


async def test_override_over_http_and_review(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    """Break glass ahead of the agent's call; the agent's check finds it approved; a reviewer
    other than the overrider closes the review; the overrider cannot."""
    body = {
        **TRANSFER,
        "params": {"amount": 9000, "payee_id": "acme"},
        "actor": {"user": "carol", "agent": "billing-bot"},
        "reason": "supplier will stop deliveries today",
    }
    made = await client.post("/v1/overrides", json=body, headers=auth(tokens["frank"]))
    assert made.status_code == 201, made.text
    override_id = made.json()["override"]["id"]
    approval_id = made.json()["approval"]["id"]
    check = await client.post(
        "/v1/checks",
        json={**TRANSFER, "params": body["params"], "actor": {"user": "carol"}},
        headers=auth(tokens["agent"]),
    )
    assert check.json()["approval_id"] == approval_id and check.json()["state"] == "approved"
    no_role = await client.post(
        "/v1/overrides", json={**body, "reason": "me too"}, headers=auth(tokens["alice"])
    )
    assert no_role.status_code == 403 and no_role.json()["error"] == "not_permitted"
    self_review = await client.post(
        f"/v1/overrides/{override_id}/review",
        json={"verdict": "justified"},
        headers=auth(tokens["frank"]),
    )
    assert self_review.status_code == 403 and self_review.json()["error"] == "self_review"
    open_ = await client.get("/v1/overrides?review_state=open", headers=auth(tokens["sam"]))
    assert [o["id"] for o in open_.json()["overrides"]] == [override_id]
    reviewed = await client.post(
        f"/v1/overrides/{override_id}/review",
        json={"verdict": "justified", "comment": "ticket INC-1"},
        headers=auth(tokens["sam"]),
    )
    assert reviewed.status_code == 200 and reviewed.json()["review_state"] == "justified"
    section = await client.get("/v1/audit?section=overrides", headers=auth(tokens["ivan"]))
    assert section.status_code == 200, section.text
    lines = [json.loads(line) for line in section.text.splitlines()]
    overrides = [line for line in lines if line["section"] == "override"]
    assert [o["override"]["id"] for o in overrides] == [override_id]
    assert any(line["section"] == "override_refused" for line in lines)  # alice, frank
    assert (
        await client.get("/v1/audit?section=overrides", headers=auth(tokens["sam"]))
    ).status_code == 403
    assert (
        await client.get("/v1/audit?section=secrets", headers=auth(tokens["ivan"]))
    ).status_code == 422


async def test_denial_reaches_the_agent_readably(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    """The agent reads who denied, why, and not to retry; the same check is then denied at
    once with that reason."""
    approval_id = await _held(client, tokens)
    await client.post(
        f"/v1/approvals/{approval_id}/decisions",
        json={"decision": "deny", "comment": "duplicate invoice"},
        headers=auth(tokens["bob"]),
    )
    status = await client.get(f"/v1/approvals/{approval_id}", headers=auth(tokens["agent"]))
    denial = status.json()["denial"]
    assert denial["reason"] == "duplicate invoice" and denial["denied_by"] == "bob"
    again = await client.post(
        "/v1/checks", json={**TRANSFER, "actor": {"user": "carol"}}, headers=auth(tokens["agent"])
    )
    assert again.json()["effect"] == "deny"
    assert "duplicate invoice" in again.json()["reasons"][0]
