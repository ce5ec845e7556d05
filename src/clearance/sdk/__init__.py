"""The SDK: one `Gate` interface, embedded (`Gate.local`) or over HTTP (`Gate.remote`).

`Gate.remote` imports only httpx: an agent that talks to a gateway needs nothing else of ours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import BaseGate

if TYPE_CHECKING:
    from .local import LocalGate
    from .remote import RemoteGate


class Gate:
    """Factories for the two kinds of gate; both have the interface of `BaseGate`."""

    @staticmethod
    def local(
        config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = "clearance.yaml",
        *,
        database_url: str | None = None,
    ) -> LocalGate:
        """The gateway embedded in this process (SQLite under .clearance/ by default)."""
        from .local import LocalGate

        return LocalGate.open(config, database_url)

    @staticmethod
    def remote(url: str, api_key: str, *, timeout: float = 10.0) -> RemoteGate:
        """A gateway over HTTP (`clearance serve`), authenticated with an agent API key."""
        from .remote import RemoteGate

        return RemoteGate(url, api_key, timeout=timeout)


__all__ = ["BaseGate", "Gate"]
