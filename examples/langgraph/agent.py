"""A LangGraph agent whose tool calls go through Clearance, offline, across a "restart".

    python examples/langgraph/agent.py

1. The graph runs with a scripted chat model that calls `transfer`; the guard asks Clearance,
   which needs a manager: the graph stops at `interrupt()` with the approval id, its state in
   a SQLite checkpointer. Everything is closed, as if the process ended.
2. Alice approves (here directly in the gateway's database; normally in the web inbox).
3. A new graph, gate and checkpointer — as in a new process — call `resume_when_decided`:
   the transfer runs once, its result is in the audit trail, and the model answers.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph

from clearance import Gate
from clearance.integrations.langgraph import (
    APPROVAL_KEY,
    ClearanceToolGuard,
    resume_when_decided,
    route_tool_calls,
)

POLICY = Path(__file__).resolve().parent / "clearance.yaml"
CONFIG = {"configurable": {"thread_id": "invoice-4711", "user_id": "carol"}}


@tool
def transfer(amount: int, to: str) -> str:
    """Send money to a payee."""
    return f"sent {amount} to {to}"


@tool
def balance(account: str) -> str:
    """Read an account's balance."""
    return f"{account}: 1200"


def build(guard: ClearanceToolGuard, replies: list[BaseMessage], checkpointer: Any) -> Any:
    model = GenericFakeChatModel(messages=iter(replies))  # a scripted model: no API, no key

    async def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", guard.tool_node([transfer, balance]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route_tool_calls("tools"), ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="clearance-langgraph-"))
    database, checkpoints = f"sqlite:///{workdir}/clearance.db", str(workdir / "graph.sqlite")
    calls = AIMessage(
        content="",
        tool_calls=[
            {"name": "balance", "args": {"account": "ops"}, "id": "call_1"},
            {"name": "transfer", "args": {"amount": 700, "to": "ACME"}, "id": "call_2"},
        ],
    )

    # 1. Run until Clearance needs people.
    gate = Gate.local(POLICY, database_url=database)
    async with AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
        guard = ClearanceToolGuard(gate, prefix="bank.", agent="billing-agent")
        out = await build(guard, [calls], saver).ainvoke(
            {"messages": [("user", "Pay ACME")]}, CONFIG
        )
    (stop,) = out["__interrupt__"]
    approval_id = stop.value[APPROVAL_KEY]
    print(f"interrupted: {stop.value['message']}")

    # 2. Alice approves.
    await gate.decide(approval_id, person="alice", decision="approve", comment="invoice 4711")
    await gate.aclose()
    print(f"alice approved {approval_id}")

    # 3. A fresh process would do exactly this.
    gate = Gate.local(POLICY, database_url=database)
    async with AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
        guard = ClearanceToolGuard(gate, prefix="bank.", agent="billing-agent")
        graph = build(guard, [AIMessage(content="Paid ACME 700.")], saver)
        out = await resume_when_decided(graph, gate, CONFIG)
    for message in out["messages"]:
        print(f"{message.type:>6}: {message.content}")
    status = await gate.get(approval_id)
    print(f"audit: {status.raw['execution_state']} — {status.raw['execution_result']}")
    await gate.aclose()


if __name__ == "__main__":
    asyncio.run(main())
