"""Sliding-window counters of one subject's requests for one action. Pure; no I/O, no clock.

An `Activity` is what the store keeps per (actor, action) and per (agent, action): three
bucketed windows and a bounded ring of recent amounts. Reading a window is a binary search
and a sum over the buckets in it; an update touches one bucket and drops the expired ones;
neither ever looks at older history.

Windows and their buckets:

    window   bucket     buckets kept
    1m       1 s        60
    1h       1 min      60
    24h      15 min     96   (each also sums the amounts)

A window of length W with buckets of g seconds counts the requests in its last W/g buckets,
the current one included: a request made at t is counted at `now` while
`floor(now/g) - floor(t/g) < W/g`, i.e. for between W − g and W after it was made (exactly
W/g whole buckets). A request in a bucket after `now`'s (clocks of two instances disagreeing)
counts as current.

Bucket numbers count from 2020-01-01T00:00:00Z (`EPOCH`), so that they fit 32 bits (seconds
until 2088). Each window is a pair of parallel `array`s — bucket numbers ascending and their
counts (plus, for 24 h, the amount sums); the amount ring lists amounts oldest first, as
float32 (7 significant digits are plenty for a z-score, and the row stays small).

Encoding (`encode`/`decode`, the `state` column of `risk_state`): little-endian binary,
`struct` header `<BHHHH` (format version 1; number of 1 s, 1 min and 15 min buckets; number of
amounts), then int32 arrays (1 s buckets, counts; 1 min buckets, counts; 15 min buckets,
counts), float64 (15 min amount sums), float32 (the amount ring). Encoding and decoding copy
memory (`array.tobytes` / `frombytes`): much cheaper than JSON for the same numbers.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

__all__ = ["EPOCH", "WINDOWS", "Activity", "WindowTotals"]

#: Epoch seconds of 2020-01-01T00:00:00Z: bucket numbers count from here.
EPOCH: Final = 1_577_836_800
#: (name, window seconds, bucket seconds)
WINDOWS: Final = (("1m", 60, 1), ("1h", 3600, 60), ("24h", 86400, 900))
_S_N: Final = 60  # buckets per window
_M_N: Final = 60
_Q_N: Final = 96
_M_G: Final = 60  # bucket seconds (the 1 s buckets need no division)
_Q_G: Final = 900

_VERSION: Final = 1
_HEADER: Final = struct.Struct("<BHHHH")
_SWAP: Final = sys.byteorder != "little"
if array("i").itemsize != 4 or array("f").itemsize != 4 or array("d").itemsize != 8:
    raise ImportError("clearance.risk.activity needs 4-byte C ints and floats")  # pragma: no cover


class WindowTotals(NamedTuple):
    """Requests in each window (and the amounts in 24 h), as of some `now`."""

    per_minute: int = 0
    per_hour: int = 0
    per_day: int = 0
    amount_24h: float = 0.0


def _ints() -> array[int]:
    return array("i")


@dataclass(slots=True)
class Activity:
    """Recent requests of one subject for one action; see the module docstring.

    Treat an Activity that came from the store (or its cache) as read-only: `copy()` it
    before `add`.
    """

    sb: array[int] = field(default_factory=_ints)  # 1 s buckets, ascending
    sc: array[int] = field(default_factory=_ints)  # their counts
    mb: array[int] = field(default_factory=_ints)  # 1 min buckets
    mc: array[int] = field(default_factory=_ints)
    qb: array[int] = field(default_factory=_ints)  # 15 min buckets
    qc: array[int] = field(default_factory=_ints)
    qa: array[float] = field(default_factory=lambda: array("d"))  # their amount sums
    amounts: array[float] = field(default_factory=lambda: array("f"))  # oldest first

    # -- reading -------------------------------------------------------------------------------
    def totals(self, now: float) -> WindowTotals:
        """Requests counted in each window at `now` (a new request at `now` not included)."""
        n = int(now) - EPOCH
        s = bisect_left(self.sb, n - _S_N + 1)
        m = bisect_left(self.mb, n // _M_G - _M_N + 1)
        q = bisect_left(self.qb, n // _Q_G - _Q_N + 1)
        return WindowTotals(sum(self.sc[s:]), sum(self.mc[m:]), sum(self.qc[q:]), sum(self.qa[q:]))

    # -- updating ------------------------------------------------------------------------------
    def add(self, now: float, amount: float | None, *, keep_amounts: int) -> None:
        """Count one request at `now`; `amount` (when given) joins the 24 h sum and the ring."""
        n = int(now) - EPOCH
        _bump(self.sb, self.sc, None, n, _S_N, 0.0)
        _bump(self.mb, self.mc, None, n // _M_G, _M_N, 0.0)
        _bump(self.qb, self.qc, self.qa, n // _Q_G, _Q_N, amount or 0.0)
        if amount is not None and keep_amounts > 0:
            ring = self.amounts
            ring.append(amount)
            if len(ring) > keep_amounts:
                del ring[: len(ring) - keep_amounts]

    def copy(self) -> Activity:
        return Activity(
            self.sb[:],
            self.sc[:],
            self.mb[:],
            self.mc[:],
            self.qb[:],
            self.qc[:],
            self.qa[:],
            self.amounts[:],
        )

    # -- encoding ------------------------------------------------------------------------------
    def encode(self) -> bytes:
        parts: tuple[array[Any], ...] = (
            self.sb,
            self.sc,
            self.mb,
            self.mc,
            self.qb,
            self.qc,
            self.qa,
            self.amounts,
        )
        if _SWAP:  # pragma: no cover - big-endian hosts
            parts = tuple(_swapped(p) for p in parts)
        header = _HEADER.pack(_VERSION, len(self.sb), len(self.mb), len(self.qb), len(self.amounts))
        return header + b"".join([p.tobytes() for p in parts])

    @classmethod
    def decode(cls, data: bytes) -> Activity:
        version, ns, nm, nq, na = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise ValueError(f"unknown activity format {version}")
        sizes = (4 * ns, 4 * ns, 4 * nm, 4 * nm, 4 * nq, 4 * nq, 8 * nq, 4 * na)
        if len(data) != _HEADER.size + sum(sizes):
            raise ValueError("truncated activity state")
        out = cls()
        view = memoryview(data)
        at = _HEADER.size
        parts: tuple[array[Any], ...] = (
            out.sb,
            out.sc,
            out.mb,
            out.mc,
            out.qb,
            out.qc,
            out.qa,
            out.amounts,
        )
        for part, size in zip(parts, sizes, strict=True):
            if size:
                part.frombytes(view[at : at + size])
                at += size
                if _SWAP:  # pragma: no cover - big-endian hosts
                    part.byteswap()
        return out


def _bump(
    buckets: array[int],
    counts: array[int],
    sums: array[float] | None,
    bucket: int,
    keep: int,
    amount: float,
) -> None:
    """Add one request (and its amount) to `bucket`, dropping buckets that left the window."""
    if buckets and buckets[-1] == bucket:  # the common case: same bucket as the last request
        counts[-1] += 1
        if sums is not None:
            sums[-1] += amount
        return
    cut = bisect_right(buckets, bucket - keep)
    if cut:
        del buckets[:cut], counts[:cut]
        if sums is not None:
            del sums[:cut]
    if buckets and bucket < buckets[-1]:
        if bucket <= buckets[-1] - keep:
            return  # older than the window of the newest request: counts nowhere
        i = bisect_left(buckets, bucket)
        if buckets[i] == bucket:
            counts[i] += 1
            if sums is not None:
                sums[i] += amount
            return
        buckets.insert(i, bucket)
        counts.insert(i, 1)
        if sums is not None:
            sums.insert(i, amount)
        return
    buckets.append(bucket)
    counts.append(1)
    if sums is not None:
        sums.append(amount)


def _swapped(part: array[Any]) -> array[Any]:  # pragma: no cover
    copy = part[:]
    copy.byteswap()
    return copy
