"""OpenAI Agents SDK: Clearance decides `needs_approval`, and answers `RunState` interruptions.

```python
approvals = ClearanceApprovals(gate, prefix="bank.", agent="teller")
agent = Agent(name="teller", tools=approvals.guard_all([transfer, balance]))
result = await Runner.run(agent, "pay ACME 700", context=ctx)
while result.interruptions:                       # calls that people must approve
    state = result.to_state()
    await approvals.resolve(state)                # waits for Clearance, approves or rejects
    result = await Runner.run(agent, state)
# or, in one line: result = await run_with_clearance(agent, "pay ACME 700", approvals, ctx)
```

Each call is checked as action `<prefix><tool name>` (or `actions[tool name]`) with its
arguments as params and the model's call id as the idempotency key. The `needs_approval`
callable asks Clearance: a call the policy allows runs; one it denies or blocks runs not at
all (the model reads the refusal as the tool's output); one that needs people interrupts the
run. `resolve` approves an interruption only when Clearance approved it, and rejects it with
the reason otherwise. A guarded tool claims its approved request before running — so a call
approved by hand (`state.approve`) but not in Clearance still does not run — and reports its
result to the audit trail. The actor comes from the run context (`user`/`user_id`,
`session`/`session_id` keys or attributes, or your own `actor(context)`) and `agent`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from agents import Agent, FunctionTool, RunContextWrapper, Runner, RunState, ToolApprovalItem
from agents.tool_context import ToolContext

from ..sdk.base import BaseGate
from ..sdk.types import CheckResult
from ._calls import (
    DEFAULT_POLL_S,
    Refusal,
    StillPending,
    ToolCall,
    actor_of,
    ask,
    is_pending,
    run_cleared,
    settle,
)

NeedsApproval = Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]


class ClearanceApprovals:
    """Clearance as the approver of an OpenAI Agents SDK run."""

    def __init__(
        self,
        gate: BaseGate,
        *,
        prefix: str = "",
        actions: Mapping[str, str] | None = None,
        agent: str | None = None,
        actor: Callable[[Any], Mapping[str, str]] | None = None,
        poll: float = DEFAULT_POLL_S,
    ) -> None:
        self.gate = gate
        self.prefix = prefix
        self.actions = dict(actions or {})
        self.agent = agent
        self.actor = actor
        self.poll = poll
        # The last answer for each call id, so a call the policy allowed is not checked
        # (and audited) twice between `needs_approval` and the tool running.
        # call id → (the call asked about, Clearance's answer): used only for that same call
        self._answers: dict[str, tuple[ToolCall, CheckResult | Refusal]] = {}

    def action_for(self, tool: str) -> str:
        return self.actions.get(tool) or f"{self.prefix}{tool}"

    def tool_call(
        self, tool: str, params: Mapping[str, Any], call_id: str, context: Any
    ) -> ToolCall:
        """What Clearance is asked about one call."""
        if self.actor is not None:
            who = actor_of(dict(self.actor(context)))
        else:
            who = actor_of(
                {
                    "agent": self.agent,
                    "user": _field(context, "user", "user_id"),
                    "session": _field(context, "session", "session_id"),
                }
            )
        scope = f"{who['session']}:" if "session" in who else ""
        return ToolCall(
            action=self.action_for(tool),
            params=dict(params),
            actor=who,
            idempotency_key=f"openai-agents:{scope}{call_id}"[:255] if call_id else None,
        )

    # -- needs_approval ------------------------------------------------------------------------
    def needs_approval(self, tool: str) -> NeedsApproval:
        """The `needs_approval` callable for the tool named `tool`: True exactly when people
        must still decide (the run is then interrupted)."""

        async def needs(
            run_context: RunContextWrapper[Any], params: dict[str, Any], call_id: str
        ) -> bool:
            call = self.tool_call(tool, params, call_id, run_context.context)
            answer = await self._ask(call)
            self._answers[call_id] = (call, answer)
            return isinstance(answer, CheckResult) and is_pending(answer)

        return needs

    async def _ask(self, call: ToolCall) -> CheckResult | Refusal:
        try:
            return await ask(self.gate, call)
        except Refusal as refusal:
            return refusal

    # -- guarded tools -------------------------------------------------------------------------
    def guard(self, tool: FunctionTool) -> FunctionTool:
        """A copy of `tool` that Clearance approves (`needs_approval`), that claims its approval
        before it runs and reports its result afterwards."""
        invoke = tool.on_invoke_tool

        async def guarded(ctx: ToolContext[Any], input_json: str) -> Any:
            try:
                params = json.loads(input_json) if input_json else {}
            except ValueError:
                params = None
            if not isinstance(params, dict):
                self._answers.pop(ctx.tool_call_id, None)
                return f"{tool.name} did not run: its arguments are not a JSON object"
            call = self.tool_call(tool.name, params, ctx.tool_call_id, ctx.context)
            cached = self._answers.pop(ctx.tool_call_id, None)
            # An answer counts only for the very call it was given for (same action, arguments
            # and caller): anything else, or an approval (to claim), is asked again.
            answer = cached[1] if cached is not None and cached[0] == call else None
            if answer is None or (isinstance(answer, CheckResult) and answer.effect == "approve"):
                answer = await self._ask(call)  # idempotent: finds the same approval again
            try:
                if isinstance(answer, Refusal):
                    raise answer
                approval_id = answer.approval_id if answer.effect == "approve" else None
                if is_pending(answer):
                    raise Refusal(
                        f"{call.action} is still waiting for approval in Clearance "
                        f"({approval_id}); it did not run.",
                        approval_id=approval_id,
                    )

                async def body() -> Any:
                    return await invoke(ctx, input_json)

                return await run_cleared(
                    self.gate, call, approval_id, body, _outcome, decision_id=answer.decision_id
                )
            except Refusal as refusal:
                return refusal.message

        return dataclasses.replace(
            tool, on_invoke_tool=guarded, needs_approval=self.needs_approval(tool.name)
        )

    def guard_all(self, tools: Iterable[FunctionTool]) -> list[FunctionTool]:
        return [self.guard(t) for t in tools]

    # -- interruptions -------------------------------------------------------------------------
    async def resolve(
        self,
        state: RunState[Any, Any],
        *,
        context: Any = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> list[ToolApprovalItem]:
        """Approve or reject each interruption of `state` as Clearance decided. With `wait`,
        wait for people (up to `timeout` seconds). Returns the interruptions still undecided;
        run the state again only when that list is empty. `context` defaults to the run's."""
        if context is None:
            wrapper = getattr(state, "_context", None)
            context = getattr(wrapper, "context", None)
        undecided = []
        for item in state.get_interruptions():
            name = item.tool_name or item.name or ""
            try:
                params = json.loads(item.arguments or "{}")
            except ValueError:
                state.reject(item, rejection_message="the tool call's arguments are not JSON")
                continue
            call = self.tool_call(name, params, item.call_id or "", context)
            try:
                answer = await ask(self.gate, call)
                if answer.approval_id is not None and is_pending(answer):
                    if not wait:
                        undecided.append(item)
                        continue
                    await settle(
                        self.gate, call, answer.approval_id, timeout=timeout, poll=self.poll
                    )
            except StillPending:
                undecided.append(item)
                continue
            except Refusal as refusal:
                self._answers.pop(item.call_id or "", None)  # the tool will not be invoked
                state.reject(item, rejection_message=refusal.message)
                continue
            state.approve(item)
        return undecided


async def run_with_clearance(
    agent: Agent[Any],
    input: str | list[Any],
    approvals: ClearanceApprovals,
    context: Any = None,
    *,
    timeout: float | None = None,
    max_rounds: int = 20,
    **run_options: Any,
) -> Any:
    """`Runner.run`, resolving every interruption through Clearance until the run finishes.
    Raises `TimeoutError` when a decision does not come within `timeout` seconds."""
    result = await Runner.run(agent, input, context=context, **run_options)
    for _ in range(max_rounds):
        if not result.interruptions:
            return result
        state = result.to_state()
        if await approvals.resolve(state, context=context, timeout=timeout):
            raise TimeoutError("Clearance has not decided every pending tool call yet")
        result = await Runner.run(agent, state, **run_options)
    raise RuntimeError(f"the run was still interrupted after {max_rounds} rounds")


def _field(context: Any, *names: str) -> Any:
    for name in names:
        if isinstance(context, Mapping) and context.get(name) is not None:
            return context[name]
        value = getattr(context, name, None)
        if value is not None and not callable(value):
            return value
    return None


def _outcome(value: Any) -> tuple[bool, str]:
    return (True, str(value))
