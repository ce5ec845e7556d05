"""A fast path for CEL conditions: a subset of CEL compiled to Python closures.

Calling into the CEL library costs a few microseconds even for `true`, because the binding
converts the request's data into CEL values on every call. For the conditions policies are
made of (field tests, comparisons, `in`, `has`, `&&`/`||`) a Python closure is several times
cheaper. This module parses an expression that the CEL library has *already* parsed and
type-checked (the library stays the type checker, the source of compile errors, and the
fallback) and, when it lies within the subset below, compiles it to a closure with exactly
the library's run-time semantics. Anything outside the subset is refused (`compile_fast`
returns None) and the caller keeps using the library. The conditions of an action group are
also written out as one generated function (`compile_group`), cheaper still to call.

The subset: literals (int, double, string with escapes, bool, null, lists); the declared
variables; field selection `a.b`, indexing `a['b']` / `a[0]`; `has(a.b)`; `size(x)`,
`x.size()`; `! - * / % +`; `< <= > >= == !=`; `in`; `&& ||`; `? :`; and the string methods
`startsWith`, `endsWith`, `contains`. Not in it: unsigned ints, bytes, map literals, macros
(`all`, `exists`, …), `matches` (RE2 and Python's `re` differ), conversions, timestamps.

The semantics (each checked against `cel_expr_python` by tests/policy/test_celfast.py):

- A missing map key, a field of a non-map, an index out of range → error. `has(a.b)` is a
  presence test on a map (an error on anything else).
- `&&` / `||` are commutative and absorb errors: `false && <error>` is false and
  `true || <error>` is true, in either order; a non-bool operand behaves like an error.
  `!x` needs a bool, so does the condition of `? :`. An even run of `!` (or of `-`) is no
  operation at all, as in CEL's parser (`!!x` is `x`).
- Equality is heterogeneous: values of different kinds are unequal (`1 == '1'` is false),
  int and double compare numerically (the int converted to double, as CEL does), NaN is
  unequal to everything, lists and maps compare element-wise. `bool` is never a number.
- Ordering: int, double (mixed too), string, bool; anything else is an error.
- Arithmetic: int64 with overflow errors, CEL's truncated `/` and `%`, errors on division
  by zero; IEEE doubles (`x / 0.0` is ±inf or NaN); `+` also joins strings and lists.
  Mixed int/double arithmetic is an error.
- `x in list` uses CEL equality; `x in map` tests the keys (false for a number or a bool,
  an error for null, a list or a map).

The data must be *plain* (`plain_inputs`): None, bool, int within int64, float, str, list,
dict with str keys, nested at most `_MAX_DEPTH` deep, each variable of its declared type.
The library refuses or converts anything else in its own way (a tuple or a set is an error,
an int ≥ 2**63 becomes unsigned, a string is cut at its first NUL), so for such data the
caller uses the library rather than trying to copy those behaviours.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from .model import DEFAULT_RISK

__all__ = ["CelFastError", "FastCondition", "compile_fast", "compile_group", "plain_inputs"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_MAX_DEPTH = 32

Env = Mapping[str, Any]
Fn = Callable[[Env], Any]


class CelFastError(Exception):
    """A run-time CEL error (missing key, no matching overload, overflow, …)."""


class _Unsupported(Exception):
    """The expression lies outside the subset (compile time only)."""


# ---------------------------------------------------------------------------------------------
# Tokens

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "?": "?",
    '"': '"',
    "'": "'",
    "`": "`",
}
# Tokens after which a `?` is a ternary operator (elsewhere it is optional-value syntax).
_VALUE_END = frozenset({"int", "float", "str", "ident"})

Token = tuple[str, Any]  # (kind, value): kind is "int", "float", "str", "ident", "op", "eof"


# One token at a time, as CEL's lexer sees them (longest match): the alternatives are tried in
# order, so a double (`1.5`, `1e3`, `.5`) before an int, a string's opening (with its r/b
# prefix) before an identifier. String bodies are read by `_string`.
_TOKEN = re.compile(
    r"""
      (?P<skip>[ \t\n\r\f]+|//[^\n]*)
    | (?P<float>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?)
    | (?P<hex>0x[0-9a-fA-F]+)
    | (?P<int>\d+)
    | (?P<str>[rRbB]{0,2}['"])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>!?:.,\[\]()+\-*/%])
    """,
    re.VERBOSE,
)


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    i, n = 0, len(text)
    match = _TOKEN.match
    while i < n:
        m = match(text, i)
        if m is None:
            raise _Unsupported(f"character {text[i]!r}")
        kind = m.lastgroup
        j = m.end()
        if kind == "skip":
            i = j
            continue
        if kind == "str":
            i = _string(text, i, out)
            continue
        literal = m.group()
        if kind == "ident":
            out.append(("ident", literal))
        elif kind == "op":
            if literal == "?" and (
                not out or (out[-1][0] not in _VALUE_END and out[-1] not in _CLOSE)
            ):
                raise _Unsupported("optional syntax")  # `a.?b`, `[?x]`: not a ternary
            out.append(("op", literal))
        else:
            if j < n and text[j] in _IDENT_CHARS:
                raise _Unsupported("unsigned or malformed number")  # 1u, 0X1, 1abc
            if kind == "float":
                value = float(literal)
                if not math.isfinite(value):
                    raise _Unsupported("double literal out of range")
                out.append(("float", value))
            else:
                if kind == "int" and len(literal) > 1 and literal[0] == "0":
                    raise _Unsupported("int literal with a leading zero")
                number = int(literal, 16 if kind == "hex" else 10)
                if number > INT64_MAX + 1:  # 2**63 only as -9223372036854775808
                    raise _Unsupported("int literal out of range")
                out.append(("int", number))
        i = j
    out.append(("eof", None))
    return out


_CLOSE = (("op", ")"), ("op", "]"))


def _string(text: str, i: int, out: list[Token]) -> int:
    n = len(text)
    raw = False
    while text[i] in "rRbB":
        if text[i] in "bB" or raw:
            raise _Unsupported("bytes literal or string prefix")
        raw = True
        i += 1
    quote = text[i]
    if text.startswith(quote * 3, i):
        raise _Unsupported("triple-quoted string")
    i += 1
    parts: list[str] = []
    while True:
        if i >= n:
            raise _Unsupported("unterminated string")
        ch = text[i]
        if ch == quote:
            i += 1
            break
        if ch in "\r\n":
            raise _Unsupported("newline in string")
        if ch != "\\":
            parts.append(ch)
            i += 1
            continue
        if raw:
            raise _Unsupported("backslash in a raw string")
        i += 1
        if i >= n:
            raise _Unsupported("unterminated string")
        esc = text[i]
        if esc in _ESCAPES:
            parts.append(_ESCAPES[esc])
            i += 1
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = text[i + 1 : i + 1 + width]
            if len(digits) != width or any(c not in _HEX for c in digits):
                raise _Unsupported("escape")
            code = int(digits, 16)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise _Unsupported("escape")
            parts.append(chr(code))
            i += 1 + width
        elif esc in "0123":
            digits = text[i : i + 3]
            if len(digits) != 3 or any(c not in _OCT for c in digits):
                raise _Unsupported("escape")
            parts.append(chr(int(digits, 8)))
            i += 3
        else:
            raise _Unsupported("escape")
    out.append(("str", "".join(parts)))
    return i


# ---------------------------------------------------------------------------------------------
# Parser: CEL's grammar, by precedence climbing. Nodes are tuples tagged by their first item.
#
#   expr     = or ['?' or ':' expr]
#   or       = and {'||' and}          and      = relation {'&&' relation}
#   relation = calc {('<'|'<='|'>='|'>'|'=='|'!='|'in') calc}
#   calc     = product {('+'|'-') product}   product = unary {('*'|'/'|'%') unary}
#   unary    = member | '!'{'!'} member | '-'{'-'} member
#   member   = primary {'.' IDENT ['(' args ')'] | '[' expr ']'}
#   primary  = IDENT ['(' args ')'] | '(' expr ')' | '[' [expr {',' expr} [',']] ']' | literal

Node = tuple[Any, ...]
_RELATIONS = frozenset({"<", "<=", ">=", ">", "==", "!=", "in"})
_KEYWORDS = {"true": True, "false": False, "null": None}
_RESERVED = frozenset({"in", "true", "false", "null"})


class _Parser:
    def __init__(self, text: str, variables: frozenset[str]) -> None:
        self.toks = _tokens(text)
        self.pos = 0
        self.variables = variables

    def peek(self) -> Token:
        return self.toks[self.pos]

    def take(self) -> Token:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def accept(self, op: str) -> bool:
        if self.toks[self.pos] == ("op", op):
            self.pos += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise _Unsupported(f"expected {op!r}")

    def parse(self) -> Node:
        node = self.expr()
        if self.peek()[0] != "eof":
            raise _Unsupported("trailing input")
        return node

    def expr(self) -> Node:
        cond = self.or_()
        if self.accept("?"):
            then = self.or_()
            self.expect(":")
            return ("cond", cond, then, self.expr())
        return cond

    # A chain of && (of ||) is one n-ary node: both are associative in CEL, errors included
    # (`a && b && c` is false when any is false, true when all are true, else an error).
    def or_(self) -> Node:
        items = [self.and_()]
        while self.accept("||"):
            items.append(self.and_())
        return items[0] if len(items) == 1 else ("or", items)

    def and_(self) -> Node:
        items = [self.relation()]
        while self.accept("&&"):
            items.append(self.relation())
        return items[0] if len(items) == 1 else ("and", items)

    def relation(self) -> Node:
        node = self.calc()
        while True:
            tok = self.peek()
            if tok[0] == "op" and tok[1] in _RELATIONS:
                op = tok[1]
            elif tok == ("ident", "in"):
                op = "in"
            else:
                return node
            self.pos += 1
            node = ("bin", op, node, self.calc())

    def calc(self) -> Node:
        node = self.product()
        while True:
            tok = self.peek()
            if tok not in (("op", "+"), ("op", "-")):
                return node
            self.pos += 1
            node = ("bin", tok[1], node, self.product())

    def product(self) -> Node:
        node = self.unary()
        while True:
            tok = self.peek()
            if tok not in (("op", "*"), ("op", "/"), ("op", "%")):
                return node
            self.pos += 1
            node = ("bin", tok[1], node, self.unary())

    def unary(self) -> Node:
        for op, tag in (("!", "not"), ("-", "neg")):
            count = 0
            while self.accept(op):
                count += 1
            if count:
                if self.peek() in (("op", "!"), ("op", "-")):
                    raise _Unsupported("mixed unary operators")
                if (
                    op == "-"
                    and count == 1
                    and self.peek() == ("int", INT64_MAX + 1)
                    and self.toks[self.pos + 1] not in (("op", "."), ("op", "["))
                ):
                    self.pos += 1
                    return ("lit", INT64_MIN)  # CEL's literal -9223372036854775808
                node = self.member()
                return node if count % 2 == 0 else (tag, node)
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                kind, name = self.take()
                if kind != "ident" or name in _RESERVED:
                    raise _Unsupported("field name")
                if self.accept("("):
                    node = self.method(node, name, self.args())
                else:
                    node = ("sel", node, name)
            elif self.accept("["):
                key = self.expr()
                self.expect("]")
                node = ("idx", node, key)
            else:
                return node

    def args(self) -> list[Node]:
        out: list[Node] = []
        if self.accept(")"):
            return out
        out.append(self.expr())
        while self.accept(","):
            out.append(self.expr())
        self.expect(")")
        return out

    def method(self, target: Node, name: str, args: list[Node]) -> Node:
        if name == "size" and not args:
            return ("size", target)
        if name in ("startsWith", "endsWith", "contains") and len(args) == 1:
            return ("strfn", name, target, args[0])
        raise _Unsupported(f"method {name}")

    def primary(self) -> Node:
        kind, value = self.take()
        if kind in ("int", "float", "str"):
            if kind == "int" and value > INT64_MAX:
                raise _Unsupported("int literal out of range")
            return ("lit", value)
        if kind == "ident":
            if value in _KEYWORDS:
                return ("lit", _KEYWORDS[value])
            if value in _RESERVED:
                raise _Unsupported("keyword")
            if self.accept("("):
                args = self.args()
                if value == "size" and len(args) == 1:
                    return ("size", args[0])
                if value == "has" and len(args) == 1 and args[0][0] == "sel":
                    return ("has", args[0][1], args[0][2])
                raise _Unsupported(f"function {value}")
            if value not in self.variables:
                raise _Unsupported(f"identifier {value}")
            return ("var", value)
        if (kind, value) == ("op", "("):
            node = self.expr()
            self.expect(")")
            return node
        if (kind, value) == ("op", "["):
            items: list[Node] = []
            while not self.accept("]"):
                items.append(self.expr())
                if not self.accept(","):
                    self.expect("]")
                    break
            return ("list", items)
        raise _Unsupported(f"unexpected {value!r}")


# ---------------------------------------------------------------------------------------------
# Run-time semantics of the operators, on plain values


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


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Plain data


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


# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# A group of conditions as one generated Python function
#
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


_MAX_NESTING = 64


def _depth(node: Node, variables: set[str]) -> int:
    """The depth of the tree; adds the variables it reads to `variables`."""
    if node[0] == "var":
        variables.add(node[1])
        return 1
    deepest = 0
    for part in node[1:]:
        if isinstance(part, tuple):
            deepest = max(deepest, _depth(part, variables))
        elif isinstance(part, list):
            for item in part:
                deepest = max(deepest, _depth(item, variables))
    return deepest + 1
