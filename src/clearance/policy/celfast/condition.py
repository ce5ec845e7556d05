"""One condition on the fast path: `compile_fast` and `FastCondition`."""

from __future__ import annotations

from typing import Any

from .base import CelFastError, Env, Fn, _Unsupported
from .closures import _Compiler, _fn
from .parser import _MAX_NESTING, Node, _depth, _Parser
from .plain import _CHECKS, _MAP_VARIABLES


class FastCondition:
    """A condition on the fast path: `fn(data)` gives its value or raises CelFastError.

    Only call it when `plain_inputs(data, variables)` holds. `node` is its syntax tree; the
    closure is built on first use (a large policy loads faster, and a group written out by
    `compile_group` needs it only when a condition fails).
    """

    __slots__ = ("_fn", "node", "variables")

    def __init__(self, node: Node, variables: frozenset[str]) -> None:
        self._fn: Fn | None = None
        self.node = node
        self.variables = variables

    @property
    def fn(self) -> Fn:
        fn = self._fn
        if fn is None:  # a benign race: two threads may both build it
            fn = self._fn = _fn(_Compiler(_MAP_VARIABLES).compile(self.node))
        return fn

    def evaluate(self, data: Env) -> Any:
        """`fn(data)`, or the CelFastError it raised."""
        try:
            return self.fn(data)
        except CelFastError as exc:
            return exc


def compile_fast(expression: str, variables: frozenset[str] | None = None) -> FastCondition | None:
    """The closure for `expression`, or None when it lies outside the subset.

    `expression` must already have been parsed and type-checked by the CEL library, against
    the variables of `_CHECKS`: this parser assumes the text is valid CEL and only decides
    whether it is in the subset. `variables` (default: all) are those it may read.
    """
    known = frozenset(_CHECKS) if variables is None else variables & frozenset(_CHECKS)
    try:
        node = _Parser(expression, known).parse()
        used: set[str] = set()
        if _depth(node, used) > _MAX_NESTING:  # closures nest as deep: far from stack limits
            return None
    except (_Unsupported, RecursionError):
        return None
    return FastCondition(node, frozenset(used))
