"""Canonical forms that hashes and comparisons rely on: JSON, parameter hashes, redaction.

Pure functions, no I/O. Two requests with the same action, parameters and actor produce the
same binding hash whatever the order of their keys, so an approval releases exactly the call
that was approved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no insignificant white space, and non-ASCII kept as is."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def params_hash(params: Mapping[str, Any]) -> str:
    """`sha256:` + the hash of the canonical parameters."""
    return "sha256:" + sha256_hex(canonical_json(params))


def binding_hash(action: str, params: Mapping[str, Any], actor: Mapping[str, Any]) -> str:
    """The hash that binds an approval to one exact call: action, parameters and actor."""
    return "sha256:" + sha256_hex(
        canonical_json({"action": action, "params": params, "actor": actor})
    )


def redact(params: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A copy of `params` with each `params.a.b` path replaced by a marker.

    Paths that do not exist are ignored; the original mapping is never modified.
    """
    out: dict[str, Any] = _copy(params)
    for path in paths:
        parts = path.split(".")
        if parts and parts[0] == "params":
            parts = parts[1:]
        if not parts:
            continue
        node: Any = out
        for key in parts[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = REDACTED
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
