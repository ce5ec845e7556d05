"""Approvals: the pure model and workflow of a request held for human approval.

`model` holds the data (`Approval`, `Vote`, states); `workflow` moves an approval from one
state to the next. Neither does I/O or reads the clock: pass `now` in.
"""

from clearance.approvals.model import (
    Approval,
    ApprovalState,
    ExecutionState,
    RequirementProgress,
    Vote,
    VoteDecision,
)
from clearance.approvals.workflow import (
    RESULT_MAX_CHARS,
    Event,
    EventKind,
    Rejected,
    Transition,
    VoteRejected,
    cancel,
    cast_vote,
    expire,
    open_approval,
    record_result,
    release,
    summary,
)
from clearance.matching import feasible

__all__ = [
    "RESULT_MAX_CHARS",
    "Approval",
    "ApprovalState",
    "Event",
    "EventKind",
    "ExecutionState",
    "Rejected",
    "RequirementProgress",
    "Transition",
    "Vote",
    "VoteDecision",
    "VoteRejected",
    "cancel",
    "cast_vote",
    "expire",
    "feasible",
    "open_approval",
    "record_result",
    "release",
    "summary",
]
