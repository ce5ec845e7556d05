"""Risk signals: facts about a request computed from the store's own history and the caller's
context, exposed to policies as `risk.*`, shown to approvers, recorded in the audit entry.

One check, in the gateway (`Gateway.check`)::

    assessment = risk.kept_assessment(request, now)         # from memory: most checks
    if assessment is None:                                   # one indexed read
        assessment = risk.assessment(conn, request, now, count=False)
    request = request.with_risk(assessment.risk)
    decision = engine.evaluate(request)
    entry.data["risk"]["f"] = risk.journal_entry(assessment)  # the facts, for the fold
    committed = await writer.append(entry)                   # nothing else is written
    risk.note(committed.seq, assessment, decision.effect, now)
    # … about once a second, one writer unit for every check not yet stored (`journal`):
    risk.folded(await writer.run(lambda tx: risk.fold(tx, now)))

The rows are written behind the check: see `journal` for why, and for what each process sees
of the others. The engine keeps the rows it read or folded in a bounded cache
(`store.RowCache`), counting this process's unfolded checks on top, so a subject seen
recently costs no read at all. `record` (write-through: count one check into the rows in the
caller's transaction, with a compare-and-set) remains for callers that want the rows current
at commit; the gateway does not use it.

The modules: `settings` (the `risk:` section), `facts` (what a request says: actor, agent,
country, device, payee, amount), `activity` (sliding-window counters), `signals` (pure: facts
+ history + now → the `risk` map and its reasons), `store` (the reads, the compare-and-set
upsert), `journal` (written behind: notes, folds), `tables` (`risk_state`, `risk_folds`).

**How a payee's bank-details change is recorded.** Every check is recorded, whatever its
decision. When the checked action is one of `patterns.payee_bank_change.change_actions`
(default `procurement.change_supplier_terms`) and `params.changes` (`changes_param`) contains
`bank_details` (`changed_item`), the payee named by the first of `change_payee_params`
present (default `params.supplier_id`, then `params.payee_id`) gets its bank-change time set
to now — at the request, not at its execution: an attempted change of a supplier's bank
account is itself what makes the next payment to it suspicious. A later request for one of
`payment_actions` (default: any action) whose `payee_params` (default `params.payee_id`)
names that payee less than `days` (default 30) later carries the `payee_bank_change` pattern.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from . import store
from .facts import Facts, RequestLike, facts_of, ident
from .journal import FoldResult, Journal, facts_json
from .settings import (
    DEFAULT_CACHE_ROWS,
    DEFAULT_WEIGHTS,
    RiskSettings,
    RiskSettingsError,
    load_risk_settings,
)
from .signals import History, compute, neutral_risk

__all__ = [
    "DEFAULT_CACHE_ROWS",
    "DEFAULT_WEIGHTS",
    "Assessment",
    "Facts",
    "FoldResult",
    "History",
    "Recorded",
    "RiskEngine",
    "RiskSettings",
    "RiskSettingsError",
    "load_risk_settings",
    "neutral_risk",
]


@dataclass(frozen=True, slots=True)
class Recorded:
    """The rows one `record` wrote (for `RiskEngine.committed`)."""

    rows: Mapping[tuple[str, str, str], tuple[int, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Assessment:
    """The `risk` map of one request, with the facts and history it was computed from."""

    risk: dict[str, Any]
    facts: Facts | None = None
    history: History | None = None


class RiskEngine:
    """Computes and records the risk signals for a policy's `risk:` settings.

    `time_zones` maps people (and agents) to their own IANA time zone, e.g. from the
    directory; the `risk.time_zones` setting overrides it. `cache_rows` (default: the
    `risk.cache_rows` setting) bounds this engine's in-memory copy of the rows it read or
    wrote (0: read the store on every check); use one engine per database.
    """

    def __init__(
        self,
        settings: RiskSettings | Mapping[str, Any] | None = None,
        *,
        time_zones: Mapping[str, str] | None = None,
        cache_rows: int | None = None,
        chain_id: str = "main",
    ) -> None:
        self.settings = load_risk_settings(settings)
        size = self.settings.cache_rows if cache_rows is None else cache_rows
        self.cache = store.RowCache(size)
        self.journal = Journal(self.settings, self.cache, chain_id)
        zones = dict(time_zones or {})
        for name, zone in zones.items():
            try:
                self.settings.zone_for(zone)
            except Exception:
                raise RiskSettingsError(f"unknown time zone {zone!r} for {name!r}") from None
        zones.update(self.settings.time_zones)
        # Keyed as the signals compare people (`facts.ident`: NFKC), so that a name written
        # with a combining accent in the directory finds the person a request names.
        self.time_zones: dict[str, str] = {ident(k) or k: v for k, v in zones.items()}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def adopt(self, other: RiskEngine) -> None:
        """Take over `other`'s unfolded checks and, when the two keep as many rows, the rows it
        keeps (a policy reload replaced it): the reloaded server does not start cold. `other`
        is left with no rows, so that a fold or a check it still finishes cannot change the
        rows this engine now keeps (a fold of it that commits meanwhile makes this engine's
        next fold find the marks moved, and drop what it kept)."""
        self.journal.adopt(other.journal)
        if other.cache.size == self.cache.size:
            self.cache = self.journal.cache = other.cache
            other.cache = other.journal.cache = store.RowCache(0)

    def facts(self, request: RequestLike) -> Facts:
        return facts_of(request, self.settings)

    # -- the two halves of a check -------------------------------------------------------------
    def assessment(
        self,
        conn: Connection,
        request: RequestLike,
        now: datetime,
        *,
        count: bool = True,
        counted: bool = False,
    ) -> Assessment:
        """Read the request's history (one statement, none when its rows are kept in memory)
        and compute its `risk` map. This process's checks not yet folded are counted in.
        `count`: in the row cache's figures (not after `kept_assessment` counted them).
        `counted`: the request was checked before (an approved call being released), so the
        velocity windows and the 24 h amount already count it."""
        found = self._assess(conn, request, now, count, counted)
        if found is None:  # pragma: no cover - with a connection every row can be read
            raise RuntimeError("the risk history could not be read")
        return found

    def kept_assessment(
        self, request: RequestLike, now: datetime, *, counted: bool = False
    ) -> Assessment | None:
        """The assessment from the rows kept in memory, without a connection; None when a row
        must be read (then `assessment(conn, …, count=False)`). Most checks need no read, and
        on PostgreSQL even an unused connection costs a pool checkout."""
        return self._assess(None, request, now, True, counted)

    def _assess(
        self,
        conn: Connection | None,
        request: RequestLike,
        now: datetime,
        count: bool,
        counted: bool = False,
    ) -> Assessment | None:
        if not self.settings.enabled:
            return Assessment(neutral_risk())
        facts = facts_of(request, self.settings)
        history = self.journal.history(conn, facts, count=count)
        if history is None:
            return None
        risk = compute(facts, history, now, self.settings, self.time_zones, counted=counted)
        return Assessment(risk, facts, history)

    def assess(self, conn: Connection, request: RequestLike, now: datetime) -> dict[str, Any]:
        """The `risk` map for CEL: every signal, `score` and `reasons`."""
        return self.assessment(conn, request, now).risk

    def signals(self, request: RequestLike, history: History, now: datetime) -> dict[str, Any]:
        """The `risk` map from a given history (pure: no store)."""
        return compute(
            facts_of(request, self.settings), history, now, self.settings, self.time_zones
        )

    def record(
        self,
        conn: Connection,
        request: RequestLike,
        effect: str,
        now: datetime,
        *,
        assessment: Assessment | None = None,
    ) -> Recorded:
        """Count this check, decided `effect`, into the store (inside its write transaction).

        With the `assessment` made for this request, its snapshot saves a read; rows changed
        since are detected and read again. Pass the result to `committed` once the
        transaction has committed (skipping that is safe: it only costs reads later).
        """
        if not self.settings.enabled:
            return Recorded()
        if assessment is not None and assessment.facts is not None:
            facts = assessment.facts
            history = assessment.history
        else:
            facts, history = facts_of(request, self.settings), None
        written = store.record(conn, facts, str(effect), now, self.settings, history, self.cache)
        return Recorded(written)

    # -- written behind the check (see `journal`) ---------------------------------------------
    def journal_entry(self, assessment: Assessment | None) -> list[Any] | None:
        """What the check's audit entry keeps for the fold (`data.risk.f`), or None."""
        if assessment is None or assessment.facts is None:
            return None
        return facts_json(assessment.facts)

    def note(self, seq: int, assessment: Assessment | None, effect: str, now: datetime) -> None:
        """The check assessed as `assessment` committed as audit entry `seq` of this process's
        chain, decided `effect`: count it in this process's view until a fold stores it."""
        if assessment is None or assessment.facts is None or not self.settings.enabled:
            return
        keys = assessment.history.keys if assessment.history is not None else None
        self.journal.note(seq, assessment.facts, str(effect), now.timestamp(), keys)

    def warm(self, conn: Connection, now: datetime) -> int:
        """Keep in memory the most recently updated rows, up to the cache's size (at start:
        see `Journal.warm`); how many."""
        if not self.settings.enabled:
            return 0
        return self.journal.warm(conn, now)

    def fold_due(self) -> bool:
        return self.journal.fold_due()

    def fold(self, tx: Any, now: datetime) -> FoldResult:
        """Count every chain's unfolded checks into the store (inside a writer unit); pass the
        result to `folded` once the unit has committed."""
        return self.journal.fold(tx, now)

    def folded(self, result: FoldResult) -> None:
        self.journal.folded(result)

    def committed(self, recorded: Recorded | None) -> None:
        """The transaction `recorded` was written in has committed: remember its rows."""
        if recorded is not None and recorded.rows:
            self.cache.put_many(recorded.rows)

    def prune(self, conn: Connection, now: datetime, *, batch: int = 2000) -> int:
        """Delete expired rows (housekeeping, off the hot path, e.g. daily); how many.

        On an idle connection it works in short transactions of `batch` rows. The deleted
        rows leave the cache too (an expired row still holds, say, old amounts); the rest of
        the cache stays warm.
        """
        deleted: list[store.Key] = []
        try:
            return store.prune(conn, now, batch=batch, deleted=deleted)
        finally:
            self.cache.forget(deleted)
