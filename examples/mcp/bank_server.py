"""The upstream of the example: a tiny bank as an MCP server (stdio), built with the mcp SDK."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

bank = MCPServer("Demo Bank")


@bank.tool()
def transfer(amount: int, to: str) -> str:
    """Send money to a payee."""
    return f"sent {amount} to {to}"


@bank.tool()
def balance(account: str) -> str:
    """Read an account's balance."""
    return f"{account}: 1200"


@bank.resource("bank://rates", mime_type="text/plain")
def rates() -> str:
    """Today's exchange rates."""
    return "EUR 1.08"


if __name__ == "__main__":
    bank.run()
