"""`clearance mcp-proxy`: an MCP server that asks Clearance before every upstream tool call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from .gateway_cmds import DatabaseOpt, open_gateway
from .output import fail
from .policy_cmds import ConfigOpt

if TYPE_CHECKING:
    from ..sdk.base import BaseGate


def register(app: typer.Typer) -> None:
    @app.command("mcp-proxy")
    def mcp_proxy(
        upstream: Annotated[
            str | None,
            typer.Option("--upstream", help='The upstream MCP server\'s command, e.g. "npx srv"'),
        ] = None,
        upstream_url: Annotated[
            str | None,
            typer.Option("--upstream-url", help="The upstream's streamable HTTP URL instead"),
        ] = None,
        transport: Annotated[
            Literal["stdio", "http"],
            typer.Option("--transport", help="How MCP clients reach the proxy"),
        ] = "stdio",
        host: Annotated[str, typer.Option(help="Address for --transport http")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port for --transport http (path /mcp)")] = 8765,
        server: Annotated[
            str | None,
            typer.Option(
                "--server",
                help="<server> in action names mcp.<server>.<tool> (default: upstream's)",
            ),
        ] = None,
        agent: Annotated[
            str | None, typer.Option("--agent", help="actor.agent of every check")
        ] = None,
        user: Annotated[
            str | None, typer.Option("--user", help="actor.user of every check")
        ] = None,
        wait_timeout: Annotated[
            float | None,
            typer.Option(help="Seconds a call is held for people (default: until it expires)"),
        ] = None,
        progress_interval: Annotated[
            float, typer.Option(help="Seconds between progress notifications while held")
        ] = 5.0,
        gateway_url: Annotated[
            str | None,
            typer.Option(
                "--gateway-url",
                envvar="CLEARANCE_URL",
                help="A running gateway (clearance serve); default: embed one from --config",
            ),
        ] = None,
        api_key: Annotated[
            str | None,
            typer.Option("--api-key", envvar="CLEARANCE_API_KEY", help="The agent's API key"),
        ] = None,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
    ) -> None:
        """Serve an upstream MCP server's tools, resources and prompts, asking Clearance before
        every tool call (action mcp.<server>.<tool>, the arguments as params).

        A call that needs people is held (with progress notifications) until they decide; a
        denial answers with a tool error the model can read. Nothing is printed on stdout in
        stdio mode: it carries the protocol.
        """
        if (upstream is None) == (upstream_url is None):
            fail('give the upstream with --upstream "CMD ARGS" or --upstream-url URL (one)')
        if progress_interval <= 0:
            fail("--progress-interval must be positive")
        gate = _open_gate(gateway_url, api_key, config, database_url)
        actor = {k: v for k, v in {"agent": agent, "user": user}.items() if v}
        try:
            asyncio.run(
                _serve(
                    gate,
                    upstream=upstream,
                    upstream_url=upstream_url,
                    transport=transport,
                    host=host,
                    port=port,
                    server=server,
                    actor=actor,
                    wait_timeout=wait_timeout,
                    progress_interval=progress_interval,
                )
            )
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            fail(f"could not start the upstream MCP server: {exc}")


def _open_gate(
    gateway_url: str | None,
    api_key: str | None,
    config: list[Path] | None,
    database_url: str | None,
) -> BaseGate:
    if gateway_url:
        if not api_key:
            fail(
                "--gateway-url needs the agent's API key",
                hint="pass --api-key or set CLEARANCE_API_KEY (create one: clearance keys create)",
            )
        from ..sdk.remote import RemoteGate

        return RemoteGate(gateway_url, api_key)
    from ..sdk.local import LocalGate

    return LocalGate(open_gateway(config, database_url))


async def _serve(
    gate: BaseGate,
    *,
    upstream: str | None,
    upstream_url: str | None,
    transport: str,
    host: str,
    port: int,
    server: str | None,
    actor: dict[str, str],
    wait_timeout: float | None,
    progress_interval: float,
) -> None:
    from ..integrations.mcp_proxy import McpApprovalProxy, connect_upstream

    try:
        async with connect_upstream(command=upstream, url=upstream_url) as session:
            proxy = McpApprovalProxy(
                gate,
                session,
                server=server,
                actor=actor,
                wait_timeout=wait_timeout,
                progress_interval=progress_interval,
            )
            if transport == "http":
                await proxy.serve_http(host=host, port=port)
            else:
                await proxy.serve_stdio()
    finally:
        await gate.aclose()
