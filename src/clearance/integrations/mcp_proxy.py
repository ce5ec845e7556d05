"""An MCP server that mirrors an upstream MCP server and asks Clearance before every tool call.

```python
async with connect_upstream(command=["python", "bank_server.py"]) as upstream:
    proxy = McpApprovalProxy(gate, upstream, actor={"agent": "claude-desktop"})
    await proxy.serve_stdio()          # or: await proxy.serve_http(port=8765)
```

Tools, resources and prompts are the upstream's, listed and read through. Each `tools/call`
is checked as action `mcp.<server>.<tool>` with the call's arguments as params: allowed calls
go through; a pending approval holds the call (the client gets progress notifications while
people decide); a denial, a block, an expiry or an unreachable gateway answer with a tool
error (`isError: true`) whose text the model can read — the upstream tool never runs.
The result of an approved call is reported to Clearance's audit trail.

Built on the official `mcp` SDK (the low-level `Server`, `ClientSession`, stdio and
streamable HTTP transports); imported only by code that uses it.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from ..sdk.base import BaseGate
from ..sdk.types import ApprovalStatus
from ._calls import (
    DEFAULT_POLL_S,
    Refusal,
    ToolCall,
    actor_of,
    ask,
    is_pending,
    run_cleared,
    settle,
)

#: A client may name its own idempotency key for a call (so a retry after a reconnect finds
#: the same approval) in the request's `_meta` under this key.
IDEMPOTENCY_META_KEY = "io.clearance/idempotency-key"
_NAME = re.compile(r"[^a-z0-9_-]+")


def server_slug(name: str) -> str:
    """The `<server>` part of `mcp.<server>.<tool>`: lower case, dots and spaces as dashes."""
    slug = _NAME.sub("-", name.strip().lower()).strip("-")
    return slug or "upstream"


@asynccontextmanager
async def connect_upstream(
    *,
    command: Sequence[str] | str | None = None,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> AsyncIterator[ClientSession]:
    """An initialized client session to the upstream server: a command run over stdio
    (`["python", "server.py"]`, or one shell-quoted string), or a streamable HTTP `url`."""
    if command is not None and url is None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("the upstream command is empty")
        params = StdioServerParameters(
            command=argv[0], args=argv[1:], env=dict(env) if env else None, cwd=cwd
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
    elif url is not None and command is None:
        async with (
            streamable_http_client(url) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
    else:
        raise ValueError("give the upstream as a command or as a URL (exactly one)")


class McpApprovalProxy:
    """The proxy: one upstream session, one gate, served to any number of MCP clients."""

    def __init__(
        self,
        gate: BaseGate,
        upstream: ClientSession,
        *,
        server: str | None = None,
        actor: Mapping[str, str] | None = None,
        wait_timeout: float | None = None,
        progress_interval: float = DEFAULT_POLL_S,
        name: str | None = None,
    ) -> None:
        """`server` names the upstream in action names (default: the name the upstream gives
        itself); `actor` is who is calling (`agent`, `user`); `wait_timeout` bounds how long a
        call is held for people to decide (None: until the approval itself expires)."""
        self.gate = gate
        self.upstream = upstream
        info = upstream.server_info
        self.server_name = server_slug(server or (info.name if info else "") or "upstream")
        self.actor = dict(actor or {})
        self.wait_timeout = wait_timeout
        self.progress_interval = progress_interval
        self.run_id = secrets.token_hex(6)
        self.server = self._build(name or (info.name if info else "") or "clearance-mcp-proxy")

    def action_for(self, tool: str) -> str:
        return f"mcp.{self.server_name}.{tool}"

    # -- the server ----------------------------------------------------------------------------
    def _build(self, name: str) -> Server[Any]:
        caps = self.upstream.server_capabilities or types.ServerCapabilities()
        handlers: dict[str, Any] = {}
        if caps.tools is not None:
            handlers.update(on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        if caps.resources is not None:
            handlers.update(
                on_list_resources=self._list_resources,
                on_list_resource_templates=self._list_resource_templates,
                on_read_resource=self._read_resource,
            )
        if caps.prompts is not None:
            handlers.update(on_list_prompts=self._list_prompts, on_get_prompt=self._get_prompt)
        info = self.upstream.server_info
        return Server(
            name,
            version=info.version if info else "",
            instructions=self.upstream.instructions,
            **handlers,
        )

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await self.upstream.list_tools(params=params)

    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return await self.upstream.list_resources(params=params)

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return await self.upstream.list_resource_templates(params=params)

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        return await self.upstream.read_resource(str(params.uri))

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return await self.upstream.list_prompts(params=params)

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        return await self.upstream.get_prompt(params.name, params.arguments)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call = self.tool_call(ctx, params)
        try:
            result = await ask(self.gate, call)
            approval_id = result.approval_id if result.effect == "approve" else None
            if approval_id is not None and is_pending(result):

                async def progress(elapsed: float, status: ApprovalStatus) -> None:
                    await ctx.session.report_progress(
                        elapsed,
                        None,
                        f"waiting for approval {approval_id} of {call.action} "
                        f"({elapsed:.0f}s): {_waiting_for(status)}",
                    )

                await progress(0.0, await self.gate.get(approval_id))
                await settle(
                    self.gate,
                    call,
                    approval_id,
                    timeout=self.wait_timeout,
                    poll=self.progress_interval,
                    on_wait=progress,
                    withdraw_on_cancel=True,  # the client gave up: stop asking people
                )

            async def forward() -> types.CallToolResult:
                return await self.upstream.call_tool(params.name, params.arguments)

            return await run_cleared(
                self.gate, call, approval_id, forward, _outcome, decision_id=result.decision_id
            )
        except Refusal as refusal:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=refusal.message)],
                is_error=True,
            )

    def tool_call(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> ToolCall:
        """The check for one `tools/call`: the action, the arguments, who, and a key that is
        unique to this call (the client's own key from `_meta`, else this proxy run, the
        client's session and the JSON-RPC request id)."""
        session = _session_id(ctx)
        actor = dict(self.actor)
        if session and "session" not in actor:
            actor["session"] = session
        meta: Mapping[str, Any] = ctx.meta or {}
        key = meta.get(IDEMPOTENCY_META_KEY)
        if not isinstance(key, str) or not key:
            scope = session or self.run_id
            key = f"mcp:{self.server_name}:{scope}:{ctx.request_id}"
        return ToolCall(
            action=self.action_for(params.name),
            params=dict(params.arguments or {}),
            actor=actor_of(actor),
            idempotency_key=key[:255],
        )

    # -- transports ----------------------------------------------------------------------------
    async def serve_stdio(self) -> None:
        """Serve one client over this process's stdin and stdout."""
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())

    def http_app(self, *, host: str = "127.0.0.1", path: str = "/mcp") -> Any:
        """A Starlette app serving streamable HTTP at `path` (run it with any ASGI server)."""
        return self.server.streamable_http_app(streamable_http_path=path, host=host)

    async def serve_http(self, *, host: str = "127.0.0.1", port: int = 8765) -> None:
        """Serve streamable HTTP at http://host:port/mcp until cancelled."""
        import uvicorn

        config = uvicorn.Config(self.http_app(host=host), host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()


def _session_id(ctx: ServerRequestContext[Any]) -> str | None:
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return None
    value = headers.get("mcp-session-id")
    return str(value) if value else None


def _waiting_for(status: ApprovalStatus) -> str:
    stages = status.raw.get("stages") or []
    index = int(status.raw.get("stage_index", 0))
    if 0 <= index < len(stages):
        return f"stage {index + 1} of {len(stages)} ({stages[index].get('name', '')})"
    return "pending"


def _outcome(result: types.CallToolResult) -> tuple[bool, str]:
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    text = "\n".join(texts) if texts else f"{len(result.content)} content block(s)"
    return (not result.is_error, text)
