"""LangGraph: Clearance checks every tool call a `ToolNode` makes.

```python
guard = ClearanceToolGuard(gate, prefix="bank.", agent="billing-agent")
builder.add_node("tools", guard.tool_node([transfer, balance]))  # a ToolNode, sync and async
builder.add_conditional_edges("agent", route_tool_calls("tools"))  # one task per tool call
graph = builder.compile(checkpointer=checkpointer)       # interrupts need a checkpointer
out = await graph.ainvoke({"messages": [...]}, config)    # stops at an approval
out = await resume_when_decided(graph, gate, config)      # later, even in another process
```

Each call is checked as action `<prefix><tool name>` (or `actions[tool name]`) with the call's
arguments as params; the actor comes from the run's config (`configurable.user_id` → user,
`configurable.thread_id` → session, the guard's `agent`); the idempotency key is the tool call
id, scoped to the thread. Allowed calls run; refused ones answer the model with an error
`ToolMessage` and never run. When people must decide, the guard either waits
(`mode="wait"`) or raises LangGraph's `interrupt()` with the approval id (`mode="interrupt"`,
the default): the graph stops, its state is in the checkpointer, and `resume_when_decided`
resumes it once Clearance has decided. A resume value is never trusted: on resume the guard
asks Clearance again, and only an approved request runs — once — with its result reported
to the audit trail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.prebuilt.tool_node import ToolCallRequest, ToolNode
from langgraph.types import Command, Send, interrupt

from ..sdk.base import BaseGate
from ._calls import (
    DEFAULT_POLL_S,
    Refusal,
    ToolCall,
    actor_of,
    approved_or_refuse,
    ask,
    claim,
    is_pending,
    report,
    run_cleared,
    settle,
)

#: The key in an interrupt's value that names the Clearance approval it waits for.
APPROVAL_KEY = "clearance_approval_id"

ToolResult = ToolMessage | Command[Any]
Execute = Callable[[ToolCallRequest], Awaitable[ToolResult]]
SyncExecute = Callable[[ToolCallRequest], ToolResult]


class ClearanceToolGuard:
    """Checks each tool call of a `ToolNode` with Clearance (`awrap_tool_call`)."""

    def __init__(
        self,
        gate: BaseGate,
        *,
        prefix: str = "",
        actions: Mapping[str, str] | None = None,
        agent: str | None = None,
        actor: Callable[[ToolCallRequest], Mapping[str, str]] | None = None,
        mode: Literal["interrupt", "wait"] = "interrupt",
        wait_timeout: float | None = None,
        poll: float = DEFAULT_POLL_S,
    ) -> None:
        if mode not in ("interrupt", "wait"):
            raise ValueError("mode must be 'interrupt' or 'wait'")
        self.gate = gate
        self.prefix = prefix
        self.actions = dict(actions or {})
        self.agent = agent
        self.actor = actor
        self.mode = mode
        self.wait_timeout = wait_timeout
        self.poll = poll

    def action_for(self, tool: str) -> str:
        return self.actions.get(tool) or f"{self.prefix}{tool}"

    def tool_call(self, request: ToolCallRequest) -> ToolCall:
        """What Clearance is asked about one tool call."""
        call = request.tool_call
        config: Mapping[str, Any] = getattr(request.runtime, "config", None) or {}
        configurable: Mapping[str, Any] = config.get("configurable") or {}
        thread = configurable.get("thread_id")
        if self.actor is not None:
            who = actor_of(dict(self.actor(request)))
        else:
            who = actor_of(
                {
                    "agent": self.agent or configurable.get("agent"),
                    "user": configurable.get("user_id") or configurable.get("user"),
                    "session": thread,
                }
            )
        call_id = call.get("id")
        key = None
        if call_id:
            key = f"langgraph:{thread}:{call_id}" if thread else f"langgraph:{call_id}"
        return ToolCall(
            action=self.action_for(call["name"]),
            params=dict(call.get("args") or {}),
            actor=who,
            idempotency_key=key[:255] if key else None,
        )

    async def awrap_tool_call(self, request: ToolCallRequest, execute: Execute) -> ToolResult:
        """For `ToolNode(..., awrap_tool_call=guard.awrap_tool_call)`."""
        call = self.tool_call(request)
        try:
            result = await ask(self.gate, call)
            approval_id = result.approval_id if result.effect == "approve" else None
            if approval_id is not None and is_pending(result):
                if self.mode == "interrupt":
                    await self._interrupt_until_decided(call, approval_id, request)
                else:
                    await settle(
                        self.gate, call, approval_id, timeout=self.wait_timeout, poll=self.poll
                    )

            async def body() -> ToolResult:
                return await execute(request)

            return await run_cleared(
                self.gate, call, approval_id, body, _outcome, decision_id=result.decision_id
            )
        except Refusal as refusal:
            return _refused(request, refusal)

    def wrap_tool_call(self, request: ToolCallRequest, execute: SyncExecute) -> ToolResult:
        """For graphs run synchronously (`graph.invoke`). The gate then runs on its own
        private loop: use one gate either synchronously or asynchronously, not both."""
        call = self.tool_call(request)
        run = self.gate._sync
        try:
            result = run(ask(self.gate, call))
            approval_id = result.approval_id if result.effect == "approve" else None
            if approval_id is not None and is_pending(result):
                if self.mode == "interrupt":
                    while True:
                        self._interrupt(call, approval_id, request)
                        status = run(self.gate.get(approval_id))
                        if status.is_final:
                            approved_or_refuse(call, status)
                            break
                else:
                    run(
                        settle(
                            self.gate, call, approval_id, timeout=self.wait_timeout, poll=self.poll
                        )
                    )
            if approval_id is None:
                return execute(request)
            run(claim(self.gate, call, approval_id))
        except Refusal as refusal:
            return _refused(request, refusal)
        try:
            value = execute(request)
        except BaseException as exc:
            run(report(self.gate, approval_id, False, f"{type(exc).__name__}: {exc}"))
            raise
        run(report(self.gate, approval_id, *_outcome(value)))
        return value

    def tool_node(self, tools: Sequence[Any], **options: Any) -> ToolNode:
        """A `ToolNode` whose every call, sync or async, goes through this guard."""
        return ToolNode(
            tools,
            wrap_tool_call=self.wrap_tool_call,
            awrap_tool_call=self.awrap_tool_call,
            **options,
        )

    def _interrupt(self, call: ToolCall, approval_id: str, request: ToolCallRequest) -> None:
        interrupt(
            {
                APPROVAL_KEY: approval_id,
                "action": call.action,
                "params": call.params,
                "tool_call_id": request.tool_call.get("id"),
                "message": f"{call.action} needs approval in Clearance ({approval_id})",
            }
        )

    async def _interrupt_until_decided(
        self, call: ToolCall, approval_id: str, request: ToolCallRequest
    ) -> None:
        while True:
            self._interrupt(call, approval_id, request)
            # Resumed. Whatever the resume value says, Clearance decides.
            status = await self.gate.get(approval_id)
            if status.is_final:
                approved_or_refuse(call, status)
                return


def route_tool_calls(
    node: str = "tools", *, messages_key: str = "messages"
) -> Callable[[Any], Any]:
    """A conditional edge that sends each tool call of the last message to `node` as its own
    task (or ends the run when there is none).

    Use it instead of `tools_condition` when calls may stop at an interrupt: LangGraph
    re-executes an interrupted task from its start, so with one task for all calls an
    allowed call beside an interrupted one would run again on resume. As separate tasks,
    the finished ones are kept in the checkpoint and only the interrupted call is re-run.
    """

    def route(state: Any) -> Any:
        messages = (
            state.get(messages_key, [])
            if isinstance(state, Mapping)
            else getattr(state, messages_key, [])
        )
        calls = getattr(messages[-1], "tool_calls", None) if messages else None
        if not calls:
            return END
        return [Send(node, [{**call, "type": "tool_call"}]) for call in calls]

    return route


async def resume_when_decided(
    graph: Any,
    gate: BaseGate,
    config: RunnableConfig,
    *,
    timeout: float | None = None,
) -> Any:
    """Wait until Clearance has decided every approval the thread is interrupted on, then
    resume the graph (`ainvoke(Command(resume=...))`) and return its output.

    Works in a new process: the graph's state comes from its checkpointer. Returns None when
    the thread waits on no Clearance approval. With `timeout`, returns None if a decision is
    still missing when it passes (the thread stays interrupted).
    """
    snapshot = await graph.aget_state(config)
    waiting = {
        item.id: str(item.value[APPROVAL_KEY])
        for item in snapshot.interrupts
        if isinstance(item.value, Mapping) and APPROVAL_KEY in item.value
    }
    if not waiting:
        return None
    resume: dict[str, Any] = {}
    for interrupt_id, approval_id in waiting.items():
        status = await gate.wait(approval_id, timeout)
        if not status.is_final:
            return None
        resume[interrupt_id] = {"approval_id": approval_id, "state": status.state}
    return await graph.ainvoke(Command(resume=resume), config)


def _outcome(result: ToolResult) -> tuple[bool, str]:
    if isinstance(result, ToolMessage):
        return (result.status != "error", str(result.content))
    return (True, repr(result))


def _refused(request: ToolCallRequest, refusal: Refusal) -> ToolMessage:
    return ToolMessage(
        content=refusal.message,
        name=request.tool_call["name"],
        tool_call_id=request.tool_call["id"],
        status="error",
    )
