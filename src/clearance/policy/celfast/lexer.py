"""CEL's tokens, as its lexer sees them (longest match), for the fast path's parser."""

from __future__ import annotations

import math
import re
from typing import Any

from .base import INT64_MAX, _Unsupported

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
