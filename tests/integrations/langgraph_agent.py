"""A small LangGraph agent for the tests: a scripted fake chat model and two bank tools.

Run as a script it is one half of a process restart: `start` runs the graph until it stops
at an approval (and prints the interrupt), `resume` — in a new process — waits for
Clearance's decision and finishes the run. Both keep the graph's state in a SQLite
checkpointer file and the gateway's in a SQLite database.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph

from clearance.integrations.langgraph import (
    ClearanceToolGuard,
    resume_when_decided,
    route_tool_calls,
)

RAN: list[dict[str, Any]] = []


def _ledger(entry: dict[str, Any]) -> None:
    RAN.append(entry)
    path = os.environ.get("BANK_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


@tool
def transfer(amount: int, to: str) -> str:
    """Send money."""
    _ledger({"tool": "transfer", "amount": amount, "to": to})
    return f"sent {amount} to {to}"


@tool
def balance(account: str) -> str:
    """Read a balance."""
    _ledger({"tool": "balance", "account": account})
    return f"{account}: 1200"


def tool_calls(*calls: tuple[str, dict[str, Any], str]) -> AIMessage:
    """An assistant message that calls tools: (name, args, call id) each."""
    return AIMessage(
        content="",
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in calls],
    )


def build(guard: ClearanceToolGuard, replies: Sequence[BaseMessage], checkpointer: Any) -> Any:
    """model → tools (through the guard) → model, until the model stops calling tools."""
    model = GenericFakeChatModel(messages=iter(replies))

    async def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def agent_sync(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    from langchain_core.runnables import RunnableLambda

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent_sync, afunc=agent))
    builder.add_node("tools", guard.tool_node([transfer, balance]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route_tool_calls("tools"), ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


async def _main(step: str, policy: str, database: str, checkpoints: str) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from clearance import Gate

    gate = Gate.local(policy, database_url=f"sqlite:///{database}")
    guard = ClearanceToolGuard(gate, prefix="bank.", agent="teller")
    config = {"configurable": {"thread_id": "thread-7", "user_id": "carol"}}
    try:
        async with AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
            if step == "start":
                replies = [tool_calls(("transfer", {"amount": 700, "to": "ACME"}, "call_1"))]
                graph = build(guard, replies, saver)
                out = await graph.ainvoke({"messages": [("user", "pay ACME 700")]}, config)
                print(json.dumps({"interrupts": [i.value for i in out.get("__interrupt__", [])]}))
            else:
                graph = build(guard, [AIMessage(content="paid")], saver)
                out = await resume_when_decided(graph, gate, config, timeout=30)
                messages = out["messages"]
                print(
                    json.dumps(
                        {
                            "tool": messages[-2].content,
                            "status": messages[-2].status,
                            "final": messages[-1].content,
                        }
                    )
                )
    finally:
        await gate.aclose()


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:5]))
