"""Which data the fast path may take: plain values of each variable's declared type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import DEFAULT_RISK
from .base import _MAX_DEPTH, Env


def _unicode_ok(s: str) -> bool:
    """A non-ASCII string without NUL: it must encode to UTF-8 (no lone surrogates)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_str(s: str) -> bool:
    # The binding cuts strings at a NUL, and refuses lone surrogates.
    return "\x00" not in s and (s.isascii() or _unicode_ok(s))


# The checks below inline the common cases (they run on every decision); keep them in step.


def _plain(value: Any, depth: int) -> bool:
    t = type(value)
    if t is str:
        return "\x00" not in value and (value.isascii() or _unicode_ok(value))
    if t is int:
        return bool(-0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF)
    if t is float or t is bool or value is None:
        return True
    if depth >= _MAX_DEPTH:
        return False
    if t is dict:
        return _plain_map(value, depth + 1)
    if t is list:
        for item in value:  # noqa: SIM110 (a loop is cheaper than all())
            if not _plain(item, depth + 1):
                return False
        return True
    return False


def _plain_map(value: dict[Any, Any], depth: int) -> bool:
    for key, item in value.items():
        if type(key) is not str or "\x00" in key or not (key.isascii() or _unicode_ok(key)):
            return False
        t = type(item)
        if t is str:
            if "\x00" in item or not (item.isascii() or _unicode_ok(item)):
                return False
        elif t is int:
            if not -0x8000000000000000 <= item <= 0x7FFFFFFFFFFFFFFF:
                return False
        elif t is not float and t is not bool and item is not None and not _plain(item, depth):
            return False
    return True


def _plain_string_map(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if type(key) is not str or "\x00" in key or not (key.isascii() or _unicode_ok(key)):
            return False
        if type(item) is not str or "\x00" in item or not (item.isascii() or _unicode_ok(item)):
            return False
    return True


def _plain_string_list(value: Any) -> bool:
    if type(value) is not list:
        return False
    for item in value:
        if type(item) is not str or "\x00" in item or not (item.isascii() or _unicode_ok(item)):
            return False
    return True


def _plain_string(value: Any) -> bool:
    return type(value) is str and _plain_str(value)


def _plain_dyn_map(value: Any) -> bool:
    return type(value) is dict and _plain_map(value, 1)


def _plain_risk_map(value: Any) -> bool:
    # The engine's neutral map (a policy without `risk:`) is ours and plain: no walk needed.
    return value is DEFAULT_RISK or (type(value) is dict and _plain_map(value, 1))


# The declared type of each variable (as in cel.py's environment) → its check.
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "action": _plain_string,
    "params": _plain_dyn_map,
    "actor": _plain_string_map,
    "context": _plain_dyn_map,
    "labels": _plain_string_list,
    "risk": _plain_risk_map,
}
_MAP_VARIABLES = frozenset({"params", "actor", "context", "risk"})


def plain_inputs(data: Env, variables: tuple[str, ...] | frozenset[str]) -> bool:
    """Whether the values of `variables` in `data` are plain (see the module's docstring).

    Raises KeyError, like the library's path, when `data` lacks one of them.
    """
    checks = _CHECKS
    for name in variables:  # noqa: SIM110
        if not checks[name](data[name]):
            return False
    return True
