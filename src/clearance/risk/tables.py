"""The risk signals' table, on the store's one `metadata` (migration 0003_risk creates it).

Importing this module registers the table; `clearance.store.schema` imports it at its end so
that `metadata` is complete for migrations and the schema test.

`risk_state` holds small per-subject summaries, one row each, never one row per check:

    subject   kind            item      state (compact binary, see clearance.risk.store)
    actor     actor_action    action    sliding-window counters, 24 h amounts, recent amounts
    agent     agent_action    action    sliding-window counters
    actor     seen_geo        country   last seen (epoch seconds)
    actor     seen_device     device    last seen
    actor     seen_payee      payee     last seen
    payee     payee_bank      ""        when its bank details were last changed
    agent     agent_denials   ""        times of its most recent denied requests

The primary key starts with the subject, so one person's rows share a page or two (SQLite
stores this table in its primary key's B-tree: `WITHOUT ROWID`) and a check touches few pages.

`version` counts updates of the row (compare-and-set between concurrent checks);
`expires_at` is when the row stops mattering, for `clearance.risk.store.prune` (which walks
the primary key: an index on it would cost every check a second B-tree write).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table, text

from clearance.store.schema import UTCDateTime, metadata

__all__ = ["risk_folds", "risk_state"]

risk_state = Table(
    "risk_state",
    metadata,
    Column("subject", String(255), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("item", String(255), primary_key=True),
    Column("version", BigInteger(), nullable=False),
    Column("state", LargeBinary(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree per write, not two
)
#: Every payee whose bank details changed, read at once (migration 0010): a process keeps them
#: all, so a payment to any other payee needs no read to know there was no change. Partial:
#: only those rows are in it, and no other row's write touches it.
Index(
    "ix_risk_state_payee_bank",
    risk_state.c.subject,
    sqlite_where=text("kind = 'payee_bank'"),
    postgresql_where=text("kind = 'payee_bank'"),
)

#: How far each audit chain's checks are counted into `risk_state` (migration 0009): the checks
#: of chain `chain_id` with `seq` up to this one are in it, the later ones are not yet (see
#: `clearance.risk.journal`: the check's own audit entry is the journal the rows are folded
#: from). A chain without a row is counted from its start.
risk_folds = Table(
    "risk_folds",
    metadata,
    Column("chain_id", String(64), primary_key=True),
    Column("seq", BigInteger(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    sqlite_with_rowid=False,
)
