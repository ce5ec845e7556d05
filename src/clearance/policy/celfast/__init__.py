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

from .base import CelFastError
from .condition import FastCondition, compile_fast
from .group import compile_group
from .plain import plain_inputs

__all__ = ["CelFastError", "FastCondition", "compile_fast", "compile_group", "plain_inputs"]
