"""The CEL fast path agrees with the CEL library, value for value and error for error.

The differential tests generate random expressions over the fast path's subset and random
data (missing keys, wrong types, null, nested maps and lists, ints at the int64 edges, NaN
and infinities, unicode) and compare the closure with `cel_expr_python` on each pair: the
same value, or an error on both sides. `CELFAST_EXAMPLES=5000 pytest …` runs more examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clearance.policy import load_policy, load_policy_text
from clearance.policy.cel import _ENV, CelEvalError, Condition, FusedConditions, compile_condition
from clearance.policy.cel import _ERROR as CEL_ERROR_TYPE
from clearance.policy.celfast import CelFastError, compile_fast, plain_inputs
from clearance.policy.celfast.group import _loop_group

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("CELFAST_EXAMPLES", "400"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_ERROR = object()


# ---------------------------------------------------------------------------------------------
# The two sides


def base_data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "action": "pay",
        "params": {},
        "actor": {},
        "context": {},
        "labels": [],
        "risk": {},
    }
    data.update(over)
    return data


def cel_value(expression: str, data: Mapping[str, Any]) -> Any:
    """What the CEL library gives: a plain value, or _ERROR. Raises ValueError if invalid."""
    try:
        program = _ENV.compile(expression)
    except Exception as exc:
        raise ValueError(str(exc)) from None
    try:
        value = program.eval(data=dict(data))
    except Exception:
        return _ERROR
    if value.type() == CEL_ERROR_TYPE:
        return _ERROR
    return value.plain_value()


def fast_value(expression: str, data: Mapping[str, Any]) -> Any:
    fast = compile_fast(expression)
    assert fast is not None, f"not on the fast path: {expression}"
    assert plain_inputs(data, tuple(data))
    try:
        return fast.fn(data)
    except CelFastError:
        return _ERROR


def same(a: Any, b: Any) -> bool:
    """Strict equality: same types, NaN equal to NaN, -0.0 unequal to 0.0."""
    if a is _ERROR or b is _ERROR:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def check(expression: str, data: Mapping[str, Any]) -> Any:
    """Assert that both sides agree on (expression, data); return the value."""
    expected = cel_value(expression, data)
    got = fast_value(expression, data)
    assert same(got, expected), f"{expression!r} on {data!r}: fast {got!r}, CEL {expected!r}"
    return got


# ---------------------------------------------------------------------------------------------
# Edge cases, one by one (each documents what the library does)

P = "params"
EDGES: list[tuple[str, dict[str, Any], Any]] = [
    # missing keys, has()
    ("params.x == 1", {}, _ERROR),
    ("has(params.x)", {}, False),
    ("has(params.a)", {"a": None}, True),
    ("has(params.a.b)", {"a": 1}, _ERROR),
    ("has(params.a.b)", {"a": {"b": None}}, True),
    ("params.a.b == 1", {"a": [1]}, _ERROR),
    ("params['a'] == 1", {"a": 1}, True),
    # && and || absorb errors in either order; non-bool operands act like errors
    ("false && params.x", {}, False),
    ("params.x && false", {}, False),
    ("true || params.x", {}, True),
    ("params.x || true", {}, True),
    ("params.x && true", {}, _ERROR),
    ("params.a && false", {"a": 1}, False),
    ("params.a && true", {"a": 1}, _ERROR),
    ("params.a || false", {"a": 1}, _ERROR),
    ("params.a || true", {"a": "x"}, True),
    ("params.x && params.a && false", {"a": 1}, False),
    ("params.x || params.a || true", {"a": 1}, True),
    ("true && true && params.a", {"a": 1}, _ERROR),
    ("false || false || params.x", {}, _ERROR),
    ("true && true && true", {}, True),
    ("!params.a", {"a": 1}, _ERROR),
    ("!!params.a", {"a": 1}, 1),  # an even run of ! is no operation in CEL's parser
    ("--params.a", {"a": "x"}, "x"),
    ("-(-params.a)", {"a": "x"}, _ERROR),
    ("params.a ? 1 : 2", {"a": 1}, _ERROR),
    ("true ? params.a : params.x", {"a": 3}, 3),
    # heterogeneous equality, numeric ordering across int and double
    ("params.a == '1'", {"a": 1}, False),
    ("params.a == 1", {"a": True}, False),
    ("params.a == 1", {"a": 1.0}, True),
    ("params.a == params.b", {"a": 2**53 + 1, "b": float(2**53)}, True),  # int → double
    ("params.a < params.b", {"a": INT64_MAX, "b": float(2**63)}, False),
    ("params.a < 2", {"a": 1.5}, True),
    ("params.a < 'a'", {"a": 1}, _ERROR),
    ("params.a < params.b", {"a": True, "b": 1}, _ERROR),
    ("params.a < params.b", {"a": False, "b": True}, True),
    ("params.a < params.b", {"a": None, "b": None}, _ERROR),
    ("params.a == params.a", {"a": math.nan}, False),
    ("params.a == params.a", {"a": [math.nan]}, False),
    ("params.a <= 1", {"a": math.nan}, False),
    ("params.a in params.a", {"a": [math.nan]}, False),
    ("params.a == params.b", {"a": [1, 2.0], "b": [1.0, 2]}, True),
    ("params.a == params.b", {"a": {"x": 1}, "b": {"x": 1.0}}, True),
    ("params.a == null", {"a": None}, True),
    # int64 arithmetic
    ("params.a + 1", {"a": INT64_MAX}, _ERROR),
    ("params.a - 1", {"a": INT64_MIN}, _ERROR),
    ("-params.a", {"a": INT64_MIN}, _ERROR),
    ("params.a / -1", {"a": INT64_MIN}, _ERROR),
    ("params.a % -1", {"a": INT64_MIN}, _ERROR),
    ("params.a / 0", {"a": 5}, _ERROR),
    ("params.a % 0", {"a": 5}, _ERROR),
    ("params.a / 2", {"a": -7}, -3),
    ("params.a % 2", {"a": -7}, -1),
    ("params.a % -2", {"a": 7}, 1),
    ("params.a / 0.0", {"a": -5.0}, -math.inf),
    ("params.a + 1.0", {"a": 1}, _ERROR),
    ("params.a + params.b", {"a": "a", "b": None}, _ERROR),
    ("params.a + params.b", {"a": [1], "b": ["x"]}, [1, "x"]),
    # in, indexing, size, strings
    ("1 in params.a", {"a": {"1": 2}}, False),
    ("params.b in params.a", {"a": {"1": 2}, "b": None}, _ERROR),
    ("params.b in params.a", {"a": "abc", "b": "a"}, _ERROR),
    ("params.b in params.a", {"a": [1, 2.5], "b": 1.0}, True),
    ("params.a[1.0]", {"a": [1, 2]}, 2),
    ("params.a[-0.0]", {"a": [1, 2]}, 1),
    ("params.a[1.5]", {"a": [1, 2]}, _ERROR),
    ("params.a[2]", {"a": [1, 2]}, _ERROR),
    ("params.a[0]", {"a": {"0": 2}}, _ERROR),
    ("size(params.a)", {"a": "é😀"}, 2),
    ("size(params.a)", {"a": None}, _ERROR),
    ("params.a.startsWith('é')", {"a": "é😀"}, True),
    ("params.a.contains('x')", {"a": ["x"]}, _ERROR),
    ("params.a < params.b", {"a": "\uffff", "b": "😀"}, True),
    ("params.a == '\\x41\\101\\u0041\\U00000041\\a\\?\\`'", {"a": "AAAA\a?`"}, True),
    ("params.a == R'x'", {"a": "x"}, True),
    ("params.a == -9223372036854775808", {"a": INT64_MIN}, True),
    ("params.a == 0x7fffffffffffffff // a comment", {"a": INT64_MAX}, True),
    ("params.a == .5 && params.b == 1e3", {"a": 0.5, "b": 1000}, True),
    ("params.a == [1, 2, ]", {"a": [1, 2]}, True),
]


@pytest.mark.parametrize(("expression", "params", "expected"), EDGES)
def test_edge_cases_agree_with_the_library(
    expression: str, params: dict[str, Any], expected: Any
) -> None:
    data = base_data(params=params)
    assert same(cel_value(expression, data), expected), "the library changed its mind"
    assert same(check(expression, data), expected)


@pytest.mark.parametrize(
    "expression",
    [
        "params.a.matches('x')",
        "1u == params.a",
        "params.a == b'x'",
        "params.a == '''x'''",
        "params.a == {'k': 1}",
        "params.a.all(x, x > 1)",
        "int(params.a) == 1",
        "type(params.a) == int",
        "params.?a == 1",
        "[?params.a] == [1]",
        "params.a == 010",
        "dyn(params.a) == 1",
        "params.a == 1e999",
        "params.a == r'\\n'",  # raw strings with a backslash are left to the library
    ],
)
def test_outside_the_subset_falls_back(expression: str) -> None:
    assert compile_fast(expression) is None
    cond = _condition(expression)  # when valid, a condition on the library's path
    assert cond is None or cond.fast is None


NOT_PLAIN: list[dict[str, Any]] = [
    {"params": {"a": {1, 2}}},
    {"params": {"a": (1, 2)}},
    {"params": {"a": 2**63}},
    {"params": {"a": -(2**63) - 1}},
    {"params": {"a": b"x"}},
    {"params": {"a": "x\x00y"}},
    {"params": {"a": "\ud800"}},
    {"params": {"a\x00": 1}},
    {"params": {1: 1}},
    {"params": {"a": object()}},
    {"actor": {"user": 1}},
    {"labels": ("pii",)},
    {"labels": [1]},
    {"action": 1},
    {"params": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
]


@pytest.mark.parametrize("over", NOT_PLAIN)
def test_data_that_is_not_plain_uses_the_library(over: dict[str, Any]) -> None:
    data = base_data(**over)
    assert not plain_inputs(data, tuple(data))
    cond = compile_condition("has(params.a) || size(labels) > 0 || action == 'x' || true")
    slow = dataclasses.replace(cond, fast=None)
    assert cond.fast is not None
    assert outcome(cond, data) == outcome(slow, data)
    other = compile_condition("params.a == 1")
    fused = FusedConditions([cond, other])
    assert fused.fast
    reference = FusedConditions([slow, dataclasses.replace(other, fast=None)])
    assert _outcomes(fused.evaluate(data)) == _outcomes(reference.evaluate(data))


def _outcomes(results: list[bool | CelEvalError]) -> list[Any]:
    return [r if isinstance(r, bool) else _ERROR for r in results]


def test_a_string_cut_at_nul_by_the_binding_is_left_to_it() -> None:
    """The binding cuts strings at a NUL: 'x\\x00y' == 'x' is true there. Not our business."""
    data = base_data(params={"a": "x\x00y"})
    cond = compile_condition("params.a == 'x'")
    assert cond.evaluate(data) is True  # as the library says


# ---------------------------------------------------------------------------------------------
# Every condition of the shipped example and of the benchmark's policies takes the fast path


def test_enterprise_example_is_all_fast() -> None:
    policy = load_policy(ROOT / "examples" / "enterprise" / "clearance.yaml")
    assert policy.conditions
    slow = [c.source for c in policy.conditions.values() if c.fast is None]
    assert not slow


def test_benchmark_policies_are_all_fast() -> None:
    bench = pytest.importorskip("bench.bench_policy")
    shape = bench.SyntheticShape(rules=400, services=4, ops_per_service=10)
    sources = [bench.synthetic_policy_yaml(shape), bench.comparison_policy_yaml()]
    for text in sources:
        policy = load_policy_text(text, "bench.yaml")
        slow = [c.source for c in policy.conditions.values() if c.fast is None]
        assert not slow
    case = bench.build_enterprise_case(50)
    for request in case.requests:
        group = case.engine._group(request.action)
        assert group.fused is None or group.fused.fast


# ---------------------------------------------------------------------------------------------
# Random expressions × random data

KEYS = ("a", "b", "c")
TEXT = st.text(alphabet="ab é😀\t'\"\\", max_size=4)
INTS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 7, -7, INT64_MAX, INT64_MIN, 2**53 + 1, 2**62, -(2**62)]),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(-10, 10),
)
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, -1.5, math.nan, math.inf, -math.inf, 2.0**63]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=6,
)
MAPS = st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, VALUES)) | st.fixed_dictionaries(
    dict.fromkeys(KEYS, VALUES)
)


@st.composite
def datas(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "action": draw(TEXT),
        "params": draw(MAPS),
        "actor": draw(st.dictionaries(st.sampled_from(KEYS), TEXT, max_size=2)),
        "context": draw(MAPS),
        "labels": draw(st.lists(TEXT, max_size=3)),
        "risk": draw(MAPS),
    }


def _int_literal(draw: st.DrawFn) -> str:
    value = draw(INTS)
    if value == INT64_MIN:
        return "-9223372036854775808"
    if value >= 0 and draw(st.booleans()):
        return hex(value)
    return str(value)


def _double_literal(draw: st.DrawFn) -> str:
    return draw(
        st.sampled_from(
            ["0.0", "1.0", "1.5", ".5", "2.5e-3", "1e3", "1E308", "-0.0", "9007199254740993.0"]
        )
    )


_STRING_PIECES = st.sampled_from(
    [
        *["a", "b", " ", "é", "😀", "\\n", "\\t", "\\\\", "\\'", '\\"', "\\x41", "\\u00e9"],
        *["\\U0001F600", "\\101", "\\?", "\\`", "\\a", "\\000"],
    ]
)


def _string_literal(draw: st.DrawFn) -> str:
    quote = draw(st.sampled_from(["'", '"']))
    pieces = draw(st.lists(_STRING_PIECES, max_size=4))
    if draw(st.booleans()) and not any("\\" in p for p in pieces):
        return "r" + quote + "".join(pieces) + quote
    return quote + "".join(pieces) + quote


def _literal(draw: st.DrawFn, depth: int) -> str:
    kind = draw(st.sampled_from(["int", "double", "string", "bool", "null", "list"]))
    if kind == "int":
        return _int_literal(draw)
    if kind == "double":
        return _double_literal(draw)
    if kind == "string":
        return _string_literal(draw)
    if kind == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if kind == "null":
        return "null"
    items = [_literal(draw, depth + 1) for _ in range(draw(st.integers(0, 3 if depth < 2 else 0)))]
    return "[" + ", ".join(items) + "]"


_PATHS = st.sampled_from(
    [
        "params.a",
        "params.b",
        "params['c']",
        "params.a.b",
        "params.a[0]",
        "params.b[1]",
        "context.a",
        "risk.b",
        "params",
        "actor.a",
        "labels",
        "labels[0]",
        "action",
    ]
)
_DYN_PATHS = st.sampled_from(
    ["params.a", "params.a", "params.b", "params['c']", "params.a.b", "context.a", "risk.b"]
)
_CONTAINERS = ["labels", "params", "context", "risk", "actor", "params.a", "action"]
_BINARY = ["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in", "&&", "||"]


def _expr(draw: st.DrawFn, depth: int) -> str:
    if depth >= 4:
        choice = draw(st.sampled_from(["path", "path", "path", "literal"]))
    else:
        choice = draw(
            st.sampled_from(
                [
                    *["path", "path", "literal", "binary", "binary", "binary", "unary", "ternary"],
                    *["has", "size", "method", "index", "select", "list"],
                ]
            )
        )
    if choice == "path":
        return draw(_PATHS)
    if choice == "literal":
        return _literal(draw, 0)
    if choice == "has":
        return "has(" + draw(st.sampled_from(["params.a", "params.a.b", "context.c"])) + ")"

    def sub() -> str:
        text = _expr(draw, depth + 1)
        return f"({text})" if draw(st.booleans()) else text

    if choice == "binary":
        op = draw(st.sampled_from(_BINARY))
        space = draw(st.sampled_from([" ", "", "\n", " // note\n"]))
        return f"{sub()}{space}{op}{space if space.strip() == '' else ' '}{sub()}"
    if choice == "unary":
        op = draw(st.sampled_from(["!", "-", "!!", "--", "- "]))
        return f"{op}({_expr(draw, depth + 1)})"
    if choice == "ternary":
        return f"{sub()} ? {sub()} : {sub()}"
    if choice == "size":
        return f"size({_expr(draw, depth + 1)})"
    if choice == "method":
        name = draw(st.sampled_from(["startsWith", "endsWith", "contains", "size"]))
        arg = "" if name == "size" else _expr(draw, depth + 1)
        return f"({_expr(draw, depth + 1)}).{name}({arg})"
    if choice == "index":
        return f"({_expr(draw, depth + 1)})[{_expr(draw, depth + 1)}]"
    if choice == "select":
        return f"({_expr(draw, depth + 1)}).{draw(st.sampled_from(KEYS))}"
    items = [_expr(draw, depth + 1) for _ in range(draw(st.integers(0, 2)))]
    return "[" + ", ".join(items) + "]"


@st.composite
def expressions(draw: st.DrawFn) -> str:
    return _expr(draw, 0)


def _compiles(expression: str) -> bool:
    try:
        _ENV.compile(expression)
    except Exception:
        return False
    return True


@SETTINGS
@given(expression=expressions(), data=datas())
def test_random_expressions_agree_with_the_library(expression: str, data: dict[str, Any]) -> None:
    if not _compiles(expression):
        event("rejected by the type checker")
        return
    value = check(expression, data)
    event("error" if value is _ERROR else f"value: {type(value).__name__}")


@st.composite
def conditions(draw: st.DrawFn) -> str:
    """Conditions as policies write them: tests of fields, joined by && and ||."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(_DYN_PATHS)
        literal = _literal(draw, 0)
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        test = draw(
            st.sampled_from(
                [
                    f"{path} {op} {literal}",
                    f"{literal} {op} {path}",
                    f"{path} in {literal}",
                    f"{literal} in {path}",
                    f"{_string_literal(draw)} in {draw(st.sampled_from(_CONTAINERS))}",
                    f"!({path} {op} {literal})",
                    f"has({draw(st.sampled_from(['params.a', 'params.a.b', 'context.c']))})",
                    f"size({path}) {op} {draw(INTS)}",
                    f"{path}.startsWith({_string_literal(draw)})",
                    f"!{path}",
                    f"{path}",
                    f"({_expr(draw, 2)}) {op} ({_expr(draw, 2)})",
                ]
            )
        )
        parts.append(f"({test})" if draw(st.booleans()) else test)
    joined = parts[0]
    for part in parts[1:]:
        joined = f"{joined} {draw(st.sampled_from(['&&', '||']))} {part}"
    return joined


def outcome(cond: Condition, data: Mapping[str, Any]) -> Any:
    try:
        return cond.evaluate(data)
    except CelEvalError:
        return _ERROR


def _condition(expression: str) -> Condition | None:
    try:
        return compile_condition(expression)
    except Exception:
        return None


@SETTINGS
@given(sources=st.lists(conditions(), min_size=1, max_size=4), data=datas())
def test_conditions_and_fused_groups_agree_with_the_library(
    sources: list[str], data: dict[str, Any]
) -> None:
    conds = [c for c in map(_condition, sources) if c is not None]
    if not conds:
        event("no valid condition")
        return
    assert all(c.fast is not None for c in conds)
    slow = [dataclasses.replace(c, fast=None) for c in conds]
    expected = [outcome(c, data) for c in slow]
    assert [outcome(c, data) for c in conds] == expected
    fused = FusedConditions(conds)
    assert fused.fast
    got = [r if isinstance(r, bool) else _ERROR for r in fused.evaluate(data)]
    assert got == expected
    reference = [r if isinstance(r, bool) else _ERROR for r in FusedConditions(slow).evaluate(data)]
    assert reference == expected
    # The plain loop over closures (used when the generated function would nest too deep).
    fasts = [c.fast for c in conds if c.fast is not None]
    variables = tuple(sorted(frozenset().union(*(c.variables for c in conds))))
    loop = _loop_group(fasts, variables, lambda x: _ERROR)(data)
    assert loop is not None
    assert [r if isinstance(r, bool) else _ERROR for r in loop] == expected
    event(f"outcomes: {sorted({'error' if x is _ERROR else str(x) for x in expected})}")


# ---------------------------------------------------------------------------------------------
# The parser respects CEL's precedence and associativity

PRECEDENCE = [
    ("1 + 2 * 3 == 7", True),
    ("(1 + 2) * 3 == 9", True),
    ("10 - 4 - 3 == 3", True),
    ("12 / 3 / 2 == 2", True),
    ("7 % 4 * 2 == 6", True),
    ("true || false && false", True),
    ("false && true || true", True),
    ("1 < 2 == true", True),
    ("false ? 1 : true ? 2 : 3", 2),
    ("-2 * 3 == -6", True),
    ("!true == false", True),
    ("'b' in ['a', 'b'] == true", True),
    ("[1, 2][1] == 2", True),
    ("size('abc') + 1 == 4", True),
]


@pytest.mark.parametrize(("expression", "expected"), PRECEDENCE)
def test_precedence(expression: str, expected: Any) -> None:
    data = base_data()
    assert same(check(expression, data), expected)


def test_the_regex_of_referenced_variables_covers_the_parsed_ones() -> None:
    """Data checks use `Condition.variables`: it must include every variable read."""
    cond = compile_condition("params.a == 'actor' && context.x != 1 && 'pii' in labels")
    assert cond.fast is not None
    assert cond.fast.variables <= cond.variables
    assert cond.fast.variables == {"params", "context", "labels"}


def test_errors_become_cel_eval_errors_with_a_message() -> None:
    cond = compile_condition("params.amount > 10")
    with pytest.raises(CelEvalError, match="amount"):
        cond.evaluate(base_data())
    with pytest.raises(CelEvalError, match="not true/false"):
        compile_condition("params.a").evaluate(base_data(params={"a": 1}))
    fused = FusedConditions([cond, compile_condition("true")])
    first, second = fused.evaluate(base_data())
    assert isinstance(first, CelEvalError) and second is True
