"""The fast path's shared pieces: its errors, limits and the types of its closures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_MAX_DEPTH = 32

Env = Mapping[str, Any]
Fn = Callable[[Env], Any]


class CelFastError(Exception):
    """A run-time CEL error (missing key, no matching overload, overflow, …)."""


class _Unsupported(Exception):
    """The expression lies outside the subset (compile time only)."""
