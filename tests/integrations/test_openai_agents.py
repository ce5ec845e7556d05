"""OpenAI Agents SDK: real `Runner` runs with the SDK's scripted model and guarded tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from agents import Agent, Runner, RunState, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from clearance.integrations.openai_agents import ClearanceApprovals, run_with_clearance
from clearance.sdk.local import LocalGate

from .helpers import decide_next

RAN: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _no_trace_export() -> Iterator[None]:
    """Offline: the SDK must not try to export traces."""
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(False)


@dataclass
class Ctx:
    """The application's run context: who the agent works for, in which conversation."""

    user: str = "carol"
    session_id: str = "s-42"


@function_tool
def transfer(amount: int, to: str) -> str:
    """Send money."""
    RAN.append({"tool": "transfer", "amount": amount, "to": to})
    return f"sent {amount} to {to}"


@function_tool
def balance(account: str) -> str:
    """Read a balance."""
    RAN.append({"tool": "balance", "account": account})
    return f"{account}: 1200"


def make_agent(
    approvals: ClearanceApprovals, *steps: list[Any]
) -> tuple[Agent[Ctx], ScriptedModel]:
    RAN.clear()
    model = ScriptedModel(list(steps))
    agent = Agent[Ctx](name="teller", model=model, tools=approvals.guard_all([transfer, balance]))
    return agent, model


def tool_outputs(model: ScriptedModel) -> dict[str, str]:
    """The tool outputs the model was shown on its last call, by call id."""
    assert model.last_call is not None
    return {
        item["call_id"]: item["output"]
        for item in model.last_call.input
        if isinstance(item, dict) and item.get("type") == "function_call_output"
    }


async def test_interrupted_run_resumes_after_clearance_approves(gate: LocalGate) -> None:
    """A transfer interrupts the run (the allowed read beside it runs once); resolve waits for
    the manager's approval, approves the RunState interruption, and the resumed run executes
    the tool once with its result reported and the run context mapped into the actor."""
    approvals = ClearanceApprovals(gate, prefix="bank.", agent="teller", poll=0.05)
    agent, model = make_agent(
        approvals,
        [
            function_call("balance", {"account": "ops"}, call_id="call_0"),
            function_call("transfer", {"amount": 700, "to": "ACME"}, call_id="call_1"),
        ],
        [assistant_message("paid")],
    )
    result = await Runner.run(agent, "pay ACME 700", context=Ctx())
    assert len(result.interruptions) == 1
    state = result.to_state()
    resolving = asyncio.create_task(approvals.resolve(state))
    approval_id = await decide_next(gate, "approve", person="alice")
    assert await asyncio.wait_for(resolving, 10) == []
    result = await Runner.run(agent, state)
    assert result.final_output == "paid"
    assert RAN == [
        {"tool": "balance", "account": "ops"},
        {"tool": "transfer", "amount": 700, "to": "ACME"},
    ]
    assert tool_outputs(model) == {"call_0": "ops: 1200", "call_1": "sent 700 to ACME"}
    stored = await gate.gateway.approvals.get(approval_id)
    assert stored.approval.actor == {"agent": "teller", "user": "carol", "session": "s-42"}
    assert stored.idempotency_key == "openai-agents:s-42:call_1"
    assert stored.approval.execution_state == "succeeded"
    assert stored.approval.execution_result == "sent 700 to ACME"


async def test_a_denial_rejects_the_interruption_with_the_reason(gate: LocalGate) -> None:
    """An approver's denial rejects the interruption; the model reads the reason; the tool
    never runs."""
    approvals = ClearanceApprovals(gate, prefix="bank.", poll=0.05)
    agent, model = make_agent(
        approvals,
        [function_call("transfer", {"amount": 900, "to": "Evil"}, call_id="call_9")],
        [assistant_message("could not pay")],
    )
    task = asyncio.create_task(run_with_clearance(agent, "pay Evil", approvals, Ctx()))
    await decide_next(gate, "deny", person="bob", comment="unknown payee")
    result = await asyncio.wait_for(task, 10)
    assert result.final_output == "could not pay"
    assert RAN == []
    assert "unknown payee" in tool_outputs(model)["call_9"]


async def test_policy_allow_and_deny_need_no_interruption(gate: LocalGate) -> None:
    """A read the policy allows runs at once; a transfer it denies does not run and the model
    reads the refusal; neither interrupts the run nor opens an approval."""
    approvals = ClearanceApprovals(gate, prefix="bank.")
    agent, model = make_agent(
        approvals,
        [
            function_call("balance", {"account": "ops"}, call_id="c1"),
            function_call("transfer", {"amount": 50_000, "to": "ACME"}, call_id="c2"),
        ],
        [assistant_message("done")],
    )
    result = await Runner.run(agent, "go", context=Ctx())
    assert result.interruptions == [] and result.final_output == "done"
    outputs = tool_outputs(model)
    assert outputs["c1"] == "ops: 1200"
    assert "denied bank.transfer" in outputs["c2"] and "never made by an agent" in outputs["c2"]
    assert RAN == [{"tool": "balance", "account": "ops"}]
    assert await gate.gateway.approvals.list() == []


async def test_approving_by_hand_without_clearance_does_not_run_the_tool(gate: LocalGate) -> None:
    """`state.approve()` on a call Clearance has not approved resumes the run, but the guarded
    tool refuses to run it."""
    approvals = ClearanceApprovals(gate, prefix="bank.")
    agent, model = make_agent(
        approvals,
        [function_call("transfer", {"amount": 700, "to": "ACME"}, call_id="call_x")],
        [assistant_message("hm")],
    )
    result = await Runner.run(agent, "pay", context=Ctx())
    state = result.to_state()
    for item in state.get_interruptions():
        state.approve(item)
    await Runner.run(agent, state)
    assert RAN == []
    assert "still waiting for approval" in tool_outputs(model)["call_x"]


async def test_resolve_from_a_saved_run_state(gate: LocalGate) -> None:
    """A RunState saved as JSON and loaded by a fresh ClearanceApprovals (as after a restart)
    is resolved from Clearance alone: undecided first, then approved, then run."""
    approvals = ClearanceApprovals(gate, prefix="bank.", agent="teller")
    agent, _model = make_agent(
        approvals,
        [function_call("transfer", {"amount": 300, "to": "ACME"}, call_id="call_r")],
        [assistant_message("paid")],
    )
    result = await Runner.run(agent, "pay", context=Ctx())
    saved = json.dumps(result.to_state().to_json())

    fresh = ClearanceApprovals(gate, prefix="bank.", agent="teller")
    state = await RunState.from_json(agent, json.loads(saved))
    assert len(await fresh.resolve(state, wait=False)) == 1
    (pending,) = await gate.gateway.approvals.list(state="pending")
    await gate.decide(pending.approval.id, person="alice", decision="approve")
    assert await fresh.resolve(state) == []
    result = await Runner.run(agent, state)
    assert result.final_output == "paid" and RAN == [
        {"tool": "transfer", "amount": 300, "to": "ACME"}
    ]


async def test_malformed_arguments_do_not_run_the_tool(gate: LocalGate) -> None:
    """Arguments that are not a JSON object are refused before Clearance or the tool see
    them, and the run goes on."""
    approvals = ClearanceApprovals(gate, prefix="bank.")
    guarded = approvals.guard(balance)
    from agents.tool_context import ToolContext

    ctx = ToolContext(
        context=Ctx(), tool_name="balance", tool_call_id="c-bad", tool_arguments="[1, 2]"
    )
    RAN.clear()
    for raw in ("[1, 2]", "{not json"):
        assert "not a JSON object" in await guarded.on_invoke_tool(ctx, raw)
    assert RAN == []


async def test_an_answer_counts_only_for_the_call_it_was_given_for(gate: LocalGate) -> None:
    """An `allow` remembered for one call id is not used for a different call arriving under
    the same id: that call is checked again, and a transfer the policy denies does not run."""
    from agents import RunContextWrapper
    from agents.tool_context import ToolContext

    approvals = ClearanceApprovals(gate, prefix="bank.")
    needs = approvals.needs_approval("balance")
    assert await needs(RunContextWrapper(context=Ctx()), {"account": "ops"}, "c-1") is False
    guarded = approvals.guard(transfer)
    raw = json.dumps({"amount": 50_000, "to": "x"})
    ctx = ToolContext(context=Ctx(), tool_name="transfer", tool_call_id="c-1", tool_arguments=raw)
    RAN.clear()
    out = await guarded.on_invoke_tool(ctx, raw)
    assert RAN == [] and "never made by an agent" in out
