"""Property tests: random policies and requests never make the engine misbehave."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearance.policy import Engine, PolicyError, Request, load_policy_text

NAMES = st.sampled_from(["a", "b", "payments.transfer", "data.read", "x.y", "*", "payments.*"])
CONDITIONS = st.sampled_from(
    [
        None,
        "true",
        "params.amount > 10",
        "params.amount < 500 && params.country == 'US'",
        "context.geo == 'US'",
        "risk.score >= 80",
        "'pii' in labels",
        "actor.user == 'carol'",
        "has(params.bulk) && params.bulk",
        "params.amount + 1 > 'x'",
        "nope > 1",
        "params.",
        "size(params) > 1",
        "action.startsWith('pay')",
    ]
)
EFFECTS = st.sampled_from(["allow", "deny", "approve", "block", "maybe"])
APPROVERS = st.lists(
    st.sampled_from(["alice", "bob", "group:managers", "group:ghosts", "carol"]),
    min_size=0,
    max_size=3,
)


@st.composite
def rules(draw: Any) -> str:
    out = []
    for i in range(draw(st.integers(0, 6))):
        effect = draw(EFFECTS)
        lines = [f"  - id: r{i}", f"    actions: [{draw(NAMES)!r}]", f"    effect: {effect}"]
        cond = draw(CONDITIONS)
        if cond is not None:
            lines.append(f"    when: {cond!r}")
        if effect == "approve" or draw(st.booleans()):
            approvers = draw(APPROVERS)
            required = draw(st.integers(0, 3))
            lines.append(f"    approval: {{approvers: {approvers}, required: {required}}}")
        if draw(st.booleans()):
            lines.append("    on_error: skip")
        out.append("\n".join(lines))
    return "\n".join(out)


PEOPLE = """directory:
  people:
    - {id: alice, groups: [managers]}
    - {id: bob, groups: [managers]}
    - {id: carol}
"""

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    body=rules(),
    default=st.sampled_from(["allow", "deny", "block", "approve"]),
    action=NAMES,
    params=st.dictionaries(st.sampled_from(["amount", "country", "bulk", "x"]), JSONISH),
    context=st.dictionaries(st.sampled_from(["geo", "ip"]), JSONISH),
    user=st.sampled_from([None, "alice", "carol"]),
    labels=st.lists(st.sampled_from(["pii", "x"]), max_size=2),
    risk=st.none() | st.dictionaries(st.sampled_from(["score"]), JSONISH),
)
def test_load_raises_only_policy_error_and_evaluate_never_raises(
    body: str,
    default: str,
    action: str,
    params: dict[str, Any],
    context: dict[str, Any],
    user: str | None,
    labels: list[str],
    risk: dict[str, Any] | None,
) -> None:
    """Loading fails only with PolicyError; a loaded policy evaluates any request, never raising."""
    text = PEOPLE + f"policies:\n  default: {default}\n  rules:\n{body or '  []'}\n"
    try:
        policy = load_policy_text(text)
    except PolicyError as exc:
        assert exc.problems
        return
    decision = Engine(policy).evaluate(
        Request(action, params, {"user": user} if user else {}, context, tuple(labels), risk)
    )
    assert decision.effect.value in {"allow", "deny", "approve", "block"}
    if decision.effect.value == "approve":
        assert decision.approval is not None
        for stage in decision.approval.stages:
            for req in stage.requirements:
                assert user not in req.approvers
                assert len(req.approvers) >= req.required


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(text: str) -> None:
    """Any text at all either loads or fails with PolicyError."""
    with contextlib.suppress(PolicyError):
        load_policy_text(text)
