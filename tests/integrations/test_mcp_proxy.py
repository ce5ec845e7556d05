"""The MCP approval proxy: a real upstream MCP server, the proxy, and a real MCP client."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import mcp_types as types
import pytest
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from clearance.audit.export import iter_entries
from clearance.integrations.mcp_proxy import (
    IDEMPOTENCY_META_KEY,
    McpApprovalProxy,
    connect_upstream,
    server_slug,
)
from clearance.sdk.local import LocalGate

from ..serverproc import free_port
from .helpers import UPSTREAM, decide_next


def ledger_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@asynccontextmanager
async def proxy_over_http(
    gate: LocalGate, ledger: Path, **options: object
) -> AsyncIterator[tuple[McpApprovalProxy, ClientSession]]:
    """The upstream over stdio, the proxy served over streamable HTTP, a client session."""
    async with connect_upstream(
        command=[sys.executable, str(UPSTREAM)], env={"BANK_LEDGER": str(ledger)}
    ) as upstream:
        proxy = McpApprovalProxy(
            gate,
            upstream,
            actor={"agent": "desk-bot", "user": "carol"},
            **options,  # type: ignore[arg-type]
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(proxy.http_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            async with (
                streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write),
                ClientSession(read, write) as client,
            ):
                await client.initialize()
                yield proxy, client
        finally:
            server.should_exit = True
            await serving


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_approved_denied_and_allowed_calls_over_http(gate: LocalGate, tmp_path: Path) -> None:
    """Over streamable HTTP: a transfer is held until approved (with progress), a second is
    denied by an approver and never reaches the upstream, a balance read runs at once; the
    approved call's result is in the audit trail."""
    ledger = tmp_path / "ledger.jsonl"
    async with proxy_over_http(gate, ledger, progress_interval=0.05) as (proxy, client):
        assert proxy.server_name == "demo-bank"
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == {"transfer", "balance"}

        # Allowed by policy, no human: runs at once, no approval.
        read = await client.call_tool("balance", {"account": "ops"})
        assert not read.is_error and text_of(read) == "ops: 1200"
        assert await gate.gateway.approvals.list() == []
        ran = [e for e in iter_entries(gate.gateway.db) if e.kind == "execution.result"]
        assert [(e.action, e.data["state"], e.data["result"]) for e in ran] == [
            ("mcp.demo-bank.balance", "succeeded", "ops: 1200")
        ]

        # Needs a manager: held, with progress notifications, until Alice approves.
        progress: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        call = asyncio.create_task(
            client.call_tool(
                "transfer", {"amount": 700, "to": "ACME"}, progress_callback=on_progress
            )
        )
        approval_id = await decide_next(gate, "approve", person="alice")
        result = await asyncio.wait_for(call, 10)
        assert not result.is_error and text_of(result) == "sent 700 to ACME"
        assert progress and "waiting for approval" in progress[0]
        assert "stage 1 of 1 (manager)" in progress[0]
        stored = await gate.gateway.approvals.get(approval_id)
        assert stored.approval.action == "mcp.demo-bank.transfer"
        assert stored.approval.actor == {
            "agent": "desk-bot",
            "user": "carol",
            "session": stored.approval.actor["session"],
        }
        assert stored.approval.execution_state == "succeeded"
        assert stored.approval.execution_result == "sent 700 to ACME"
        assert stored.idempotency_key and stored.idempotency_key.startswith("mcp:demo-bank:")

        # Denied by an approver: a tool error the model can read; the upstream never ran it.
        call = asyncio.create_task(client.call_tool("transfer", {"amount": 900, "to": "Evil"}))
        await decide_next(gate, "deny", person="bob", comment="unknown payee")
        denied = await asyncio.wait_for(call, 10)
        assert denied.is_error
        assert "denied mcp.demo-bank.transfer" in text_of(denied)
        assert "unknown payee" in text_of(denied)

        # Denied by policy: no approval at all, the reason in the error.
        huge = await client.call_tool("transfer", {"amount": 50_000, "to": "ACME"})
        assert huge.is_error and "never made by an agent" in text_of(huge)

    assert ledger_lines(ledger) == [
        {"tool": "balance", "account": "ops"},
        {"tool": "transfer", "amount": 700, "to": "ACME"},
    ]


async def test_resources_and_prompts_are_mirrored(gate: LocalGate, tmp_path: Path) -> None:
    """Resources, resource reads and prompts of the upstream pass through the proxy unchanged."""
    async with proxy_over_http(gate, tmp_path / "ledger.jsonl") as (_, client):
        resources = await client.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["bank://rates"]
        read = await client.read_resource("bank://rates")
        assert [c.text for c in read.contents if isinstance(c, types.TextResourceContents)] == [
            "EUR 1.08"
        ]
        prompts = await client.list_prompts()
        assert [p.name for p in prompts.prompts] == ["audit_note"]
        prompt = await client.get_prompt("audit_note", {"account": "ops"})
        assert "review account ops" in json.dumps(prompt.model_dump(mode="json"))


async def test_a_call_held_past_the_wait_timeout_does_not_run(
    gate: LocalGate, tmp_path: Path
) -> None:
    """When nobody decides within the proxy's wait timeout the call answers with an error
    saying the request is still pending, and the upstream tool did not run. A retry with the
    client's idempotency key finds the same request: once approved it runs, and a further
    retry does not run it twice."""
    ledger = tmp_path / "ledger.jsonl"
    meta = {IDEMPOTENCY_META_KEY: "invoice-4711"}
    args = {"amount": 300, "to": "ACME"}
    async with proxy_over_http(gate, ledger, wait_timeout=0.2, progress_interval=0.05) as (
        _,
        client,
    ):
        result = await client.call_tool("transfer", args, meta=meta)
        assert result.is_error and "still pending" in text_of(result)
        assert ledger_lines(ledger) == []
        (pending,) = await gate.gateway.approvals.list(state="pending")
        assert pending.idempotency_key == "invoice-4711"
        await gate.decide(pending.approval.id, person="alice", decision="approve")

        retried = await client.call_tool("transfer", args, meta=meta)
        assert not retried.is_error and text_of(retried) == "sent 300 to ACME"
        again = await client.call_tool("transfer", args, meta=meta)
        assert again.is_error and "already used once" in text_of(again)
    assert ledger_lines(ledger) == [{"tool": "transfer", "amount": 300, "to": "ACME"}]
    assert len(await gate.gateway.approvals.list()) == 1


def test_server_slug() -> None:
    """Upstream names become action-safe slugs."""
    assert server_slug("Demo Bank") == "demo-bank"
    assert server_slug("  ") == "upstream"
    assert server_slug("GitHub.com MCP") == "github-com-mcp"


async def test_cli_proxy_over_stdio_with_a_remote_gateway(tmp_path: Path) -> None:
    """`clearance mcp-proxy` as a stdio MCP server in front of an upstream over streamable
    HTTP, checking with a running gateway over its API: approved, denied and allowed calls."""
    from mcp.client.stdio import StdioServerParameters, stdio_client

    from clearance.gateway import Gateway
    from clearance.identity import keys

    from ..serverproc import ServerProcess
    from .helpers import POLICY

    db = f"sqlite:///{tmp_path}/c.db"
    setup = Gateway.open(POLICY, database_url=db)
    now = setup.clock()
    agent_key, alice_key, bob_key = setup.writer.run_sync(
        lambda tx: tuple(
            keys.create_key(tx.conn, kind=kind, subject=who, now=now).token
            for kind, who in (("agent", "desk-bot"), ("person", "alice"), ("person", "bob"))
        )
    )
    await setup.aclose()
    gateway = ServerProcess(POLICY, db, tmp_path / "server.log")
    ledger = tmp_path / "ledger.jsonl"
    up_port = free_port()
    upstream = await asyncio.create_subprocess_exec(
        sys.executable,
        str(UPSTREAM),
        "--http",
        str(up_port),
        env={**os.environ, "BANK_LEDGER": str(ledger)},
    )
    gateway.start()
    try:
        await wait_for_port(up_port)
        proxy = StdioServerParameters(
            command=sys.executable,
            args=[
                "-m",
                "clearance.cli",
                "mcp-proxy",
                "--upstream-url",
                f"http://127.0.0.1:{up_port}/mcp",
                "--gateway-url",
                gateway.url,
                "--user",
                "carol",
                "--progress-interval",
                "0.2",
            ],
            env={"CLEARANCE_API_KEY": agent_key},
        )
        async with httpx.AsyncClient(base_url=gateway.url) as http:

            async def decide(person_key: str, decision: str, comment: str) -> str:
                for _ in range(500):
                    listed = await http.get(
                        "/v1/approvals?state=pending",
                        headers={"authorization": f"Bearer {person_key}"},
                    )
                    found = listed.json()["approvals"]
                    if found:
                        answer = await http.post(
                            f"/v1/approvals/{found[0]['id']}/decisions",
                            json={"decision": decision, "comment": comment},
                            headers={"authorization": f"Bearer {person_key}"},
                        )
                        assert answer.status_code == 200, answer.text
                        return str(found[0]["id"])
                    await asyncio.sleep(0.02)
                raise AssertionError("no approval became pending")

            async with (
                stdio_client(proxy) as (read, write),
                ClientSession(read, write) as client,
            ):
                await client.initialize()
                read_ok = await client.call_tool("balance", {"account": "ops"})
                assert text_of(read_ok) == "ops: 1200"

                call = asyncio.create_task(
                    client.call_tool("transfer", {"amount": 250, "to": "ACME"})
                )
                approved_id = await decide(alice_key, "approve", "ok")
                assert text_of(await asyncio.wait_for(call, 20)) == "sent 250 to ACME"

                call = asyncio.create_task(
                    client.call_tool("transfer", {"amount": 260, "to": "Evil"})
                )
                await decide(bob_key, "deny", "who is Evil?")
                denied = await asyncio.wait_for(call, 20)
                assert denied.is_error and "who is Evil?" in text_of(denied)

            shown = await http.get(
                f"/v1/approvals/{approved_id}", headers={"authorization": f"Bearer {agent_key}"}
            )
            body = shown.json()
            assert body["actor"] == {"agent": "desk-bot", "user": "carol"}
            assert body["execution_state"] == "succeeded"
            assert body["execution_result"] == "sent 250 to ACME"
    finally:
        gateway.stop()
        upstream.terminate()
        await upstream.wait()
    assert [line["tool"] for line in ledger_lines(ledger)] == ["balance", "transfer"]


async def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    """The command refuses two upstreams, none, a gateway URL without a key, and a bad
    progress interval, with a plain error and exit code 1, before starting anything."""
    from typer.testing import CliRunner

    from clearance.cli import app

    runner = CliRunner()
    cases = [
        (["mcp-proxy"], "--upstream"),
        (["mcp-proxy", "--upstream", "x", "--upstream-url", "http://y"], "--upstream"),
        (["mcp-proxy", "--upstream", "x", "--progress-interval", "0"], "positive"),
        (["mcp-proxy", "--upstream", "x", "--gateway-url", "http://127.0.0.1:1"], "API key"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args, env={"CLEARANCE_API_KEY": ""})
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)


async def test_an_upstream_that_cannot_start_fails_the_proxy() -> None:
    """An upstream command that does not exist raises instead of serving tools that fail."""
    with pytest.raises(OSError):
        async with connect_upstream(command="/nonexistent/mcp-server --flag"):
            pass


async def test_unreachable_gateway_fails_closed(tmp_path: Path) -> None:
    """With the gateway unreachable every call answers with a tool error and the upstream
    never runs — not even a call the policy would allow."""
    from clearance.sdk.remote import RemoteGate

    dead = RemoteGate("http://127.0.0.1:1", "clr_x_y", retry_for=0.2)
    ledger = tmp_path / "ledger.jsonl"
    async with proxy_over_http(dead, ledger) as (_, client):  # type: ignore[arg-type]
        result = await client.call_tool("balance", {"account": "ops"})
        assert result.is_error and "could not be reached" in text_of(result)
    await dead.aclose()
    assert ledger_lines(ledger) == []
