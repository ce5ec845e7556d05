"""The HTTP API: checks, approvals, decisions, permissions and bad input."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from clearance.gateway import Gateway
from clearance.testing import FrozenClock

from ..conftest import auth
from ..fixtures import Keys

TRANSFER = {
    "action": "payments.transfer",
    "params": {"amount": 2000, "currency": "USD", "destination_country": "US"},
    "actor": {"user": "carol"},
}


async def create(client: httpx.AsyncClient, keys: Keys, **extra: object) -> dict[str, object]:
    response = await client.post("/v1/checks", json={**TRANSFER, **extra}, headers=auth(keys.agent))
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


async def test_allowed_check_is_answered_and_audited(
    client: httpx.AsyncClient, keys: Keys, gateway: Gateway
) -> None:
    """An auto-allowed check returns the decision and leaves an audit entry."""
    body = {**TRANSFER, "params": {"amount": 100, "destination_country": "US"}}
    response = await client.post("/v1/checks", json=body, headers=auth(keys.agent))
    assert response.status_code == 200
    data = response.json()
    assert data["effect"] == "allow" and data["rules"] == ["payments-small"]
    assert data["approval_id"] is None
    verify = await client.get("/v1/audit/verify", headers=auth(keys.ivan))
    assert verify.json()["ok"] is True and verify.json()["entries"] >= 1
    lines = (await client.get("/v1/audit", headers=auth(keys.ivan))).text.splitlines()
    assert '"kind":"check"' in lines[-1] and '"effect":"allow"' in lines[-1]


async def test_approve_creates_a_pending_approval_once_per_idempotency_key(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """The same idempotency key returns the same approval; a different request with it is 409."""
    first = await create(client, keys, idempotency_key="k-1")
    again = await create(client, keys, idempotency_key="k-1")
    assert first["effect"] == "approve" and first["state"] == "pending"
    assert first["approval_id"] == again["approval_id"]
    other = {**TRANSFER, "params": {"amount": 3000, "destination_country": "US"}}
    response = await client.post(
        "/v1/checks", json={**other, "idempotency_key": "k-1"}, headers=auth(keys.agent)
    )
    assert response.status_code == 409 and response.json()["error"] == "idempotency_conflict"


async def test_decision_by_an_approver_and_long_poll_wakes(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """A waiting long poll returns as soon as a manager approves through the API."""
    approval_id = (await create(client, keys))["approval_id"]
    waiter = asyncio.create_task(
        client.get(f"/v1/approvals/{approval_id}/wait?timeout=20", headers=auth(keys.agent))
    )
    await asyncio.sleep(0.05)
    assert not waiter.done()
    decided = await client.post(
        f"/v1/approvals/{approval_id}/decisions",
        json={"decision": "approve", "comment": "ok"},
        headers=auth(keys.alice),
    )
    assert decided.status_code == 200, decided.text
    waited = await asyncio.wait_for(waiter, 5)
    assert waited.json()["state"] == "approved"
    assert waited.json()["votes"][0]["person"] == "alice"


async def test_agent_key_can_never_decide(client: httpx.AsyncClient, keys: Keys) -> None:
    """An agent key posting a decision gets 403 and nothing changes."""
    approval_id = (await create(client, keys))["approval_id"]
    response = await client.post(
        f"/v1/approvals/{approval_id}/decisions",
        json={"decision": "approve"},
        headers=auth(keys.agent),
    )
    assert response.status_code == 403
    state = (await client.get(f"/v1/approvals/{approval_id}", headers=auth(keys.agent))).json()
    assert state["state"] == "pending" and state["votes"] == []


async def test_self_approval_and_ineligible_votes_are_refused(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """The requester and people outside the stage cannot vote; the reasons say so."""
    approval_id = (await create(client, keys))["approval_id"]
    url = f"/v1/approvals/{approval_id}/decisions"
    own = await client.post(url, json={"decision": "approve"}, headers=auth(keys.carol))
    assert own.status_code == 403 and own.json()["error"] == "self_approval"
    assert "cannot vote" in own.json()["message"]
    dana = await client.post(url, json={"decision": "approve"}, headers=auth(keys.dana))
    assert dana.status_code == 404  # not part of this request: its existence is not revealed


async def test_requester_self_approval_message(
    client: httpx.AsyncClient, keys: Keys, gateway: Gateway
) -> None:
    """A manager who requested a transfer is told they cannot approve their own request."""
    body = {**TRANSFER, "actor": {"user": "alice"}}
    response = await client.post("/v1/checks", json=body, headers=auth(keys.agent))
    approval_id = response.json()["approval_id"]
    vote = await client.post(
        f"/v1/approvals/{approval_id}/decisions",
        json={"decision": "approve"},
        headers=auth(keys.alice),
    )
    assert vote.status_code == 403
    assert vote.json()["error"] == "self_approval"


async def test_vote_on_a_decided_request_and_deny_without_reason(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """Deny needs a reason; after a decision, another vote is 'already decided'."""
    approval_id = (await create(client, keys))["approval_id"]
    url = f"/v1/approvals/{approval_id}/decisions"
    no_reason = await client.post(url, json={"decision": "deny"}, headers=auth(keys.bob))
    assert no_reason.status_code == 409 and no_reason.json()["error"] == "reason_required"
    ok = await client.post(url, json={"decision": "deny", "comment": "no"}, headers=auth(keys.bob))
    assert ok.json()["state"] == "denied"
    late = await client.post(url, json={"decision": "approve"}, headers=auth(keys.alice))
    assert late.status_code == 409 and late.json()["error"] == "already_decided"


async def test_agent_sees_only_its_own_approvals(client: httpx.AsyncClient, keys: Keys) -> None:
    """Another agent's key gets 404 for an approval it did not request."""
    approval_id = (await create(client, keys))["approval_id"]
    response = await client.get(f"/v1/approvals/{approval_id}", headers=auth(keys.other_agent))
    assert response.status_code == 404
    listed = await client.get("/v1/approvals", headers=auth(keys.other_agent))
    assert listed.json()["approvals"] == []
    mine = await client.get("/v1/approvals", headers=auth(keys.agent))
    assert [a["id"] for a in mine.json()["approvals"]] == [approval_id]


async def test_agent_cannot_impersonate_another_agent(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """actor.agent must match the key's agent."""
    body = {**TRANSFER, "actor": {"user": "carol", "agent": "other-bot"}}
    response = await client.post("/v1/checks", json=body, headers=auth(keys.agent))
    assert response.status_code == 403


async def test_release_binds_the_exact_call_once(client: httpx.AsyncClient, keys: Keys) -> None:
    """Only the approved call is released, and only once; the result is recorded once."""
    approval_id = (await create(client, keys))["approval_id"]
    await client.post(
        f"/v1/approvals/{approval_id}/decisions",
        json={"decision": "approve"},
        headers=auth(keys.alice),
    )
    url = f"/v1/approvals/{approval_id}/release"
    actor = {"user": "carol", "agent": "billing-bot"}
    wrong = {**TRANSFER, "params": {**TRANSFER["params"], "amount": 9000}, "actor": actor}  # type: ignore[dict-item]
    bad = await client.post(url, json=wrong, headers=auth(keys.agent))
    assert bad.status_code == 409 and bad.json()["error"] == "binding_mismatch"
    body = {**TRANSFER, "actor": actor}
    good = await client.post(url, json=body, headers=auth(keys.agent))
    assert good.status_code == 200 and good.json()["released_at"]
    twice = await client.post(url, json=body, headers=auth(keys.agent))
    assert twice.status_code == 409 and twice.json()["error"] == "already_released"
    result = await client.post(
        f"/v1/approvals/{approval_id}/result",
        json={"state": "succeeded", "result": "tx 42"},
        headers=auth(keys.agent),
    )
    assert result.json()["execution_state"] == "succeeded"


async def test_expiry_is_seen_on_read(
    client: httpx.AsyncClient, keys: Keys, clock: FrozenClock
) -> None:
    """A request past its deadline reads as expired even before the scheduler runs."""
    approval_id = (await create(client, keys))["approval_id"]
    clock.advance(hours=5)
    response = await client.get(f"/v1/approvals/{approval_id}", headers=auth(keys.agent))
    assert response.json()["state"] == "expired"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer nope"},
        {"authorization": "Basic abc"},
        {"authorization": "Bearer clr_abc_def"},
    ],
)
async def test_missing_or_wrong_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """No endpoint that reads or decides approvals is open without a valid key."""
    for method, url in [
        ("POST", "/v1/checks"),
        ("GET", "/v1/approvals"),
        ("GET", "/v1/approvals/apr_x"),
        ("POST", "/v1/approvals/apr_x/decisions"),
        ("GET", "/v1/audit"),
    ]:
        response = await client.request(method, url, json=TRANSFER, headers=headers)
        assert response.status_code == 401, (method, url)


async def test_unknown_approval_is_404(client: httpx.AsyncClient, keys: Keys) -> None:
    """An unknown id is 404 with a message."""
    response = await client.get("/v1/approvals/apr_nope", headers=auth(keys.alice))
    assert response.status_code == 404 and "no approval" in response.json()["message"]


async def test_malformed_json_and_unknown_fields_are_422(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """Malformed JSON and unknown fields are rejected with a readable message."""
    response = await client.post(
        "/v1/checks",
        content=b"{not json",
        headers={**auth(keys.agent), "content-type": "application/json"},
    )
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"
    response = await client.post(
        "/v1/checks", json={**TRANSFER, "acton": "x"}, headers=auth(keys.agent)
    )
    assert response.status_code == 422 and "acton" in response.json()["message"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_numbers_that_are_not_finite_are_422(
    client: httpx.AsyncClient, keys: Keys, number: bytes
) -> None:
    """Python's JSON reads NaN, Infinity and 1e400 (as inf): none is an amount a policy can
    compare or an audit entry can hash, so the check is refused, not a 500."""
    for where in (b'"params": {"amount": %s}', b'"context": {"score": [1, %s]}'):
        body = b'{"action": "payments.transfer", ' + where % number + b"}"
        response = await client.post(
            "/v1/checks",
            content=body,
            headers={**auth(keys.agent), "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_request"
        assert "finite" in response.json()["message"]


async def test_oversized_body_is_413(client: httpx.AsyncClient, keys: Keys) -> None:
    """A body over the limit is refused before it is parsed."""
    big = {**TRANSFER, "params": {"blob": "x" * 2_000_000}}
    response = await client.post("/v1/checks", json=big, headers=auth(keys.agent))
    assert response.status_code == 413


async def test_audit_needs_a_role(client: httpx.AsyncClient, keys: Keys) -> None:
    """Only admins and auditors read or verify the audit trail."""
    assert (await client.get("/v1/audit", headers=auth(keys.alice))).status_code == 403
    assert (await client.get("/v1/audit/verify", headers=auth(keys.agent))).status_code == 403


async def test_health_metrics_and_openapi(client: httpx.AsyncClient, keys: Keys) -> None:
    """/healthz, /metrics and /openapi.json answer; metrics count checks by effect."""
    assert (await client.get("/healthz")).json()["status"] == "ok"
    await create(client, keys)
    text = (await client.get("/metrics")).text
    assert 'clearance_checks_total{effect="approve"} 1.0' in text
    assert 'clearance_approvals{state="pending"} 1.0' in text
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/checks" in spec["paths"] and "/v1/approvals/{approval_id}/wait" in spec["paths"]


async def test_reload_keeps_the_old_policy_on_a_bad_file(
    client: httpx.AsyncClient, keys: Keys, gateway: Gateway, tmp_path: object
) -> None:
    """A broken policy file is rejected on reload, audited, and the old policy stays."""
    from pathlib import Path

    broken = Path(str(tmp_path)) / "broken.yaml"
    broken.write_text("policies:\n  rules:\n    - {id: r, actions: [x], effect: nope}\n")
    before = gateway.engine.version
    gateway.config_paths = (str(broken),)
    response = await client.post("/v1/admin/reload", headers=auth(keys.ivan))
    assert response.json()["ok"] is False and "unknown effect" in response.json()["problems"]
    assert gateway.engine.version == before
    forbidden = await client.post("/v1/admin/reload", headers=auth(keys.alice))
    assert forbidden.status_code == 403
    lines = (await client.get("/v1/audit", headers=auth(keys.ivan))).text
    assert "policy.reload_failed" in lines
