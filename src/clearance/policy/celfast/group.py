"""The conditions of an action group written out as one generated Python function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import CelFastError, Env
from .closures import _SWAPPED, _Compiler, _Const, _fn
from .condition import FastCondition
from .ops import _BINARY
from .parser import Node
from .plain import _CHECKS, _MAP_VARIABLES, plain_inputs

# A decision evaluates every condition of its action group. Calling a dozen closure trees
# touches many small objects (a policy has thousands), so the group is also written out as
# the source of one function: the plain-data checks, then one Python expression for each
# condition made of boolean tests joined by && and || (the shape nearly every condition
# has), anything else a call to the condition's closure.
#
# The expression uses Python's `and` / `or`, which agree with CEL's as long as every operand
# gives a bool: a test never gives anything else, but it may raise (a missing key, a wrong
# type). Python's short-circuit only skips operands after a deciding one, which cannot change
# the result; if an operand raises before one decides, CEL's answer depends on the operands
# left (`<error> && false` is false), so the whole condition is evaluated again, exactly, by
# its closure. Tests whose operand is `variable.key` against a constant are written inline
# (doing what the closure does); any other test is a call to its closure. No text from the
# expression reaches the generated source: constants are passed by name.

_BOOLEAN_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})


class _GroupWriter:
    def __init__(self) -> None:
        self.compiler = _Compiler(_MAP_VARIABLES)
        self.ns: dict[str, Any] = {
            "ERRORS": (CelFastError, KeyError),
            "__builtins__": {"type": type, "int": int, "float": float, "str": str},
        }

    def const(self, value: Any) -> str:
        name = f"k{len(self.ns)}"
        self.ns[name] = value
        return name

    def closure(self, node: Node) -> str:
        return self.const(_fn(self.compiler.compile(node)))

    def constant(self, node: Node) -> tuple[bool, Any]:
        if node[0] == "lit":
            return True, node[1]
        if node[0] in ("var", "sel"):
            return False, None
        compiled = self.compiler.compile(node)
        if isinstance(compiled, _Const) and compiled.error is None:
            return True, compiled.value
        return False, None

    def test(self, node: Node) -> str | None:
        """A Python expression for `node` that gives a bool or raises (CelFastError, or
        KeyError for a missing key), or None when `node` may give another value."""
        tag = node[0]
        if tag in ("and", "or"):
            parts: list[str] = []
            for item in node[1]:
                part = self.test(item)
                if part is None:
                    return None
                parts.append(part)
            return "(" + f" {tag} ".join(parts) + ")"
        if tag == "not":
            inner = self.test(node[1])
            return None if inner is None else f"(not {inner})"
        if tag == "has" and node[1][0] == "var" and node[1][1] in _MAP_VARIABLES:
            return f"({self.const(node[2])} in v_{node[1][1]})"
        if tag == "bin" and node[1] in _BOOLEAN_OPS:
            return self.inline(node) or f"{self.closure(node)}(env)"
        if tag in ("has", "strfn"):
            return f"{self.closure(node)}(env)"
        return None

    def inline(self, node: Node) -> str | None:
        """A comparison of `variable.key` (or `in` a variable) with a constant, inline."""
        _, op, left, right = node
        left_const, left_value = self.constant(left)
        right_const, right_value = self.constant(right)
        if left_const and not right_const:
            if op in _SWAPPED:
                left, right, op = right, left, _SWAPPED[op]
                right_const, right_value = left_const, left_value
            elif (
                op == "in"
                and type(left_value) is str
                and right[0] == "var"
                and right[1] in _LIST_OR_MAP_VARIABLES
            ):
                return f"({self.const(left_value)} in v_{right[1]})"  # exact for a string
            else:
                return None
        found = self.compiler.path(left)
        if not right_const or found is None:
            return None
        get = f"v_{found[0]}[{self.const(found[1])}]"  # KeyError when missing
        c = right_value
        tc = type(c)
        if op in ("==", "!=") and tc is str:
            return f"({get} {op} {self.const(c)})"  # only an equal string equals a string
        if op in ("==", "!=") and (tc is bool or c is None):
            return f"({get} {'is' if op == '==' else 'is not'} {self.const(c)})"
        if op != "in" and (tc is int or tc is float):
            k = self.const(c)
            general = self.const(_BINARY[op])
            kind = "int" if tc is int else "float"
            return f"(t {op} {k} if type(t := {get}) is {kind} else {general}(t, {k}))"
        if op == "in" and tc is list and c and all(type(item) is str for item in c):
            return f"(type(t := {get}) is str and t in {self.const(frozenset(c))})"
        return None

    def condition(self, cond: FastCondition, r: str) -> list[str]:
        """The lines that set `r` to the condition's value, or to the CelFastError."""
        whole = self.const(cond)
        test = self.test(cond.node)
        if test is None:
            return [f"{r} = {whole}.evaluate(env)"]
        return [
            "try:",
            f"    {r} = {test}",
            "except ERRORS:",
            f"    {r} = {whole}.evaluate(env)",
        ]


_LIST_OR_MAP_VARIABLES = frozenset({"labels"}) | _MAP_VARIABLES


def compile_group(
    conditions: list[FastCondition], variables: tuple[str, ...], fix: Callable[[Any], Any]
) -> Callable[[Env], list[Any] | None]:
    """One function evaluating every condition: None when the data is not plain, else one
    result per condition — True, False, or `fix(x)` of the error or non-bool value x."""
    if not frozenset().union(*(c.variables for c in conditions)) <= frozenset(variables):
        raise ValueError("the conditions read variables that are not checked")
    writer = _GroupWriter()
    writer.ns["fix"] = fix
    lines = []
    checks = []
    for name in variables:
        lines.append(f"v_{name} = env[{writer.const(name)}]")
        checks.append(f"{writer.const(_CHECKS[name])}(v_{name})")
    if checks:
        lines += [f"if not ({' and '.join(checks)}):", "    return None"]
    results = []
    try:
        for i, cond in enumerate(conditions):
            lines += writer.condition(cond, f"r{i}")
            results.append(f"r{i} if r{i} is True or r{i} is False else fix(r{i})")
        lines.append("return [" + ", ".join(results) + "]")
        source = "def group(env):\n" + "".join(f"    {line}\n" for line in lines)
        exec(compile(source, "<celfast group>", "exec"), writer.ns)  # noqa: S102
        group: Callable[[Env], list[Any] | None] = writer.ns["group"]
    except (SyntaxError, RecursionError, MemoryError):  # nesting beyond Python's limits
        return _loop_group(conditions, variables, fix)
    return group


def _loop_group(
    conditions: list[FastCondition], variables: tuple[str, ...], fix: Callable[[Any], Any]
) -> Callable[[Env], list[Any] | None]:
    def group(env: Env) -> list[Any] | None:
        if not plain_inputs(env, variables):
            return None
        out: list[Any] = []
        for cond in conditions:
            result = cond.evaluate(env)
            out.append(result if result is True or result is False else fix(result))
        return out

    return group
