"""Clearance: an approval gateway for AI agents.

```python
from clearance import Gate, ApprovalDenied
gate = Gate.local("clearance.yaml")
approval = await gate.require_approval("payments.transfer", params={"amount": 7200})
```
"""

from .sdk import BaseGate, Gate
from .sdk.errors import (
    ActionBlocked,
    ActionRefused,
    AlreadyExecuted,
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalExpired,
    ClearanceError,
    GatewayError,
    GatewayUnavailable,
)
from .sdk.types import Approval, ApprovalStatus, CheckResult

__version__ = "0.1.0"

__all__ = [
    "ActionBlocked",
    "ActionRefused",
    "AlreadyExecuted",
    "Approval",
    "ApprovalCancelled",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalStatus",
    "BaseGate",
    "CheckResult",
    "ClearanceError",
    "Gate",
    "GatewayError",
    "GatewayUnavailable",
    "__version__",
]
