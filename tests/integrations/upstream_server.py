"""A real MCP server for the proxy tests: a tiny bank with tools, a resource and a prompt.

Each tool call that actually runs is appended to the file named by `BANK_LEDGER`, so a test
can prove that a refused call never reached the upstream. Run with no argument for stdio, or
`--http PORT` for streamable HTTP.
"""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import MCPServer

bank = MCPServer("Demo Bank", instructions="A test bank.")


def _record(tool: str, **args: object) -> None:
    ledger = os.environ.get("BANK_LEDGER")
    if ledger:
        with open(ledger, "a", encoding="utf-8") as out:
            out.write(json.dumps({"tool": tool, **args}) + "\n")


@bank.tool()
def transfer(amount: int, to: str) -> str:
    """Send money."""
    _record("transfer", amount=amount, to=to)
    return f"sent {amount} to {to}"


@bank.tool()
def balance(account: str) -> str:
    """Read a balance."""
    _record("balance", account=account)
    return f"{account}: 1200"


@bank.resource("bank://rates", mime_type="text/plain")
def rates() -> str:
    """Today's rates."""
    return "EUR 1.08"


@bank.prompt()
def audit_note(account: str) -> str:
    """A note for the auditors."""
    return f"Please review account {account}."


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        bank.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        bank.run()
