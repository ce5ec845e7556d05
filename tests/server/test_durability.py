"""Nothing lives only in memory: kill -9 the server and every pending approval survives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from clearance.gateway import Gateway
from clearance.sdk.remote import RemoteGate

from ..fixtures import ENTERPRISE, make_keys
from ..serverproc import ServerProcess


async def test_kill_9_with_100_pending_approvals(tmp_path: Path) -> None:
    """After kill -9 and a restart, all 100 pending approvals are there and decidable, and an
    agent that was waiting through Gate.remote reconnects and receives its decision."""
    url = f"sqlite:///{tmp_path}/c.db"
    setup = Gateway.open(ENTERPRISE, database_url=url)
    keys = make_keys(setup)
    await setup.aclose()

    server = ServerProcess(ENTERPRISE, url, tmp_path / "server.log")
    server.start()
    agent = RemoteGate(server.url, keys.agent, retry_for=60)
    try:
        ids = []
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(100):
                response = await http.post(
                    "/v1/checks",
                    json={
                        "action": "payments.transfer",
                        "params": {"amount": 1000 + i, "destination_country": "US"},
                        "actor": {"user": "carol"},
                    },
                    headers={"authorization": f"Bearer {keys.agent}"},
                )
                assert response.status_code == 200, response.text
                ids.append(response.json()["approval_id"])
        waiting = asyncio.create_task(agent.wait(ids[0], timeout=120))
        await asyncio.sleep(0.3)
        assert not waiting.done()

        server.kill()
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the agent is reconnecting, not failing open
        server.start()

        async with httpx.AsyncClient(base_url=server.url) as http:
            listed = await http.get(
                "/v1/approvals?state=pending&limit=500",
                headers={"authorization": f"Bearer {keys.agent}"},
            )
            assert sorted(a["id"] for a in listed.json()["approvals"]) == sorted(ids)
            decided = await http.post(
                f"/v1/approvals/{ids[0]}/decisions",
                json={"decision": "approve", "comment": "after the crash"},
                headers={"authorization": f"Bearer {keys.alice}"},
            )
            assert decided.status_code == 200, decided.text
            other = await http.post(
                f"/v1/approvals/{ids[1]}/decisions",
                json={"decision": "deny", "comment": "no"},
                headers={"authorization": f"Bearer {keys.bob}"},
            )
            assert other.json()["state"] == "denied"
        status = await asyncio.wait_for(waiting, 60)
        assert status.state == "approved" and status.approvers == ("alice",)
    finally:
        await agent.aclose()
        server.stop()


async def test_sighup_reloads_and_a_bad_file_keeps_the_old_policy(tmp_path: Path) -> None:
    """SIGHUP loads the edited policy; a broken edit is rejected and the old policy stays."""
    import os
    import signal

    config = tmp_path / "clearance.yaml"
    config.write_text(ENTERPRISE.read_text())
    server = ServerProcess(config, f"sqlite:///{tmp_path}/c.db", tmp_path / "server.log")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            before = (await http.get("/healthz")).json()["policy_version"]
            config.write_text(ENTERPRISE.read_text().replace("under $500", "under 500 dollars"))
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGHUP)
            after = before
            for _ in range(100):
                after = (await http.get("/healthz")).json()["policy_version"]
                if after != before:
                    break
                await asyncio.sleep(0.05)
            assert after != before
            config.write_text("policies: {rules: [{id: x, actions: [y], effect: nope}]}\n")
            os.kill(server.proc.pid, signal.SIGHUP)
            await asyncio.sleep(1.0)
            assert (await http.get("/healthz")).json()["policy_version"] == after
        assert "policy_reload_rejected" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()
