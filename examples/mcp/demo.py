"""The MCP approval proxy, end to end and offline, in one script.

    python examples/mcp/demo.py

An MCP client (standing in for Claude Desktop or any MCP host) talks over stdio to
`clearance mcp-proxy`, which mirrors `bank_server.py` and asks Clearance before each tool
call. The script plays the approver too: it reads the pending request from the gateway's
database and approves or denies it, as Alice would from the web inbox or Slack.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from clearance import Gate

HERE = Path(__file__).resolve().parent
POLICY = HERE / "clearance.yaml"


async def approver(database: str, decision: str, comment: str) -> None:
    """Alice decides the next pending request (the proxy sees it at its next progress tick)."""
    gate = Gate.local(POLICY, database_url=database)
    try:
        while True:
            pending = await gate.gateway.approvals.list(state="pending")
            if pending:
                stored = pending[0]
                print(f"  [alice] {stored.approval.action} {stored.approval.params} -> {decision}")
                await gate.decide(
                    stored.approval.id, person="alice", decision=decision, comment=comment
                )
                return
            await asyncio.sleep(0.1)
    finally:
        await gate.aclose()


async def main() -> None:
    database = f"sqlite:///{tempfile.mkdtemp(prefix='clearance-mcp-')}/clearance.db"
    proxy = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "clearance.cli",
            "mcp-proxy",
            "--upstream",
            f"{sys.executable} {HERE / 'bank_server.py'}",
            "--config",
            str(POLICY),
            "--database-url",
            database,
            "--agent",
            "desktop-assistant",
            "--user",
            "carol",
            "--progress-interval",
            "0.5",
        ],
    )

    async def progress(value: float, total: float | None, message: str | None) -> None:
        print(f"  [progress] {message}")

    async with stdio_client(proxy) as (read, write), ClientSession(read, write) as client:
        await client.initialize()
        tools = await client.list_tools()
        print("tools:", ", ".join(t.name for t in tools.tools))

        for name, args, decision, comment in (
            ("balance", {"account": "ops"}, None, ""),
            ("transfer", {"amount": 700, "to": "ACME"}, "approve", "invoice checked"),
            ("transfer", {"amount": 900, "to": "Unknown Ltd"}, "deny", "unknown payee"),
            ("transfer", {"amount": 50_000, "to": "ACME"}, None, ""),
        ):
            print(f"call {name} {args}")
            deciding = (
                asyncio.create_task(approver(database, decision, comment)) if decision else None
            )
            result = await client.call_tool(name, args, progress_callback=progress)
            if deciding:
                await deciding
            text = " ".join(getattr(c, "text", "") for c in result.content)
            print(f"  -> {'ERROR ' if result.is_error else ''}{text}")


if __name__ == "__main__":
    asyncio.run(main())
