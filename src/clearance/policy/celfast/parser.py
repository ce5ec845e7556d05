"""CEL's grammar by precedence climbing: text the library already checked → a tuple tree."""

from __future__ import annotations

from typing import Any

from .base import INT64_MAX, INT64_MIN, _Unsupported
from .lexer import Token, _tokens

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
