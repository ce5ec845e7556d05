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


async def test_scheduler_expires_requests_nobody_reads(tmp_path: Path) -> None:
    """The server's scheduler expires a pending request at its deadline, unread, and audits it."""
    import sqlite3

    config = tmp_path / "clearance.yaml"
    config.write_text(
        "directory: {people: [{id: alice, groups: [managers]}]}\n"
        "policies:\n  rules:\n    - {id: r, actions: [x], effect: approve,\n"
        "       approval: {approvers: [group:managers], timeout: 1s}}\n"
    )
    db = tmp_path / "c.db"
    setup = Gateway.open(config, database_url=f"sqlite:///{db}")
    token = make_keys_for_agent(setup)
    await setup.aclose()
    server = ServerProcess(config, f"sqlite:///{db}", tmp_path / "server.log")
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            created = await http.post(
                "/v1/checks", json={"action": "x"}, headers={"authorization": f"Bearer {token}"}
            )
            approval_id = created.json()["approval_id"]
        state = "pending"
        for _ in range(100):  # read the row directly: a GET would expire it by itself
            with sqlite3.connect(db) as conn:
                row = conn.execute("SELECT state FROM approvals WHERE id = ?", (approval_id,))
                state = row.fetchone()[0]
            if state != "pending":
                break
            await asyncio.sleep(0.1)
        assert state == "expired"
        with sqlite3.connect(db) as conn:
            kinds = [k for (k,) in conn.execute("SELECT kind FROM audit_entries ORDER BY seq")]
        assert "approval.expired" in kinds
    finally:
        server.stop()


def make_keys_for_agent(gateway: Gateway) -> str:
    from clearance.identity import keys

    now = gateway.clock()
    return gateway.writer.run_sync(
        lambda tx: keys.create_key(tx.conn, kind="agent", subject="bot", now=now).token
    )
