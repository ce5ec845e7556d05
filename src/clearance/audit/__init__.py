"""The tamper-evident audit trail: entries, the hash chain, the writer, export and verify.

The pure parts (`entry`, `chain`) import nothing of the store; the writer and export (which
need SQLAlchemy) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clearance.audit.chain import GENESIS, Head, Problem, VerifyReport, entry_hash, verify
from clearance.audit.entry import KINDS, AuditDraft, AuditEntry, Kind

if TYPE_CHECKING:
    from clearance.audit.export import export_csv, export_jsonl, iter_entries, verify_store
    from clearance.audit.writer import AuditWriter, Checkpoint, WriteTx

__all__ = [
    "GENESIS",
    "KINDS",
    "AuditDraft",
    "AuditEntry",
    "AuditWriter",
    "Checkpoint",
    "Head",
    "Kind",
    "Problem",
    "VerifyReport",
    "WriteTx",
    "entry_hash",
    "export_csv",
    "export_jsonl",
    "iter_entries",
    "verify",
    "verify_store",
]

_LAZY = {
    "AuditWriter": "clearance.audit.writer",
    "Checkpoint": "clearance.audit.writer",
    "WriteTx": "clearance.audit.writer",
    "export_csv": "clearance.audit.export",
    "export_jsonl": "clearance.audit.export",
    "iter_entries": "clearance.audit.export",
    "verify_store": "clearance.audit.export",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clearance.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
