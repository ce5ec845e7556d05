"""Reading the audit trail back: streaming iteration, JSON Lines and CSV export, and
`verify_store`, which checks every chain in the database against its head and checkpoints.

Everything streams in chunks (server-side cursors on PostgreSQL), so a trail of millions of
entries never sits in memory. Time filters: `since` is inclusive, `until` exclusive.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Select, select

from clearance.audit._sql import ENTRY_COLUMNS, AuditSQL
from clearance.audit.chain import (
    Anchor,
    Head,
    Problem,
    VerifyReport,
    canonical_ts,
    checkpoint_hash,
    verify_rows,
)
from clearance.audit.entry import AuditEntry
from clearance.canonical import canonical_json
from clearance.store.database import Database
from clearance.store.errors import translate_errors
from clearance.store.schema import audit_checkpoints, audit_entries, audit_heads

__all__ = [
    "CSV_COLUMNS",
    "entry_as_dict",
    "export_csv",
    "export_jsonl",
    "export_overrides",
    "iter_entries",
    "verify_store",
]

CSV_COLUMNS = ENTRY_COLUMNS  # one column per stored field, in table order


def _select(since: datetime | None, until: datetime | None, chain_id: str | None) -> Select[Any]:
    stmt = select(audit_entries)
    if since is not None:
        stmt = stmt.where(audit_entries.c.ts >= since)
    if until is not None:
        stmt = stmt.where(audit_entries.c.ts < until)
    if chain_id is not None:
        stmt = stmt.where(audit_entries.c.chain_id == chain_id)
    return stmt.order_by(audit_entries.c.chain_id, audit_entries.c.seq)


def iter_entries(
    db: Database,
    since: datetime | None = None,
    until: datetime | None = None,
    chain_id: str | None = None,
    *,
    chunk_size: int = 2000,
) -> Iterator[AuditEntry]:
    """Entries in (chain_id, seq) order, fetched `chunk_size` rows at a time.

    The connection stays open until the iterator is exhausted or closed.
    """
    with translate_errors(), db.sync_engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk_size).execute(
            _select(since, until, chain_id)
        )
        for r in result:
            yield _entry(r)


def entry_as_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as plain JSON-ready data (`ts` in canonical ISO 8601)."""
    return {
        "chain_id": entry.chain_id,
        "seq": entry.seq,
        "ts": canonical_ts(entry.ts),
        "kind": entry.kind,
        "actor": entry.actor,
        "approver": entry.approver,
        "channel": entry.channel,
        "action": entry.action,
        "params_hash": entry.params_hash,
        "effect": entry.effect,
        "rule_ids": list(entry.rule_ids),
        "policy_version": entry.policy_version,
        "approval_id": entry.approval_id,
        "data": dict(entry.data),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def export_jsonl(
    db: Database,
    out: TextIO,
    since: datetime | None = None,
    until: datetime | None = None,
    chain_id: str | None = None,
) -> int:
    """Write one canonical JSON object per entry and line to `out`; returns the count."""
    count = 0
    for entry in iter_entries(db, since, until, chain_id):
        out.write(canonical_json(entry_as_dict(entry)))
        out.write("\n")
        count += 1
    return count


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_csv(
    db: Database,
    out: TextIO,
    since: datetime | None = None,
    until: datetime | None = None,
    chain_id: str | None = None,
    *,
    guard_formulas: bool = True,
) -> int:
    """Write a header and one CSV row per entry to `out` (open it with `newline=""`).

    `rule_ids` and `data` are canonical JSON text. With `guard_formulas` (the default), a
    text cell that a spreadsheet would run as a formula (starting with = + - @ tab or CR;
    agents choose some of these values) gets a leading apostrophe; use JSON Lines when the
    exact values are needed. Returns the number of entries.
    """
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for entry in iter_entries(db, since, until, chain_id):
        row = entry_as_dict(entry)
        row["rule_ids"] = canonical_json(row["rule_ids"])
        row["data"] = canonical_json(row["data"])
        cells: list[Any] = []
        for name in CSV_COLUMNS:
            value = row[name]
            if guard_formulas and isinstance(value, str) and value.startswith(_FORMULA_START):
                value = "'" + value
            cells.append("" if value is None else value)
        writer.writerow(cells)
        count += 1
    return count


def verify_store(
    db: Database, *, chain_id: str | None = None, chunk_size: int = 10_000
) -> VerifyReport:
    """Verify every chain (or one) in the database, with heads and checkpoints, in one
    consistent snapshot. Reads the stored text itself, so any change to a stored entry —
    even one that re-spells its JSON equivalently — is reported."""
    sql = AuditSQL(db.dialect)
    with translate_errors(), db.sync_engine.connect() as conn:
        if not db.is_sqlite:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            head_stmt = select(audit_heads.c.chain_id, audit_heads.c.seq, audit_heads.c.hash)
            if chain_id is not None:
                head_stmt = head_stmt.where(audit_heads.c.chain_id == chain_id)
            heads = {str(r[0]): Head(int(r[1]), str(r[2])) for r in conn.execute(head_stmt)}
            anchors, problems = _checkpoint_anchors(conn.execute(select(audit_checkpoints)))
            if chain_id is not None:
                anchors = [a for a in anchors if a.chain_id == chain_id]
            dbapi: Any = conn.connection.dbapi_connection
            if dbapi is None:  # pragma: no cover - a checked-out connection has one
                raise RuntimeError("connection is closed")
            report = _verify_stored(db, dbapi, sql, chain_id, heads, anchors, chunk_size)
    if problems:
        report = dataclasses.replace(report, problems=(*problems, *report.problems))
    return report


def _verify_stored(
    db: Database,
    dbapi: Any,
    sql: AuditSQL,
    chain_id: str | None,
    heads: dict[str, Head],
    anchors: list[Anchor],
    chunk_size: int,
) -> VerifyReport:
    """Stream every entry's encoding parts and verify them. Only the continuity checks and
    one JSON encoding + SHA-256 per entry run in Python; the timestamp is formatted by the
    database, and no JSON is parsed."""
    if db.is_sqlite:
        cursor = dbapi.cursor()
        cursor.arraysize = chunk_size
    else:  # a server-side cursor: rows arrive chunk_size at a time
        cursor = dbapi.cursor(name="clearance_verify_store")
        cursor.itersize = chunk_size
    try:
        if chain_id is None:
            cursor.execute(sql.select_parts)
        else:
            cursor.execute(sql.select_chain_parts, (chain_id,))
        return verify_rows(cursor, heads, anchors)
    finally:
        cursor.close()


def _checkpoint_anchors(rows: Any) -> tuple[list[Anchor], list[Problem]]:
    anchors: list[Anchor] = []
    problems: list[Problem] = []
    for r in rows:
        source = f"checkpoint {r.id} ({canonical_ts(r.ts)})"
        try:
            heads = {
                str(cid): Head(int(h["seq"]), str(h["hash"])) for cid, h in r.heads_json.items()
            }
            intact = checkpoint_hash(r.ts, heads) == r.hash
        except (AttributeError, KeyError, TypeError, ValueError):
            heads, intact = {}, False
        if not intact:
            problems.append(
                Problem("", None, f"{source} was altered: its hash does not match its contents")
            )
            continue
        anchors.extend(Anchor(cid, h.seq, h.hash, source) for cid, h in heads.items())
    return anchors, problems


# -- the overrides section ------------------------------------------------------------------------

OVERRIDE_KINDS = (
    "override.used",
    "override.refused",
    "override.reviewed",
    "override.review_refused",
)


def export_overrides(
    db: Database,
    out: TextIO,
    since: datetime | None = None,
    until: datetime | None = None,
    chain_id: str | None = None,
) -> int:
    """The overrides section of the audit export, as JSON lines: one line per emergency
    override (`"section": "override"`: who, why, the request, its review state, and the audit
    entries that record it and its review), then one per refused override or review attempt
    (`"section": "override_refused"`); `chain_id` limits the entries to one chain. Returns the
    number of overrides."""
    from clearance.override import list_records

    with translate_errors(), db.sync_engine.connect() as conn:
        records = list_records(conn, since=since, until=until, limit=None)
        stmt = _select(since, until, chain_id).where(audit_entries.c.kind.in_(OVERRIDE_KINDS))
        entries = list(conn.execute(stmt))
    by_override: dict[str, list[dict[str, Any]]] = {}
    refused: list[dict[str, Any]] = []
    for row in entries:
        entry = entry_as_dict(_entry(row))
        override_id = entry["data"].get("override_id")
        if entry["kind"] in ("override.used", "override.reviewed") and override_id:
            by_override.setdefault(str(override_id), []).append(entry)
        else:
            refused.append(entry)
    for record in records:
        line = {
            "section": "override",
            "override": record.to_json(),
            "entries": by_override.get(record.id, []),
        }
        out.write(canonical_json(line) + "\n")
    for entry in refused:
        out.write(canonical_json({"section": "override_refused", "entry": entry}) + "\n")
    return len(records)


def _entry(r: Any) -> AuditEntry:
    """An `audit_entries` row as an AuditEntry."""
    return AuditEntry(
        kind=r.kind,
        ts=r.ts,
        actor=r.actor,
        approver=r.approver,
        channel=r.channel,
        action=r.action,
        params_hash=r.params_hash,
        effect=r.effect,
        rule_ids=tuple(r.rule_ids),
        policy_version=r.policy_version,
        approval_id=r.approval_id,
        data=r.data,
        chain_id=r.chain_id,
        seq=r.seq,
        prev_hash=r.prev_hash,
        hash=r.hash,
    )
