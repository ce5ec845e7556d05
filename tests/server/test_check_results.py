"""Results of allowed actions (no approval): recorded next to the check that allowed them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clearance import Gate
from clearance.audit.export import iter_entries
from clearance.gateway import Gateway

from ..conftest import auth
from ..fixtures import ENTERPRISE, Keys

SMALL = {
    "action": "payments.transfer",
    "params": {"amount": 120, "destination_country": "US", "account_number": "DE44 5001"},
    "actor": {"user": "carol"},
}


async def _allowed(client: httpx.AsyncClient, keys: Keys) -> str:
    response = await client.post("/v1/checks", json=SMALL, headers=auth(keys.agent))
    assert response.status_code == 200 and response.json()["effect"] == "allow"
    return str(response.json()["decision_id"])


async def test_the_result_lands_beside_the_check(
    client: httpx.AsyncClient, keys: Keys, gateway: Gateway
) -> None:
    """The result entry names the check's decision id and the same (redacted) params hash."""
    decision_id = await _allowed(client, keys)
    body = {**SMALL, "decision_id": decision_id, "state": "succeeded", "result": "paid #991"}
    response = await client.post(
        f"/v1/checks/{decision_id}/result", json=body, headers=auth(keys.agent)
    )
    assert response.status_code == 201, response.text
    entries = list(iter_entries(gateway.db))
    check = next(e for e in entries if e.kind == "check" and e.data["decision_id"] == decision_id)
    result = entries[-1]
    assert result.kind == "execution.result" and result.data["decision_id"] == decision_id
    assert result.data["state"] == "succeeded" and result.data["result"] == "paid #991"
    assert result.params_hash == check.params_hash  # account_number redacted in both
    assert result.actor == "carol" and result.data["agent"] == check.data["agent"]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"state": "done"}, 422),
        ({"decision_id": "apr_123"}, 422),
        ({"actor": {"user": "carol", "agent": "someone-else"}}, 403),
    ],
)
async def test_bad_reports_are_refused(
    client: httpx.AsyncClient, keys: Keys, change: dict[str, object], status: int
) -> None:
    """A made-up state, a body naming another decision, or another agent's name: refused."""
    decision_id = await _allowed(client, keys)
    body = {**SMALL, "decision_id": decision_id, "state": "succeeded", **change}
    response = await client.post(
        f"/v1/checks/{decision_id}/result", json=body, headers=auth(keys.agent)
    )
    assert response.status_code == status, response.text


async def test_only_agents_report(client: httpx.AsyncClient, keys: Keys) -> None:
    """An approver's key cannot write an agent's results."""
    decision_id = await _allowed(client, keys)
    body = {**SMALL, "decision_id": decision_id, "state": "failed"}
    response = await client.post(
        f"/v1/checks/{decision_id}/result", json=body, headers=auth(keys.alice)
    )
    assert response.status_code == 403


async def test_guard_reports_what_an_allowed_call_did(tmp_path: Path) -> None:
    """@gate.guard on an allowed call records its outcome, success and failure alike."""
    gate = Gate.local(ENTERPRISE, database_url=f"sqlite:///{tmp_path}/c.db")
    try:

        @gate.guard("payments.transfer", actor={"user": "carol", "agent": "billing-bot"})
        async def transfer(amount: int, destination_country: str) -> str:
            if amount == 13:
                raise RuntimeError("bank said no")
            return f"sent {amount}"

        assert await transfer(120, "US") == "sent 120"
        with pytest.raises(RuntimeError):
            await transfer(13, "US")
        results = [e for e in iter_entries(gate.gateway.db) if e.kind == "execution.result"]
        assert [(r.data["state"], r.data["result"]) for r in results] == [
            ("succeeded", "sent 120"),
            ("failed", "RuntimeError('bank said no')"),
        ]
    finally:
        await gate.aclose()
