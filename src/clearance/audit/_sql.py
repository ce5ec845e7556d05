"""Hand-written SQL for the audit hot paths (append, verify), per dialect.

The writer and `verify_store` talk to the DB-API cursor directly: SQLAlchemy's statement
machinery costs more than the SQLite work itself for a one-row commit. Table and column names
come from `clearance.store.schema`, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from clearance.audit.chain import canonical_ts
from clearance.store.schema import audit_entries, audit_heads

__all__ = ["ENCODING_ORDER", "ENTRY_COLUMNS", "AuditSQL"]

#: Column order of entry rows (inserts and raw reads).
ENTRY_COLUMNS: tuple[str, ...] = (
    "chain_id",
    "seq",
    "ts",
    "kind",
    "actor",
    "approver",
    "channel",
    "action",
    "params_hash",
    "effect",
    "rule_ids",
    "policy_version",
    "approval_id",
    "data",
    "prev_hash",
    "hash",
)
if set(ENTRY_COLUMNS) != set(audit_entries.c.keys()):  # pragma: no cover - schema drift
    raise RuntimeError("audit_entries columns changed: update clearance.audit._sql")

#: The fields in the order the hash encoding lists them (after the version), then the hash.
ENCODING_ORDER: tuple[str, ...] = (
    "prev_hash",
    "chain_id",
    "seq",
    "ts",
    "kind",
    "actor",
    "approver",
    "channel",
    "action",
    "params_hash",
    "effect",
    "rule_ids",
    "policy_version",
    "approval_id",
    "data",
    "hash",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AuditSQL:
    """The statements and time conversions for one dialect ("sqlite" or "postgresql")."""

    # S608 below: every interpolated name is a constant from the schema, never input.
    def __init__(self, dialect: str) -> None:
        self.is_sqlite = dialect == "sqlite"
        p = "?" if self.is_sqlite else "%s"
        e, h = audit_entries.name, audit_heads.name
        cols = ", ".join(ENTRY_COLUMNS)
        self.insert_entries = f"INSERT INTO {e} ({cols}) VALUES ({', '.join([p] * 16)})"  # noqa: S608
        lock = "" if self.is_sqlite else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE locks
        self.select_head = f"SELECT seq, hash FROM {h} WHERE chain_id = {p}{lock}"  # noqa: S608
        self.insert_head = (
            f"INSERT INTO {h} (chain_id, seq, hash, updated_at) VALUES ({p}, {p}, {p}, {p}) "  # noqa: S608
            "ON CONFLICT (chain_id) DO NOTHING"
        )
        self.update_head = (
            f"UPDATE {h} SET seq = {p}, hash = {p}, updated_at = {p} WHERE chain_id = {p}"  # noqa: S608
        )
        self.last_entry = (
            f"SELECT seq, hash FROM {e} WHERE chain_id = {p} ORDER BY seq DESC LIMIT 1"  # noqa: S608
        )
        # For verification: each row holds the 15 parts of the entry's encoding after the
        # version (`ts` turned into canonical text by the database), then the stored hash.
        if self.is_sqlite:  # stored as "YYYY-MM-DD HH:MM:SS.ffffff"
            ts = "substr(ts, 1, 10) || 'T' || substr(ts, 12) || '+00:00'"
        else:
            ts = "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'"
        parts = ", ".join(f"{ts} AS ts" if c == "ts" else c for c in ENCODING_ORDER if c != "hash")
        parts_select = f"SELECT {parts}, hash FROM {e}"  # noqa: S608
        self.select_parts = f"{parts_select} ORDER BY chain_id, seq"
        self.select_chain_parts = f"{parts_select} WHERE chain_id = {p} ORDER BY seq"

    def ts_param(self, ts: datetime, canonical: str) -> object:
        """The value to bind for a time column (`canonical` is `canonical_ts(ts)`).

        SQLite: the naive-UTC text `UTCDateTime` stores; PostgreSQL: the aware datetime.
        """
        if self.is_sqlite:
            return canonical[:10] + " " + canonical[11:26]
        return ts

    def epoch_param(self) -> object:
        return self.ts_param(_EPOCH, canonical_ts(_EPOCH))
