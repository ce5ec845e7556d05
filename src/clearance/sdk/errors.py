"""What the SDK raises. Each carries the reasons, in words a person (or a model) can read."""

from __future__ import annotations

from collections.abc import Sequence


class ClearanceError(Exception):
    """Base class of everything the SDK raises."""


class ActionRefused(ClearanceError):
    """The action must not run. `reasons` says why; `approval_id` names the request, if any."""

    def __init__(
        self,
        message: str,
        *,
        reasons: Sequence[str] = (),
        approval_id: str | None = None,
        decision_id: str | None = None,
    ) -> None:
        self.reasons = tuple(reasons)
        self.approval_id = approval_id
        self.decision_id = decision_id
        detail = "; ".join(self.reasons)
        super().__init__(f"{message}: {detail}" if detail else message)


class ApprovalDenied(ActionRefused):
    """The policy denied the action, or an approver denied the request."""


class ApprovalCancelled(ApprovalDenied):
    """The request was withdrawn before anyone decided it."""


class ActionBlocked(ActionRefused):
    """The policy blocked the action (and alerted security)."""


class ApprovalExpired(ActionRefused):
    """Nobody decided in time; the action does not run."""


class AlreadyExecuted(ActionRefused):
    """This approved request was already released once: it will not run a second time."""


class GatewayUnavailable(ClearanceError):
    """The gateway could not be reached or could not record the check: fail closed."""


class GatewayError(ClearanceError):
    """The gateway refused a request (bad input, no permission, conflict)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
