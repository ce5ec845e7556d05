"""An OpenAI Agents SDK agent whose tool calls Clearance approves, offline.

    python examples/openai_agents/agent.py

The SDK's own scripted model (`agents.testing.ScriptedModel`, no API key) asks for a balance
and two transfers. Clearance's policy allows the read, sends the $700 transfer to a manager
and refuses the $50,000 one. `needs_approval` interrupts the run for the $700 transfer;
`run_with_clearance` waits for the decision (Alice approves it here, from a background task,
as she would from the web inbox) and resumes the run; the tool's result goes to the audit
trail.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agents import Agent, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from clearance import Gate
from clearance.integrations.openai_agents import ClearanceApprovals, run_with_clearance
from clearance.sdk.local import LocalGate

POLICY = Path(__file__).resolve().parent / "clearance.yaml"


@dataclass
class Session:
    """The application's run context; `user` and `session_id` become Clearance's actor."""

    user: str
    session_id: str


@function_tool
def transfer(amount: int, to: str) -> str:
    """Send money to a payee."""
    return f"sent {amount} to {to}"


@function_tool
def balance(account: str) -> str:
    """Read an account's balance."""
    return f"{account}: 1200"


async def alice_approves(gate: LocalGate) -> None:
    while not (pending := await gate.gateway.approvals.list(state="pending")):
        await asyncio.sleep(0.05)
    approval = pending[0].approval
    print(f"[alice] approving {approval.action} {approval.params}")
    await gate.decide(approval.id, person="alice", decision="approve", comment="invoice 4711")


async def main() -> None:
    set_tracing_disabled(True)  # offline: no trace export
    workdir = tempfile.mkdtemp(prefix="clearance-agents-")
    gate = Gate.local(POLICY, database_url=f"sqlite:///{workdir}/clearance.db")
    approvals = ClearanceApprovals(gate, prefix="bank.", agent="billing-agent", poll=0.2)
    model = ScriptedModel(
        [
            [
                function_call("balance", {"account": "ops"}, call_id="call_1"),
                function_call("transfer", {"amount": 700, "to": "ACME"}, call_id="call_2"),
                function_call("transfer", {"amount": 50_000, "to": "ACME"}, call_id="call_3"),
            ],
            [assistant_message("Paid ACME 700; the 50,000 transfer was refused.")],
        ]
    )
    agent = Agent[Session](
        name="billing-agent", model=model, tools=approvals.guard_all([transfer, balance])
    )
    approver = asyncio.create_task(alice_approves(gate))
    result = await run_with_clearance(
        agent, "Pay the ACME invoices", approvals, Session(user="carol", session_id="s-1")
    )
    await approver
    assert model.last_call is not None
    for item in model.last_call.input:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            print(f"tool {item['call_id']}: {item['output']}")
    print(f"final: {result.final_output}")
    await gate.aclose()


if __name__ == "__main__":
    asyncio.run(main())
