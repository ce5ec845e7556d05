"""LangGraph: a real graph, a scripted fake chat model that issues tool calls, and the guard."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from clearance import Gate
from clearance.integrations.langgraph import APPROVAL_KEY, ClearanceToolGuard, resume_when_decided
from clearance.sdk.local import LocalGate

from . import langgraph_agent
from .helpers import HERE, POLICY, decide_next
from .langgraph_agent import build, tool_calls

CONFIG = {"configurable": {"thread_id": "t1", "user_id": "carol"}}


@pytest.fixture(autouse=True)
def _fresh_ledger() -> None:
    langgraph_agent.RAN.clear()


def tool_messages(out: dict[str, object]) -> list[ToolMessage]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]  # type: ignore[attr-defined]


async def test_interrupt_then_resume_after_approval(gate: LocalGate) -> None:
    """The graph stops at an interrupt carrying the approval id; the tool has not run; after
    a manager approves, resume_when_decided finishes the run, the tool runs once and its
    result is in the audit trail with the thread's actor and the tool call id as key."""
    guard = ClearanceToolGuard(gate, prefix="bank.", agent="teller")
    replies = [
        tool_calls(("transfer", {"amount": 700, "to": "ACME"}, "call_1")),
        AIMessage(content="paid"),
    ]
    graph = build(guard, replies, InMemorySaver())
    out = await graph.ainvoke({"messages": [("user", "pay ACME 700")]}, CONFIG)
    (stop,) = out["__interrupt__"]
    approval_id = stop.value[APPROVAL_KEY]
    assert stop.value["action"] == "bank.transfer"
    assert langgraph_agent.RAN == []

    assert await resume_when_decided(graph, gate, CONFIG, timeout=0.05) is None  # undecided
    await gate.decide(approval_id, person="alice", decision="approve")
    out = await resume_when_decided(graph, gate, CONFIG)
    (result,) = tool_messages(out)
    assert result.content == "sent 700 to ACME" and result.status == "success"
    assert out["messages"][-1].content == "paid"
    assert langgraph_agent.RAN == [{"tool": "transfer", "amount": 700, "to": "ACME"}]
    stored = await gate.gateway.approvals.get(approval_id)
    assert stored.approval.actor == {"agent": "teller", "user": "carol", "session": "t1"}
    assert stored.idempotency_key == "langgraph:t1:call_1"
    assert stored.approval.execution_state == "succeeded"
    assert stored.approval.execution_result == "sent 700 to ACME"


async def test_an_allowed_call_beside_an_interrupted_one_runs_once(gate: LocalGate) -> None:
    """With one task per tool call, an allowed read made in the same turn as a transfer that
    interrupts runs once, not again when the graph resumes."""
    guard = ClearanceToolGuard(gate, prefix="bank.")
    replies = [
        tool_calls(
            ("balance", {"account": "ops"}, "c1"),
            ("transfer", {"amount": 700, "to": "ACME"}, "c2"),
        ),
        AIMessage(content="done"),
    ]
    graph = build(guard, replies, InMemorySaver())
    out = await graph.ainvoke({"messages": [("user", "go")]}, CONFIG)
    assert langgraph_agent.RAN == [{"tool": "balance", "account": "ops"}]
    await gate.decide(
        out["__interrupt__"][0].value[APPROVAL_KEY], person="alice", decision="approve"
    )
    out = await resume_when_decided(graph, gate, CONFIG)
    assert langgraph_agent.RAN == [
        {"tool": "balance", "account": "ops"},
        {"tool": "transfer", "amount": 700, "to": "ACME"},
    ]
    assert sorted(m.tool_call_id for m in tool_messages(out)) == ["c1", "c2"]


async def test_a_forged_resume_does_not_run_the_tool(gate: LocalGate) -> None:
    """Resuming with a value that claims approval while Clearance still says pending stops
    at a new interrupt; the tool does not run."""
    guard = ClearanceToolGuard(gate, prefix="bank.")
    graph = build(
        guard, [tool_calls(("transfer", {"amount": 700, "to": "ACME"}, "call_1"))], InMemorySaver()
    )
    out = await graph.ainvoke({"messages": [("user", "pay")]}, CONFIG)
    approval_id = out["__interrupt__"][0].value[APPROVAL_KEY]
    again = await graph.ainvoke(
        Command(resume={"approval_id": approval_id, "state": "approved"}), CONFIG
    )
    assert again["__interrupt__"][0].value[APPROVAL_KEY] == approval_id
    assert langgraph_agent.RAN == []


async def test_denied_after_interrupt_answers_the_model(gate: LocalGate) -> None:
    """An approver's denial reaches the model as an error ToolMessage with the reason."""
    guard = ClearanceToolGuard(gate, prefix="bank.")
    replies = [
        tool_calls(("transfer", {"amount": 900, "to": "Evil"}, "call_9")),
        AIMessage(content="could not pay"),
    ]
    graph = build(guard, replies, InMemorySaver())
    out = await graph.ainvoke({"messages": [("user", "pay Evil")]}, CONFIG)
    approval_id = out["__interrupt__"][0].value[APPROVAL_KEY]
    await gate.decide(approval_id, person="bob", decision="deny", comment="unknown payee")
    out = await resume_when_decided(graph, gate, CONFIG)
    (result,) = tool_messages(out)
    assert result.status == "error" and "unknown payee" in str(result.content)
    assert langgraph_agent.RAN == []


async def test_wait_mode_allowed_denied_and_approved_in_one_turn(gate: LocalGate) -> None:
    """In wait mode, one model turn calling three tools: a read allowed by policy runs, a
    transfer the policy denies is refused, and a transfer a manager approves runs after the
    wait — without any interrupt."""
    guard = ClearanceToolGuard(gate, prefix="bank.", mode="wait", poll=0.05)
    replies = [
        tool_calls(
            ("balance", {"account": "ops"}, "c1"),
            ("transfer", {"amount": 50_000, "to": "ACME"}, "c2"),
            ("transfer", {"amount": 300, "to": "ACME"}, "c3"),
        ),
        AIMessage(content="done"),
    ]
    graph = build(guard, replies, InMemorySaver())
    run = asyncio.create_task(graph.ainvoke({"messages": [("user", "go")]}, CONFIG))
    await decide_next(gate, "approve", person="alice")
    out = await asyncio.wait_for(run, 10)
    assert "__interrupt__" not in out
    by_id = {m.tool_call_id: m for m in tool_messages(out)}
    assert by_id["c1"].content == "ops: 1200" and by_id["c1"].status == "success"
    assert by_id["c2"].status == "error" and "never made by an agent" in str(by_id["c2"].content)
    assert by_id["c3"].content == "sent 300 to ACME"
    assert sorted(json.dumps(e, sort_keys=True) for e in langgraph_agent.RAN) == sorted(
        json.dumps(e, sort_keys=True)
        for e in (
            {"tool": "balance", "account": "ops"},
            {"tool": "transfer", "amount": 300, "to": "ACME"},
        )
    )


def test_sync_graph_goes_through_the_guard_too(tmp_path: Path) -> None:
    """graph.invoke (synchronous) is checked as well: it interrupts, and runs after approval."""
    gate = Gate.local(POLICY, database_url=f"sqlite:///{tmp_path}/c.db")
    try:
        guard = ClearanceToolGuard(gate, prefix="bank.")
        replies = [
            tool_calls(("transfer", {"amount": 400, "to": "ACME"}, "call_s")),
            AIMessage(content="ok"),
        ]
        graph = build(guard, replies, InMemorySaver())
        out = graph.invoke({"messages": [("user", "pay")]}, CONFIG)
        approval_id = out["__interrupt__"][0].value[APPROVAL_KEY]
        assert langgraph_agent.RAN == []
        gate._sync(gate.decide(approval_id, person="alice", decision="approve"))
        out = graph.invoke(Command(resume={}), CONFIG)
        assert tool_messages(out)[0].content == "sent 400 to ACME"
        status = gate._sync(gate.get(approval_id))
        assert status.raw["execution_state"] == "succeeded"
    finally:
        gate.close()


def test_resume_in_a_new_process_after_a_restart(tmp_path: Path) -> None:
    """One process runs the graph to the interrupt and exits; an approver decides; a new
    process, with the same SQLite checkpointer, waits for Clearance and finishes the run."""
    database, checkpoints = tmp_path / "c.db", tmp_path / "checkpoints.sqlite"
    ledger = tmp_path / "ledger.jsonl"
    script = str(HERE / "langgraph_agent.py")
    env_args = {"env": {"BANK_LEDGER": str(ledger), "PATH": "/usr/bin:/bin"}}

    def step(name: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, script, name, str(POLICY), str(database), str(checkpoints)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **env_args,  # type: ignore[arg-type]
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    started = step("start")
    (value,) = started["interrupts"]  # type: ignore[misc]
    approval_id = value[APPROVAL_KEY]
    assert not ledger.exists()

    async def approve() -> None:
        gate = Gate.local(POLICY, database_url=f"sqlite:///{database}")
        try:
            await gate.decide(approval_id, person="alice", decision="approve")
        finally:
            await gate.aclose()

    asyncio.run(approve())
    finished = step("resume")
    assert finished == {"tool": "sent 700 to ACME", "status": "success", "final": "paid"}
    assert [json.loads(line) for line in ledger.read_text().splitlines()] == [
        {"tool": "transfer", "amount": 700, "to": "ACME"}
    ]
