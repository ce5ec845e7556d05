"""Adapters that put Clearance in front of agent frameworks' tool calls.

Each adapter is its own module and imports its framework only when it is imported, so
`import clearance` never loads them:

- `clearance.integrations.mcp_proxy` — an MCP server that mirrors an upstream MCP server and
  checks every tool call (`clearance mcp-proxy`); needs the `mcp` SDK.
- `clearance.integrations.langgraph` — a `ToolNode` guard: wait, or `interrupt()` and resume
  when Clearance decides; needs `langgraph` (`pip install clearance[integrations]`).
- `clearance.integrations.openai_agents` — `needs_approval` and `RunState` interruptions
  decided by Clearance; needs `openai-agents` (`pip install clearance[integrations]`).

All of them work with any gate (`Gate.local` or `Gate.remote`), check each call as an action
with its arguments as params, map the framework's caller into `actor`, use the tool call id
as the idempotency key, claim an approved call once before it runs and report its result to
the audit trail; every refusal reaches the model as a tool error it can read.
"""
