"""The run-time semantics of CEL's operators on plain values, exactly as the library's."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .base import INT64_MAX, INT64_MIN, CelFastError


def _kind(value: Any) -> str:
    t = type(value)
    if value is None:
        return "null_type"
    return {
        bool: "bool",
        int: "int",
        float: "double",
        str: "string",
        list: "list",
        dict: "map",
    }.get(t, t.__name__)


def _overload(op: str, *values: Any) -> CelFastError:
    kinds = ", ".join(_kind(v) for v in values)
    return CelFastError(f"no matching overload for '{op}' applied to ({kinds})")


def _eq(a: Any, b: Any) -> bool:
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            if len(a) != len(b):
                return False
            for key, x in a.items():  # noqa: SIM110 (a loop is cheaper than all())
                if key not in b or not _eq(x, b[key]):
                    return False
            return True
        return bool(a == b)  # str, int, float (NaN unequal to itself), bool, None
    if ta is int and tb is float:
        return bool(float(a) == b)
    if ta is float and tb is int:
        return bool(a == float(b))
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


_ORDERED = (int, float, str, bool)


def _ordered(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    """The operands of an ordering, converted as CEL does; or the error for their types."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta in _ORDERED:
            return a, b
    elif ta is int and tb is float:
        return float(a), b
    elif ta is float and tb is int:
        return a, float(b)
    raise _overload(op, a, b)


def _lt(a: Any, b: Any) -> bool:
    x, y = _ordered("_<_", a, b)
    return bool(x < y)


def _le(a: Any, b: Any) -> bool:
    x, y = _ordered("_<=_", a, b)
    return bool(x <= y)


def _gt(a: Any, b: Any) -> bool:
    x, y = _ordered("_>_", a, b)
    return bool(x > y)


def _ge(a: Any, b: Any) -> bool:
    x, y = _ordered("_>=_", a, b)
    return bool(x >= y)


def _int(value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise CelFastError("integer overflow")


def _add(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            return _int(a + b)
        if ta is float or ta is str or ta is list:
            return a + b
    raise _overload("_+_", a, b)


def _sub(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            return _int(a - b)
        if ta is float:
            return a - b
    raise _overload("_-_", a, b)


def _mul(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            return _int(a * b)
        if ta is float:
            return a * b
    raise _overload("_*_", a, b)


def _div(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            if b == 0:
                raise CelFastError("divide by zero")
            q = abs(a) // abs(b)
            return _int(-q if (a < 0) != (b < 0) else q)
        if ta is float:
            if b == 0.0:  # IEEE 754, where Python would raise
                if a != a or a == 0.0:
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
    raise _overload("_/_", a, b)


def _mod(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            raise CelFastError("modulus by zero")
        if a == INT64_MIN and b == -1:
            raise CelFastError("integer overflow")
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    raise _overload("_%_", a, b)


def _in(a: Any, b: Any) -> bool:
    tb = type(b)
    if tb is list:
        ta = type(a)
        if ta is str or a is None:  # only an equal string (only null) is equal: exact
            return a in b
        return any(_eq(a, item) for item in b)
    if tb is dict:
        ta = type(a)
        if ta is str:
            return a in b
        if ta is int or ta is float or ta is bool:
            return False  # keys of plain maps are strings
        raise _overload("@in", a, b)
    raise _overload("@in", a, b)


def _select(obj: Any, name: str) -> Any:
    if type(obj) is dict:
        try:
            return obj[name]
        except KeyError:
            raise CelFastError(f"no such key: '{name}'") from None
    raise CelFastError(f"no field '{name}' on a value of type {_kind(obj)}")


def _index(obj: Any, key: Any) -> Any:
    to = type(obj)
    if to is list:
        tk = type(key)
        if tk is float:
            if not key.is_integer():
                raise CelFastError("index error: expected integer type, got double")
            key = int(key)
        elif tk is not int:
            raise CelFastError(f"index error: expected integer type, got {_kind(key)}")
        if 0 <= key < len(obj):
            return obj[key]
        raise CelFastError(f"index error: index={key} size={len(obj)}")
    if to is dict:
        if type(key) is str:
            try:
                return obj[key]
            except KeyError:
                pass
        raise CelFastError(f"no such key: {key!r}")
    raise CelFastError(f"cannot index {_kind(obj)}")


def _has(obj: Any, name: str) -> bool:
    if type(obj) is dict:
        return name in obj
    raise CelFastError(f"has() cannot test a field of {_kind(obj)}")


def _size(value: Any) -> int:
    t = type(value)
    if t is str or t is list or t is dict:
        return len(value)
    raise _overload("size", value)


def _not(value: Any) -> bool:
    if value is True:
        return False
    if value is False:
        return True
    raise _overload("!_", value)


def _neg(value: Any) -> Any:
    t = type(value)
    if t is int:
        return _int(-value)
    if t is float:
        return -value
    raise _overload("-_", value)


def _strfn(name: str) -> Callable[[Any, Any], bool]:
    method = {"startsWith": str.startswith, "endsWith": str.endswith, "contains": str.__contains__}[
        name
    ]

    def call(target: Any, arg: Any) -> bool:
        if type(target) is str and type(arg) is str:
            return bool(method(target, arg))
        raise _overload(name, target, arg)

    return call


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": _eq,
    "!=": _ne,
    "<": _lt,
    "<=": _le,
    ">": _gt,
    ">=": _ge,
    "+": _add,
    "-": _sub,
    "*": _mul,
    "/": _div,
    "%": _mod,
    "in": _in,
}
