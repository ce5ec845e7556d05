"""The gateway: policy + store + audit + approvals, the one object behind the SDK and the API.

`Gateway.check` is the hot path. It evaluates the policy, and either appends the check's
audit entry (allow, deny, block) or creates the approval together with that entry (approve) —
returning only once they are committed, so no action is ever allowed unaudited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import IntegrityError

from . import delegation, denials, grants
from . import override as override_mod
from .approvals import records, workflow
from .approvals.records import StoredApproval
from .approvals.service import ApprovalError, ApprovalService, Clock
from .audit.entry import AuditDraft, Kind
from .audit.writer import AuditWriter, WriteTx
from .canonical import binding_hash, params_hash, redact
from .policy import Decision, Effect, Engine, Policy, PolicyError, Request, load_policy
from .policy.model import Controls
from .store.database import Database, open_database
from .store.errors import StoreUnavailable
from .store.reads import read

if TYPE_CHECKING:  # the risk package loads only with a `risk:` section (`risk_engine`)
    from .risk import Assessment, RiskEngine

log = structlog.get_logger("clearance.gateway")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.clearance/clearance.db"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_approval_id() -> str:
    return "apr_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A decision and, when it is `approve`, the approval it created (or found again)."""

    decision: Decision
    approval: StoredApproval | None = None
    # How controls decided it: {"grant_id": …} or {"remembered_denial": approval id}.
    controls: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.decision.to_json()
        if self.controls:
            out.update(self.controls)
        if self.approval is not None:
            a = self.approval.approval
            out["approval_id"] = a.id
            out["state"] = a.state.value
            out["expires_at"] = a.expires_at.isoformat()
            # The plan as routed: the people `pick` paged (the rest of the group as `reserve`),
            # not the whole group the policy allows; and who stands in for whom.
            out["approval"] = a.plan.to_json()
            if a.delegations:
                out["delegations"] = [list(d) for d in a.delegations]
        return out


class Gateway:
    """Everything that decides, records and waits. One per process."""

    def __init__(
        self,
        policy: Policy,
        db: Database,
        writer: AuditWriter,
        *,
        clock: Clock = utcnow,
        config_paths: Sequence[str | os.PathLike[str]] = (),
        new_id: Callable[[], str] = new_approval_id,
    ) -> None:
        self.engine = Engine(policy)
        self.risk = risk_engine(policy, writer.chain_id)
        self.db = db
        self.writer = writer
        self.clock = clock
        self.config_paths = tuple(str(p) for p in config_paths)
        self.approvals = ApprovalService(db, writer, clock=clock)
        self._new_id = new_id
        self.on_check: list[Callable[[CheckResult], None]] = []
        # Inside a blocked check's transaction: queue alerts to the people the rule names.
        self.on_alert: list[
            Callable[[WriteTx, tuple[str, ...], dict[str, Any], datetime], None]
        ] = []
        # Standing grants, remembered denials and overrides (clearance.grants, .denials,
        # .override): looked up only when the policy turns them on.
        self._controls = _ControlSwitches.of(policy)
        self._folding: asyncio.Future[None] | None = None
        self.approvals.in_transaction.append(
            denials.hook(lambda: self._controls.remember_s is not None)
        )

    @property
    def policy(self) -> Policy:
        return self.engine.policy

    # -- opening and closing -------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        config: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        database_url: str | None = None,
        chain_id: str | None = None,
        clock: Clock = utcnow,
        existing: bool = False,
    ) -> Gateway:
        """Load the policy, open (and migrate) the database, start the audit writer.

        `existing`: the database must already hold Clearance's tables (`DatabaseNotFound`
        otherwise, and nothing is created): for commands that look at what a gateway stored."""
        paths = [config] if isinstance(config, str | os.PathLike) else list(config)
        policy = load_policy(paths)
        url = database_url or database_url_from(policy)
        db = open_database(url, create_dirs=not existing)
        if existing:
            try:
                db.check_exists()
            except BaseException:
                db.dispose()
                raise
        db.migrate()
        writer = AuditWriter(db, chain_id or os.environ.get("CLEARANCE_CHAIN_ID", "main"))
        return cls(policy, db, writer, clock=clock, config_paths=paths)

    async def aclose(self) -> None:
        folding = self._folding
        running = asyncio.get_running_loop()
        if folding is not None and not folding.done() and folding.get_loop() is running:
            await asyncio.wait([folding])  # its own errors are logged, not raised here
        if self.risk is not None and self.risk.journal.pending:
            try:  # what a later fold would otherwise read back from the audit entries
                await self.fold_risk()
            except Exception as exc:
                log.warning("risk_fold_failed", error=str(exc))
        await self.writer.aclose()
        await self.db.aclose()

    async def prune_risk(self) -> int | None:
        """Delete the risk rows that no longer matter (housekeeping: the signals already
        ignore them); how many, or None when the policy has no `risk:` section. Runs off the
        event loop, on an idle connection, in short transactions (`clearance.risk.store`)."""
        risk = self.risk
        if risk is None:
            return None
        await self.fold_risk()  # prune what is current, and no fold writes a pruned row back
        now = self.clock()

        def prune() -> int:
            with self.db.connect() as conn:
                # SQLite: take the write lock at BEGIN, waiting for it (busy timeout); a read
                # transaction cannot become a write once the audit writer has committed.
                conn.execution_options(sqlite_begin="IMMEDIATE")
                return int(risk.prune(conn, now))

        return await asyncio.to_thread(prune)

    # -- the hot path --------------------------------------------------------------------------
    async def check(
        self,
        request: Request,
        *,
        idempotency_key: str | None = None,
        agent: str | None = None,
        channel: str = "api",
    ) -> CheckResult:
        """Evaluate `request`; audit it; create the approval when the policy says approve."""
        agent = agent or request.actor.get("agent")
        # The hash binding an approval to this exact call: only an idempotency key and an
        # approve decision (its controls, its approval) use it; an allow, deny or block does
        # not pay for it (a canonical JSON encoding and a SHA-256 of the call, each check).
        bind = (
            binding_hash(request.action, request.params, request.actor) if idempotency_key else ""
        )
        if idempotency_key:
            existing = await self._by_idempotency_key(idempotency_key, bind)
            if existing is not None:
                return existing
        now = self.clock()
        risk = self.risk
        assessment: Any = None
        journal: list[Any] | None = None
        if risk is not None:
            assessment = await self._assess_risk(risk, request, now)
            request = request.with_risk(assessment.risk)
            journal = risk.journal_entry(assessment)
        decision = self.engine.evaluate(request)
        if not bind and decision.effect is Effect.APPROVE:
            bind = binding_hash(request.action, request.params, request.actor)
        shown = redact(request.params, decision.redact) if decision.redact else request.params
        phash = params_hash(shown)
        entry = AuditDraft(
            kind=Kind.CHECK,
            ts=now,
            actor=request.actor.get("user") or agent,
            channel=channel,
            action=request.action,
            params_hash=phash,
            effect=decision.effect.value,
            rule_ids=decision.rules,
            policy_version=decision.policy_version,
            data=_check_data(decision, request, shown, agent, idempotency_key, journal),
        )
        seqs: list[int] = []  # the check's entry, once numbered: the risk journal's place
        offer: grants.GrantOffer | None = None
        controls: dict[str, Any] | None = None
        switches = self._controls
        if switches.any and decision.effect is Effect.APPROVE and decision.approval is not None:
            # Never reached for allow, deny or block: those decide before any control.
            offer = grants.offer_for(self.policy, decision, request) if switches.grants else None
            found = await read(
                self.db,
                lambda c: _lookup_controls(c, switches, offer, bind, now, request.requester),
            )
            if isinstance(found, denials.RememberedDenial):
                decision = denials.as_decision(decision, found, switches.remember_s or 0)
                controls = {"remembered_denial": found.approval_id}
            elif isinstance(found, grants.Grant) and _grantor_still_approves(found, decision):
                decision = dataclasses.replace(
                    decision,
                    effect=Effect.ALLOW,
                    approval=None,
                    reasons=(
                        *decision.reasons,
                        f"allowed by grant {found.id} (approved always by {found.grantor} "
                        f"until {found.expires_at.isoformat()})",
                    ),
                )
                controls = {"grant_id": found.id}
            elif isinstance(found, str):
                stored_override = await self.approvals.get(found)
                released = await self.writer.append(
                    dataclasses.replace(
                        entry,
                        approval_id=found,
                        data={**entry.data, "released_by_override": found},
                    )
                )
                self._noted(released.seq, assessment, decision.effect.value, now)
                return CheckResult(
                    Decision.from_json(stored_override.decision),
                    stored_override,
                    {"released_by_override": True},
                )
            if controls is not None:
                entry = dataclasses.replace(
                    entry,
                    effect=decision.effect.value,
                    data={**entry.data, **controls, "reasons": list(decision.reasons)},
                )

        if decision.effect is Effect.BLOCK and decision.alert and self.on_alert:
            alert = {
                "action": request.action,
                "reasons": [*decision.reasons, *_risk_reasons(request)],
                "requester": request.actor.get("user"),
                "agent": agent,
                "decision_id": decision.decision_id,
            }

            seqs.append(await self._audit_alerting(entry, decision.alert, alert, now))
            result = CheckResult(decision)
        elif decision.effect is not Effect.APPROVE or decision.approval is None:
            # (allowed by a standing grant, or denied as remembered, lands here too)
            # The hot path: one entry, group-committed (with the risk journal in it).
            seqs.append((await self.writer.append(entry)).seq)
            result = CheckResult(decision, controls=controls)
        else:
            approval = workflow.open_approval(
                approval_id=self._new_id(),
                action=request.action,
                params=shown,
                binding_hash=bind,
                actor=request.actor,
                plan=decision.approval,
                now=now,
            )
            stored = StoredApproval(
                approval=approval,
                agent=agent,
                context=dict(request.context),
                labels=tuple(request.labels),
                decision=_with_offer(decision.to_json(), offer),
                rules=decision.rules,
                reasons=decision.reasons + _risk_reasons(request),
                policy_version=decision.policy_version,
                params_hash=phash,
                idempotency_key=idempotency_key,
            )

            def create(tx: WriteTx) -> StoredApproval:
                routed = delegation.route(tx.conn, stored, now)  # pick, delegates in force
                records.insert_approval(tx.conn, routed)
                seqs.append(tx.audit(_with_approval(entry, approval.id)).seq)
                tx.audit(
                    AuditDraft(
                        kind=Kind.APPROVAL_CREATED,
                        ts=now,
                        actor=entry.actor,
                        channel=channel,
                        action=request.action,
                        params_hash=phash,
                        effect="pending",
                        rule_ids=decision.rules,
                        policy_version=decision.policy_version,
                        approval_id=approval.id,
                        data={
                            "plan": decision.approval.to_json() if decision.approval else None,
                            "expires_at": approval.expires_at.isoformat(),
                            "binding_hash": bind,
                            **delegation.audit_data(routed.approval),
                        },
                    )
                )
                for hook in self.approvals.in_transaction:
                    hook(tx, routed, ("approval.created",), now)
                return routed

            try:
                stored = await self.writer.run(create)
            except Exception as exc:
                # Two checks raced with one idempotency key: the loser returns the winner's.
                if idempotency_key and _is_unique_violation(exc):
                    again = await self._by_idempotency_key(idempotency_key, bind)
                    if again is not None:
                        return again
                raise
            result = CheckResult(decision, stored)
        if seqs:
            self._noted(seqs[0], assessment, decision.effect.value, now)
        for listener in self.on_check:
            listener(result)
        return result

    def _noted(self, seq: int, assessment: Any, effect: str, now: datetime) -> None:
        """The check's entry committed as `seq`: count it into the risk view, and fold the
        unfolded checks into the store when it is time (in the background)."""
        risk = self.risk
        if risk is None or assessment is None:
            return
        risk.note(seq, assessment, effect, now)
        if risk.fold_due() and (self._folding is None or self._folding.done()):
            self._folding = asyncio.ensure_future(self._fold_in_background())

    async def _fold_in_background(self) -> None:
        try:
            await self.fold_risk()
        except Exception as exc:  # the store may be down: the next check tries again
            log.warning("risk_fold_failed", error=str(exc))
        finally:
            self._folding = None

    async def warm_risk(self) -> int | None:
        """Keep in memory the risk rows most recently updated (up to the cache's size), off
        the event loop: a restarted server starts with what a running one would hold. How
        many rows, or None without a `risk:` section."""
        risk = self.risk
        if risk is None:
            return None
        now = self.clock()

        def warm() -> int:
            with self.db.connect() as conn:
                return int(risk.warm(conn, now))

        return await asyncio.to_thread(warm)

    async def _assess_risk(
        self, risk: RiskEngine, request: Request, now: datetime, *, counted: bool = False
    ) -> Assessment:
        """The risk signals of `request`, from the store's own history, before evaluation: from
        the rows kept in memory when they are all there, else one indexed read. `counted`: the
        request was checked before (a release), so the windows already count it."""
        if risk.journal.never_folded:
            # A crashed predecessor's last checks, before this process's first: until they are
            # counted the signals would read low, so a failed fold fails the call closed (the
            # next one tries again).
            try:
                await self.fold_risk()
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.warning("risk_fold_failed", error=str(exc))
                raise StoreUnavailable(
                    "the risk history could not be brought up to date; nothing was allowed: retry"
                ) from exc
        assessment = risk.kept_assessment(request, now, counted=counted)
        if assessment is None:
            assessment = await read(
                self.db,
                lambda c: risk.assessment(c, request, now, count=False, counted=counted),
            )
        return assessment

    async def _audit_alerting(
        self, entry: AuditDraft, people: tuple[str, ...], alert: dict[str, Any], now: datetime
    ) -> int:
        """Audit a blocked call and alert `people` about it (`on_alert`), in one transaction:
        the alert is queued only if the entry is written. The entry's seq."""

        def unit(tx: WriteTx) -> int:
            seq = tx.audit(entry).seq
            for hook in self.on_alert:
                hook(tx, people, alert, now)
            return seq

        return await self.writer.run(unit)

    async def fold_risk(self) -> int | None:
        """Count the checks not yet in the risk rows into them (`clearance.risk.journal`):
        every chain's, this process's and any other's (a crashed one's included). How many
        checks were folded, or None when the policy has no `risk:` section."""
        total = 0
        while True:
            risk = self.risk
            if risk is None:
                return None
            result = await self.writer.run(functools.partial(risk.fold, now=self.clock()))
            risk.folded(result)
            total += int(result.entries)
            if not result.more:
                return total

    async def _by_idempotency_key(self, key: str, bind: str) -> CheckResult | None:
        found = await read(self.db, lambda c: records.find_id_by_idempotency_key(c, key))
        if found is None:
            return None
        stored = await self.approvals.get(found)
        if stored.approval.binding_hash != bind:
            raise ApprovalError(
                "idempotency_conflict",
                "this idempotency key was used for a different request (action, params or "
                "actor differ); use a new key for a new request",
            )
        return CheckResult(Decision.from_json(stored.decision), stored)

    # -- policy reload -------------------------------------------------------------------------
    async def release(
        self, approval_id: str, action: str, params: dict[str, Any], actor: dict[str, str]
    ) -> StoredApproval:
        """The agent claims an approved call (exactly the call approved, only once), under the
        policy loaded *now* and the risk signals of now (the call counted once, by its check):
        a block or deny rule added since the approval, or one that matches now (a payee whose
        bank details changed since, say), wins, and the refusal is audited (the approval
        stays unused)."""
        stored = await self.approvals.get(approval_id)
        request = Request(
            action=action,
            params=params,
            actor=actor,
            context=dict(stored.context),
            labels=tuple(stored.labels),
        )
        now = self.clock()
        risk = self.risk
        assessment: Assessment | None = None
        if risk is not None:
            # The risk signals of this moment (the call itself counted once, by its check): a
            # payee whose bank details changed since the approval, say, is caught here.
            assessment = await self._assess_risk(risk, request, now, counted=True)
            request = request.with_risk(assessment.risk)
        now_says = self.engine.evaluate(request)
        if now_says.effect in (Effect.BLOCK, Effect.DENY):
            why = "; ".join(now_says.reasons) or f"the policy says {now_says.effect.value}"
            data: dict[str, Any] = {"reasons": list(now_says.reasons)}
            if request.risk is not None:
                data["risk"] = _risk_summary(request.risk)
            entry = AuditDraft(
                kind="approval.release_refused",
                ts=now,
                actor=actor.get("user") or actor.get("agent"),
                action=action,
                params_hash=params_hash(stored.approval.params),
                effect=now_says.effect.value,
                rule_ids=now_says.rules,
                policy_version=now_says.policy_version,
                approval_id=approval_id,
                data=data,
            )
            if now_says.effect is Effect.BLOCK and now_says.alert and self.on_alert:
                # As a blocked check alerts.
                alert = {
                    "action": action,
                    "reasons": [
                        *now_says.reasons,
                        *_risk_reasons(request),
                        f"the call was approved (request {approval_id}) and refused when the "
                        "agent claimed it",
                    ],
                    "requester": actor.get("user"),
                    "agent": actor.get("agent"),
                    "decision_id": now_says.decision_id,
                }
                await self._audit_alerting(entry, now_says.alert, alert, now)
            else:
                await self.writer.append(entry)
            raise ApprovalError(
                "policy_refuses",
                f"the policy loaded now {now_says.effect.value}s this call, so its approval "
                f"cannot be used: {why}",
            )
        seen = self._seen_unit(assessment, now)
        released = await self.approvals.release(
            approval_id,
            binding_hash(action, params, actor),
            then=seen.write if seen is not None else None,
        )
        if seen is not None and seen.seq is not None:
            from .risk.store import SEEN

            self._noted(seen.seq, seen.assessment, SEEN, seen.now)
        return released

    def _seen_unit(self, assessment: Assessment | None, now: datetime) -> _Seen | None:
        """For a release: the `risk.seen` entry that makes the call's new country, device and
        payee known (a check makes them known only when allowed, so that a request still
        waiting, or refused, never vouches for them). Written in the release's own
        transaction, so the two commit together; folded like a check. None when the risk
        signals are off or nothing of the call is new."""
        if self.risk is None or assessment is None:
            return None
        journal = self.risk.journal_entry(assessment)
        said = assessment.risk
        if journal is None or not (
            said.get("new_geo") or said.get("new_device") or said.get("new_payee")
        ):
            return None
        return _Seen(assessment, journal, now)

    async def report_check_result(
        self,
        *,
        decision_id: str,
        request: Request,
        state: str,
        result: str | None = None,
        channel: str = "api",
    ) -> dict[str, Any]:
        """Record what happened when an action the policy allowed (no approval) ran.

        The entry names the check's decision id, action and params hash (redacted as the
        check's entry was), so the audit trail shows what actually ran next to what was
        allowed. Approved actions report through `approvals.report_result` instead.
        """
        if state not in ("succeeded", "failed"):
            raise ApprovalError("invalid_state", "state must be succeeded or failed")
        if not decision_id.startswith("dec_"):
            raise ApprovalError("invalid_decision", "decision_id is the check's dec_… id")
        now = self.clock()
        redacting = self.engine.evaluate(request).redact
        shown = redact(request.params, redacting) if redacting else request.params
        agent = request.actor.get("agent")
        entry = await self.writer.append(
            AuditDraft(
                kind=Kind.EXECUTION_RESULT,
                ts=now,
                actor=request.actor.get("user") or agent,
                channel=channel,
                action=request.action,
                params_hash=params_hash(shown),
                data={
                    "decision_id": decision_id,
                    "agent": agent,
                    "state": state,
                    "result": result[: workflow.RESULT_MAX_CHARS] if result is not None else None,
                },
            )
        )
        return {"decision_id": decision_id, "state": state, "recorded_at": now, "seq": entry.seq}

    async def reload(self, by: str | None = None) -> tuple[bool, str]:
        """Load the policy files again. A bad file is rejected and audited; the old one stays."""
        now = self.clock()
        old = self.engine.version
        try:
            policy = load_policy(self.config_paths)
        except PolicyError as exc:
            message = str(exc)
            await self.writer.append(
                AuditDraft(
                    kind=Kind.POLICY_RELOAD_FAILED,
                    ts=now,
                    actor=by,
                    policy_version=old,
                    data={"problems": [str(p) for p in exc.problems][:50]},
                )
            )
            return False, message
        self.engine = Engine(policy)
        old_risk, self.risk = self.risk, risk_engine(policy, self.writer.chain_id)
        if self.risk is not None and old_risk is not None:
            self.risk.adopt(old_risk)  # its unfolded checks still count, its rows stay kept
        self._controls = _ControlSwitches.of(policy)
        await self.writer.append(
            AuditDraft(
                kind=Kind.POLICY_RELOAD,
                ts=now,
                actor=by,
                policy_version=policy.version,
                data={"previous": old, "rules": len(policy.rules)},
            )
        )
        return True, policy.version


def risk_engine(policy: Policy, chain_id: str = "main") -> Any:
    """The risk signals engine when the policy has a `risk:` section, else None (the risk
    package, and its per-check read and write, are not loaded at all). `chain_id`: the audit
    chain this process writes, which its checks are noted against."""
    if "risk" not in policy.settings:
        return None
    from .risk import RiskEngine

    zones = {p.id: p.timezone for p in policy.directory.people.values() if p.timezone}
    return RiskEngine(policy.settings["risk"], time_zones=zones, chain_id=chain_id)


def database_url_from(policy: Policy) -> str:
    server = policy.settings.get("server") or {}
    url = os.environ.get("CLEARANCE_DATABASE_URL") or server.get("database_url")
    return str(url) if url else DEFAULT_DATABASE_URL


def _risk_summary(risk: dict[str, Any]) -> dict[str, Any]:
    """What an audit entry keeps of the risk map: the score, the reasons, the patterns."""
    return {k: risk.get(k) for k in ("score", "reasons", "patterns")}


def _check_data(
    decision: Decision,
    request: Request,
    shown: dict[str, Any],
    agent: str | None,
    idempotency_key: str | None,
    journal: list[Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "reasons": list(decision.reasons),
        "params": shown,
    }
    if request.actor:
        data["actor"] = dict(request.actor)
    if agent:
        data["agent"] = agent
    if request.labels:
        data["labels"] = list(request.labels)
    if decision.alert:
        data["alert"] = list(decision.alert)
    if request.risk is not None:
        data["risk"] = _risk_summary(request.risk)
        if journal is not None:  # the facts the risk signals count: folded from here
            data["risk"]["f"] = journal
    if idempotency_key:
        data["idempotency_key"] = idempotency_key
    return data


def _risk_reasons(request: Request) -> tuple[str, ...]:
    """What the risk signals say, for the people who decide and the people alerted (nothing
    when all is quiet): the score and every reason, even those of signals weighted 0."""
    risk = request.risk or {}
    if not risk.get("score") and not risk.get("reasons"):
        return ()
    return (f"Risk score {risk['score']}/100: " + "; ".join(map(str, risk.get("reasons", []))),)


@dataclass(slots=True)
class _Seen:
    """The `risk.seen` entry of a release, written in its transaction (`write`, an
    `approvals.release` `then`) at the time the release assessed (`now`, also the time it is
    noted at, as the fold reads it from the entry); `seq` once written."""

    assessment: Assessment
    journal: list[Any]
    now: datetime
    seq: int | None = None

    def write(self, tx: WriteTx, saved: StoredApproval, _now: datetime) -> None:
        call = saved.approval
        entry = tx.audit(
            AuditDraft(
                kind=Kind.RISK_SEEN,
                ts=self.now,
                actor=call.actor.get("user") or call.actor.get("agent"),
                action=call.action,
                params_hash=params_hash(call.params),
                approval_id=call.id,
                data={"risk": {"f": self.journal}},
            )
        )
        self.seq = entry.seq


@dataclass(frozen=True, slots=True)
class _ControlSwitches:
    """Which controls the policy turns on; all off keeps the check path as it was."""

    grants: bool = False
    remember_s: int | None = None
    overrides: bool = False

    @property
    def any(self) -> bool:
        return self.grants or self.remember_s is not None or self.overrides

    @classmethod
    def of(cls, policy: Policy) -> _ControlSwitches:
        controls = policy.settings.get("controls")
        remember = controls.remember_denials_s if isinstance(controls, Controls) else None
        override = isinstance(controls, Controls) and controls.override is not None
        return cls(grants.has_grant_rules(policy), remember, override)


def _lookup_controls(
    conn: Any,
    switches: _ControlSwitches,
    offer: grants.GrantOffer | None,
    bind: str,
    now: datetime,
    requester: str | None,
) -> denials.RememberedDenial | grants.Grant | str | None:
    """For a request held for approval, in one read: an override made ahead of this exact call
    (its approval id), a remembered denial of it, or a live grant covering it."""
    if switches.overrides:
        ready = override_mod.find_ready(conn, bind, now)
        if ready is not None:
            return ready
    if switches.remember_s is not None:
        earlier = denials.recall(conn, bind, now, switches.remember_s)
        if earlier is not None:
            return earlier
    if offer is not None:
        return grants.find_live(conn, offer, now, requester)
    return None


def _grantor_still_approves(grant: grants.Grant, decision: Decision) -> bool:
    """A standing grant stands only while its grantor could still approve this request
    (still in the directory and among its approvers): a grantor who left the group, or the
    directory, no longer vouches for anything."""
    plan = decision.approval
    if plan is None:
        return False
    eligible = {p for s in plan.stages for r in s.requirements for p in (*r.approvers, *r.reserve)}
    return grant.grantor in eligible


def _with_offer(decision: dict[str, Any], offer: grants.GrantOffer | None) -> dict[str, Any]:
    if offer is not None:
        decision["grant_offer"] = offer.to_json()
    return decision


def _with_approval(draft: AuditDraft, approval_id: str) -> AuditDraft:
    return dataclasses.replace(draft, approval_id=approval_id)


def _is_unique_violation(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError)


__all__ = ["CheckResult", "Gateway", "database_url_from", "utcnow"]
