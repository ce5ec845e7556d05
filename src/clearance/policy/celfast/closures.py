"""Compiling a syntax tree to a closure over the data; constant sub-expressions folded."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from .base import CelFastError, Env, Fn
from .ops import _BINARY, _has, _index, _neg, _not, _overload, _select, _size, _strfn
from .parser import Node

# Compiler: node → closure over the data mapping. Closures return a plain value or raise
# CelFastError. Sub-expressions without variables are folded once at compile time.


class _Const:
    """A folded sub-expression: its value, or the error evaluating it raises."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: CelFastError | None = None) -> None:
        self.value = value
        self.error = error


Compiled = Fn | _Const


def _fn(c: Compiled) -> Fn:
    if isinstance(c, _Const):
        if c.error is not None:
            error = c.error

            def fail(env: Env) -> Any:
                raise error

            return fail
        value = c.value
        return lambda env: value
    return c


def _fold(fn: Fn) -> _Const:
    try:
        return _Const(fn({}))
    except CelFastError as exc:
        return _Const(error=exc)


class _Compiler:
    def __init__(self, maps: frozenset[str]) -> None:
        self.maps = maps  # variables declared as maps (always a dict in plain data)
        self.constant: dict[int, bool] = {}  # id(node) → reads no variable (the tree is alive)

    def _constant(self, node: Node) -> bool:
        out = self.constant.get(id(node))
        if out is None:
            out = node[0] != "var"
            for part in node[1:]:
                if not out:
                    break
                if isinstance(part, tuple):
                    out = self._constant(part)
                elif isinstance(part, list):
                    out = all(self._constant(item) for item in part)
            self.constant[id(node)] = out
        return out

    def compile(self, node: Node) -> Compiled:
        tag = node[0]
        method: Callable[[Node], Compiled] = getattr(self, "c_" + tag)
        out = method(node)
        if not isinstance(out, _Const) and self._constant(node):
            return _fold(out)
        return out

    def path(self, node: Node) -> tuple[str, str] | None:
        """(variable, key) when `node` is `variable.key` on a map variable."""
        if node[0] == "sel" and node[1][0] == "var" and node[1][1] in self.maps:
            return node[1][1], node[2]
        return None

    def c_lit(self, node: Node) -> Compiled:
        return _Const(node[1])

    def c_var(self, node: Node) -> Compiled:
        name = node[1]
        return lambda env: env[name]

    def c_list(self, node: Node) -> Compiled:
        items = [_fn(self.compile(item)) for item in node[1]]
        return lambda env: [item(env) for item in items]

    def c_sel(self, node: Node) -> Compiled:
        _, target, name = node
        if target[0] == "var" and target[1] in self.maps:
            var = target[1]

            def select_var(env: Env) -> Any:
                try:
                    return env[var][name]
                except KeyError:
                    raise CelFastError(f"no such key: '{name}'") from None

            return select_var
        obj = _fn(self.compile(target))
        return lambda env: _select(obj(env), name)

    def c_idx(self, node: Node) -> Compiled:
        obj = _fn(self.compile(node[1]))
        key = self.compile(node[2])
        if isinstance(key, _Const) and key.error is None and type(key.value) is str:
            name = key.value
            return lambda env: _select_key(obj(env), name)
        keyf = _fn(key)
        return lambda env: _index(obj(env), keyf(env))

    def c_has(self, node: Node) -> Compiled:
        _, target, name = node
        if target[0] == "var" and target[1] in self.maps:
            var = target[1]
            return lambda env: name in env[var]
        obj = _fn(self.compile(target))
        return lambda env: _has(obj(env), name)

    def c_size(self, node: Node) -> Compiled:
        arg = _fn(self.compile(node[1]))
        return lambda env: _size(arg(env))

    def c_strfn(self, node: Node) -> Compiled:
        call = _strfn(node[1])
        target = _fn(self.compile(node[2]))
        arg = _fn(self.compile(node[3]))
        return lambda env: call(target(env), arg(env))

    def c_not(self, node: Node) -> Compiled:
        arg = _fn(self.compile(node[1]))
        return lambda env: _not(arg(env))

    def c_neg(self, node: Node) -> Compiled:
        arg = _fn(self.compile(node[1]))
        return lambda env: _neg(arg(env))

    def c_and(self, node: Node) -> Compiled:
        items = [_fn(self.compile(item)) for item in node[1]]
        if len(items) > 2:
            return _logic(items, False)
        left, right = items

        def and_(env: Env) -> Any:
            try:
                a = left(env)
            except CelFastError as exc:
                a = exc
            if a is False:
                return False
            try:
                b = right(env)
            except CelFastError as exc:
                b = exc
            if b is False:
                return False
            if a is True and b is True:
                return True
            if isinstance(a, CelFastError):
                raise a
            if isinstance(b, CelFastError):
                raise b
            raise _overload("_&&_", a, b)

        return and_

    def c_or(self, node: Node) -> Compiled:
        items = [_fn(self.compile(item)) for item in node[1]]
        if len(items) > 2:
            return _logic(items, True)
        left, right = items

        def or_(env: Env) -> Any:
            try:
                a = left(env)
            except CelFastError as exc:
                a = exc
            if a is True:
                return True
            try:
                b = right(env)
            except CelFastError as exc:
                b = exc
            if b is True:
                return True
            if a is False and b is False:
                return False
            if isinstance(a, CelFastError):
                raise a
            if isinstance(b, CelFastError):
                raise b
            raise _overload("_||_", a, b)

        return or_

    def c_cond(self, node: Node) -> Compiled:
        cond = _fn(self.compile(node[1]))
        then = _fn(self.compile(node[2]))
        other = _fn(self.compile(node[3]))

        def choose(env: Env) -> Any:
            c = cond(env)
            if c is True:
                return then(env)
            if c is False:
                return other(env)
            raise _overload("_?_:_", c)

        return choose

    def c_bin(self, node: Node) -> Compiled:
        _, op, lnode, rnode = node
        left = self.compile(lnode)
        right = self.compile(rnode)
        if isinstance(right, _Const) and right.error is None and not isinstance(left, _Const):
            special = _with_constant(op, left, right.value)
            if special is not None:
                return special
        if isinstance(left, _Const) and left.error is None and not isinstance(right, _Const):
            if op == "in" and type(left.value) is str and rnode[0] == "var":
                return _string_in_variable(left.value, rnode[1])
            special = _constant_with(op, left.value, right)
            if special is not None:
                return special
        fn = _BINARY[op]
        lf = _fn(left)
        rf = _fn(right)
        return lambda env: fn(lf(env), rf(env))


def _logic(items: list[Fn], decisive: bool) -> Fn:
    """An n-ary && (`decisive` False) or || (True): any decisive operand decides; else all
    operands must be the other boolean; else the first error (a non-bool is an error)."""
    op = "_||_" if decisive else "_&&_"

    def logic(env: Env) -> Any:
        error: CelFastError | None = None
        for item in items:
            try:
                value = item(env)
            except CelFastError as exc:
                if error is None:
                    error = exc
                continue
            if value is decisive:
                return decisive
            if value is not (not decisive) and error is None:
                error = _overload(op, value)
        if error is not None:
            raise error
        return not decisive

    return logic


def _select_key(obj: Any, name: str) -> Any:
    if type(obj) is dict:
        try:
            return obj[name]
        except KeyError:
            raise CelFastError(f"no such key: '{name}'") from None
    return _index(obj, name)


def _with_constant(op: str, x: Fn, c: Any) -> Fn | None:
    """`x <op> c` for a constant `c`: the common shapes, specialised."""
    tc = type(c)
    if op in ("==", "!="):
        eq = _equal_constant(x, c)
        if eq is None or op == "==":
            return eq
        return lambda env: not eq(env)
    if op in _COMPARE and (tc is int or tc is float):
        return _order_constant(op, x, c)
    if op == "in" and tc is list and c and all(type(item) is str for item in c):
        members = frozenset(c)
        return lambda env: _in_strings(x(env), members)
    return None


def _equal_constant(x: Fn, c: Any) -> Fn | None:
    tc = type(c)
    if tc is str:
        return lambda env: x(env) == c  # only an equal string is equal to a string
    if c is None:
        return lambda env: x(env) is None
    if tc is bool:
        return lambda env: x(env) is c
    if tc is int:
        cf = float(c)

        def eq_int(env: Env) -> Any:
            v = x(env)
            t = type(v)
            if t is int:
                return v == c
            if t is float:
                return v == cf
            return False  # bool, string, null, list, map: never equal to a number

        return eq_int
    if tc is float:

        def eq_float(env: Env) -> Any:
            v = x(env)
            t = type(v)
            if t is float:
                return v == c
            if t is int:
                return float(v) == c
            return False

        return eq_float
    return None


def _order_constant(op: str, x: Fn, c: Any) -> Fn:
    compare = _COMPARE[op]
    general = _BINARY[op]
    if type(c) is int:
        cf = float(c)

        def order_int(env: Env) -> Any:
            v = x(env)
            t = type(v)
            if t is int:
                return compare(v, c)
            if t is float:
                return compare(v, cf)
            return general(v, c)  # the error for these types

        return order_int

    def order_float(env: Env) -> Any:
        v = x(env)
        t = type(v)
        if t is float:
            return compare(v, c)
        if t is int:
            return compare(float(v), c)
        return general(v, c)

    return order_float


def _in_strings(value: Any, members: frozenset[str]) -> bool:
    return type(value) is str and value in members


def _string_in_variable(c: str, var: str) -> Fn:
    """`'text' in labels`: a string equals only an equal string; a map tests its keys."""

    def in_variable(env: Env) -> Any:
        container = env[var]
        tx = type(container)
        if tx is list or tx is dict:
            return c in container
        raise _overload("@in", c, container)

    return in_variable


def _constant_with(op: str, c: Any, x: Fn) -> Fn | None:
    """`c <op> x` for a constant `c`."""
    if op in _SWAPPED:  # `c < x` is `x > c` for every operand type (errors and NaN alike)
        return _with_constant(_SWAPPED[op], x, c)
    if op == "in" and type(c) is str:

        def in_(env: Env) -> Any:
            container = x(env)
            tx = type(container)
            if tx is list or tx is dict:
                return c in container  # a string equals only an equal string
            raise _overload("@in", c, container)

        return in_
    return None


_SWAPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
