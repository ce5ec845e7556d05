"""CEL conditions: compile and type-check once at load, evaluate many times.

The only module that imports a CEL implementation. We use Google's `cel-expr-python` (the C++
runtime, `cel_expr_python`): it type-checks against declared variables at compile time — so
`amout > 3` or `actor.user > 3` is a load error with line and column — and it evaluated our
fused conditions about twice as fast as the Rust-backed `common-expression-language`, which
parses but does not type-check (figures in the README).

A *fused* program evaluates the conditions of every rule that applies to one action in a
single call (`[c1, c2, …]`), so a decision crosses into the CEL engine once per action group.
When the fused call fails (one condition hit a missing key or a wrong type), each condition
is evaluated alone to learn which rule failed: the slow path only runs on errors.

The fast path (`celfast`): a condition within a common subset of CEL is also compiled to a
Python closure with the library's semantics, several times cheaper than a call into the
library (which converts the request's data to CEL values on every call). A group whose
conditions all have one is evaluated in Python — by one generated function — when the data
is plain (JSON-like); the library stays the type checker, the source of compile errors, and
the fallback (for other conditions, and for data that is not plain).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel as _cel

from .celfast import CelFastError, FastCondition, compile_fast, compile_group, plain_inputs

VARIABLES: tuple[str, ...] = ("action", "params", "actor", "context", "labels", "risk")

_T = _cel.Type
_ENV = _cel.NewEnv(
    variables={
        "action": _T.STRING,
        "params": _T.Map(_T.STRING, _T.DYN),
        "actor": _T.Map(_T.STRING, _T.STRING),
        "context": _T.Map(_T.STRING, _T.DYN),
        "labels": _T.List(_T.STRING),
        "risk": _T.Map(_T.STRING, _T.DYN),
    }
)
_ERROR = _T.ERROR
_BOOL_TYPES = {_T.BOOL.name(), _T.DYN.name()}
_MESSAGE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_VAR_REF = re.compile(r"(?<![\w.])(" + "|".join(VARIABLES) + r")\b")


@dataclass(frozen=True, slots=True)
class CelProblem:
    """A compile error at `line`:`column` of the expression (1-based)."""

    message: str
    line: int
    column: int
    hint: str | None = None


class CelCompileError(Exception):
    def __init__(self, problems: Sequence[CelProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = tuple(problems)


class CelEvalError(Exception):
    """A condition could not be evaluated for this request (missing key, wrong type, …)."""


def referenced_variables(expression: str) -> frozenset[str]:
    """The declared variables an expression may read (a safe over-approximation)."""
    return frozenset(_VAR_REF.findall(expression))


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled, type-checked condition.

    `fast` is its closure when the condition lies within the fast path's subset, else None.
    """

    source: str
    variables: frozenset[str]
    _program: Any
    fast: FastCondition | None = None

    def evaluate(self, data: Mapping[str, Any]) -> bool:
        fast = self.fast
        if fast is not None and plain_inputs(data, self.variables):
            try:
                result = fast.fn(data)
            except CelFastError as exc:
                raise CelEvalError(str(exc)) from None
            if result is True or result is False:
                return result
            raise CelEvalError(_not_bool(result))
        try:
            value = self._program.eval(data={k: data[k] for k in self.variables})
        except Exception as exc:  # the binding refuses values it cannot convert
            raise CelEvalError(f"cannot evaluate with these values: {exc}") from None
        if value.type() == _ERROR:
            raise CelEvalError(_clean(str(value.value())))
        result = value.plain_value()
        if result is True or result is False:
            return result
        raise CelEvalError(_not_bool(result))


def _not_bool(result: object) -> str:
    return f"condition gave {type(result).__name__} {result!r}, not true/false"


def _as_error(result: object) -> CelEvalError:
    """The fast path's result for an error (CelFastError) or a value that is not a bool."""
    if isinstance(result, CelFastError):
        return CelEvalError(str(result))
    return CelEvalError(_not_bool(result))


def compile_condition(expression: str) -> Condition:
    """Parse and type-check `expression`; raise `CelCompileError` listing every problem."""
    if not expression.strip():
        raise CelCompileError([CelProblem("empty condition", 1, 1)])
    try:
        program = _ENV.compile(expression)
    except Exception as exc:  # the binding raises RuntimeError with the checker's report
        raise CelCompileError(_problems(str(exc), expression)) from None
    rtype = program.return_type().name()
    if rtype not in _BOOL_TYPES:
        raise CelCompileError(
            [CelProblem(f"a condition must be true or false, this one gives {rtype.lower()}", 1, 1)]
        )
    variables = referenced_variables(expression)
    fast = compile_fast(expression, variables)
    if fast is not None and not fast.variables <= variables:
        fast = None  # cannot happen (the regex over-approximates); never trust a mismatch
    return Condition(expression, variables, program, fast)


class FusedConditions:
    """Every condition of one action group, evaluated in one call.

    When every condition has a fast path, plain data is evaluated in Python (`fast` is then
    true); the fused CEL program is then compiled only if some request's data is not plain.
    """

    __slots__ = ("_bits", "_conditions", "_fast", "_program", "_source", "_variables")

    def __init__(self, conditions: Sequence[Condition]) -> None:
        self._conditions = tuple(conditions)
        self._variables = tuple(sorted(frozenset().union(*(c.variables for c in conditions))))
        # One integer, bit i set when condition i holds: cheaper to bring back than a list.
        # A condition that is not a boolean makes the whole sum an error (then: slow path).
        self._source = " + ".join(
            f"(({c.source}) ? {1 << i} : 0)" for i, c in enumerate(conditions)
        )
        self._bits = tuple(1 << i for i in range(len(conditions)))
        fast = [c.fast for c in conditions if c.fast is not None]
        whole = len(fast) == len(conditions)
        self._fast = compile_group(fast, self._variables, _as_error) if whole else None
        self._program: Any = None if self._fast is not None else _ENV.compile(self._source)

    @property
    def fast(self) -> bool:
        """Whether plain data is evaluated by the fast path."""
        return self._fast is not None

    def evaluate(self, data: Mapping[str, Any]) -> list[bool | CelEvalError]:
        """One boolean — or the error it hit — per condition, in order."""
        fast = self._fast
        if fast is not None:
            results = fast(data)  # None when the data is not plain
            if results is not None:
                return results
        program = self._program
        if program is None:  # a benign race: two threads may both compile it
            program = self._program = _ENV.compile(self._source)
        try:
            value = program.eval(data={k: data[k] for k in self._variables})
            failed = value.type() == _ERROR
        except Exception:  # values CEL cannot represent: find out which rule on the slow path
            failed = True
        if not failed:
            mask = value.value()
            return [mask & bit != 0 for bit in self._bits]
        out: list[bool | CelEvalError] = []
        for cond in self._conditions:
            try:
                out.append(cond.evaluate(data))
            except CelEvalError as exc:
                out.append(exc)
        return out


def _clean(message: str) -> str:
    for prefix in ("UNKNOWN: ", "INVALID_ARGUMENT: ", "NOT_FOUND: "):
        message = message.removeprefix(prefix)
    message = message.replace("No matching overloads found : ", "no matching overload for ")
    if message.startswith("ERROR NOT_FOUND: "):
        message = message.removeprefix("ERROR NOT_FOUND: ")
    return message.strip()


_OVERLOAD = re.compile(r"found no matching overload for '([^']+)' applied to '(\([^']*\))'")
_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")


def _problems(report: str, expression: str) -> list[CelProblem]:
    out: list[CelProblem] = []
    for match in _MESSAGE.finditer(report):
        line, column, message = int(match[1]), int(match[2]), match[3].strip()
        message = message.removesuffix("[INVALID_ARGUMENT]").strip()
        message = re.sub(r" \(in container ''\)", "", message)
        hint = None
        undeclared = _UNDECLARED.search(message)
        if undeclared:
            name = undeclared[1].split(".")[0]
            message = f"unknown variable '{name}'"
            hint = _suggest(name)
        overload = _OVERLOAD.search(message)
        if overload:
            op = overload[1].strip("_") or overload[1]
            message = f"type error: '{op}' cannot be applied to {overload[2]}"
        out.append(CelProblem(message, line, column, hint))
    if not out:
        out.append(CelProblem(_clean(report.splitlines()[0] if report else "invalid"), 1, 1))
    return out


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, VARIABLES, n=1, cutoff=0.75)
    known = ", ".join(VARIABLES)
    if close:
        return f"did you mean '{close[0]}'? Conditions can read: {known}"
    return f"a request's arguments are read as params.{name}; conditions can read: {known}"
