"""The integration examples run, offline, and do what their READMEs say; and the adapters
stay out of `import clearance`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "mcp/demo.py",
            [
                "-> ops: 1200",
                "[progress] waiting for approval",
                "-> sent 700 to ACME",
                "-> ERROR An approver denied mcp.demo-bank.transfer: unknown payee",
                "-> ERROR Clearance denied mcp.demo-bank.transfer",
            ],
        ),
        (
            "langgraph/agent.py",
            [
                "interrupted: bank.transfer needs approval",
                "tool: sent 700 to ACME",
                "audit: succeeded — sent 700 to ACME",
            ],
        ),
        (
            "openai_agents/agent.py",
            [
                "tool call_2: sent 700 to ACME",
                "tool call_3: Clearance denied bank.transfer",
                "final: Paid ACME 700",
            ],
        ),
    ],
)
def test_example_runs(script: str, expected: list[str]) -> None:
    """Each example script runs to the end offline and prints the outcomes it documents."""
    out = run(EXAMPLES / script)
    for line in expected:
        assert line in out, out


def test_import_clearance_loads_no_framework() -> None:
    """`import clearance` (and the integrations package) imports no agent framework."""
    code = (
        "import sys, clearance, clearance.integrations; "
        "print([m for m in ('mcp', 'langgraph', 'langchain_core', 'agents') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
