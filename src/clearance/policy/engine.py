"""Evaluate a request against a loaded policy: the hot path, pure and allocation-light.

Rules are indexed by action: exact names in a dict, globs in a second tier. The rules that
apply to one action form a *group* that is built once (on first use) and cached: its
conditions are fused into one CEL program, its redactions collected, and the approval plans
of its approve rules resolved to people and checked for feasibility once per combination.
`evaluate` never raises: anything unexpected becomes a `deny` that says why (fail closed).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..directory import ACTOR_MANAGER
from ..matching import feasible
from .cel import CelEvalError, FusedConditions
from .load import Policy
from .model import (
    DEFAULT_RISK,
    DEFAULT_TIMEOUT_S,
    Decision,
    Effect,
    OnError,
    Request,
    ResolvedPlan,
    ResolvedRequirement,
    ResolvedStage,
    Rule,
)

_GLOB_CHARS = re.compile(r"[*?\[]")
_CACHE_LIMIT = 20_000


_ID_PREFIX = "dec_" + os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_decision_id() -> str:
    """Unique per decision: a random per-process prefix and a counter (no syscall per call)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


@dataclass(frozen=True, slots=True)
class _Group:
    """Everything about the rules that apply to one action name, prepared once."""

    ordered: tuple[tuple[Rule, int], ...]  # every rule, in policy order; index into results or -1
    conditional: tuple[Rule, ...]
    fused: FusedConditions | None
    unconditional: tuple[Rule, ...]
    redact: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _BasePlan:
    """The merged plan of a set of approve rules, before the requester is taken out."""

    plan: ResolvedPlan
    people: frozenset[str]
    infeasible: str | None


class Engine:
    """A policy prepared for evaluation. Build once per loaded policy; share freely."""

    def __init__(self, policy: Policy, *, id_factory: Callable[[], str] = new_decision_id) -> None:
        self.policy = policy
        self._id_factory = id_factory
        self._exact: dict[str, list[Rule]] = {}
        self._globs: list[tuple[re.Pattern[str], Rule]] = []
        self._order = {rule.id: i for i, rule in enumerate(policy.rules)}
        for rule in policy.rules:
            for pattern in rule.actions:
                if _GLOB_CHARS.search(pattern):
                    self._globs.append((re.compile(fnmatch.translate(pattern)), rule))
                else:
                    self._exact.setdefault(pattern, []).append(rule)
        self._groups: dict[str, _Group] = {}
        self._plans: dict[tuple[str, ...], _BasePlan] = {}

    @property
    def version(self) -> str:
        return self.policy.version

    # -- public --------------------------------------------------------------------------------
    def evaluate(self, request: Request, *, decision_id: str | None = None) -> Decision:
        """The decision for `request`. Never raises: an internal error denies, with the reason."""
        did = decision_id or self._id_factory()
        try:
            return self._evaluate(request, did)
        except Exception as exc:
            return Decision(
                effect=Effect.DENY,
                rules=(),
                reasons=(
                    f"internal error while evaluating the policy ({type(exc).__name__}); "
                    "failing closed",
                ),
                policy_version=self.policy.version,
                decision_id=did,
                errors=(repr(exc)[:500],),
            )

    def redactions(self, action: str) -> tuple[str, ...]:
        """Parameter paths to store redacted for this action (from every rule that covers it)."""
        return self._group(action).redact

    def rules_for(self, action: str) -> tuple[Rule, ...]:
        group = self._group(action)
        return tuple(sorted(group.conditional + group.unconditional, key=self._rank))

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, request: Request, did: str) -> Decision:
        group = self._group(request.action)
        results: list[bool | CelEvalError] = []
        if group.fused is not None:
            data: dict[str, Any] = {
                "action": request.action,
                "params": request.params,
                "actor": request.actor,
                "context": request.context,
                "labels": list(request.labels),
                "risk": request.risk if request.risk is not None else DEFAULT_RISK,
            }
            results = group.fused.evaluate(data)
        # One pass in policy order: what matched, what failed, and the strongest effect.
        matched: list[Rule] = []
        failed: list[tuple[Rule, CelEvalError]] = []
        best = -1
        for rule, index in group.ordered:
            if index >= 0:
                result = results[index]
                if result is not True:
                    if result is not False and rule.on_error is OnError.DENY:
                        failed.append((rule, result))
                    continue
            matched.append(rule)
            strength = _STRENGTH[rule.effect]
            if strength > best:
                best = strength

        if not matched and not failed:
            effect = self.policy.default
            return Decision(
                effect=effect,
                rules=(),
                reasons=(f"no rule matched {request.action!r}; the default is {effect}",),
                policy_version=self.policy.version,
                decision_id=did,
                redact=group.redact,
            )

        if failed and best < _DENY:
            best = _DENY
        effect = _EFFECTS[best]
        deciding = [r for r in matched if r.effect is effect]
        rules = [r.id for r in deciding]
        reasons = [r.reason for r in deciding]
        errors: tuple[str, ...] = ()
        if failed and effect is Effect.DENY:
            for rule, error in failed:
                rules.append(rule.id)
                reasons.append(f"{rule.id}: could not be evaluated ({error}); failing closed")
            errors = tuple(f"{rule.id}: {error}" for rule, error in failed)

        approval: ResolvedPlan | None = None
        alert: tuple[str, ...] = ()
        if effect is Effect.APPROVE:
            approval, problem = self._plan_for(tuple(rules), request.requester)
            if problem is not None:
                effect = Effect.DENY
                reasons.append(problem)
        elif effect is Effect.BLOCK:
            alert = self.policy.directory.resolve(ref for r in deciding for ref in r.alert)
        return Decision(
            effect=effect,
            rules=tuple(rules),
            reasons=tuple(reasons),
            policy_version=self.policy.version,
            decision_id=did,
            approval=approval,
            alert=alert,
            redact=group.redact,
            errors=errors,
        )

    def _rank(self, rule: Rule) -> int:
        return self._order[rule.id]

    # -- groups and plans, built once ----------------------------------------------------------
    def _group(self, action: str) -> _Group:
        group = self._groups.get(action)
        if group is None:
            group = self._build_group(action)
            if len(self._groups) >= _CACHE_LIMIT:
                self._groups.clear()
            self._groups[action] = group
        return group

    def _build_group(self, action: str) -> _Group:
        rules: dict[str, Rule] = {r.id: r for r in self._exact.get(action, ())}
        for pattern, rule in self._globs:
            if rule.id not in rules and pattern.match(action):
                rules[rule.id] = rule
        ordered = sorted(rules.values(), key=self._rank)
        conditional = tuple(r for r in ordered if r.when is not None)
        unconditional = tuple(r for r in ordered if r.when is None)
        fused = (
            FusedConditions([self.policy.conditions[r.id] for r in conditional])
            if conditional
            else None
        )
        redact = tuple(dict.fromkeys(p for r in ordered for p in r.redact))
        index = {r.id: i for i, r in enumerate(conditional)}
        pairs = tuple((r, index.get(r.id, -1)) for r in ordered)
        return _Group(pairs, conditional, fused, unconditional, redact)

    def _plan_for(
        self, rule_ids: tuple[str, ...], requester: str | None
    ) -> tuple[ResolvedPlan | None, str | None]:
        base = self._plans.get(rule_ids)
        if base is None:
            base = self._build_plan(rule_ids)
            if len(self._plans) >= _CACHE_LIMIT:
                self._plans.clear()
            self._plans[rule_ids] = base
        if ACTOR_MANAGER in base.people:
            return self._manager_plan(base.plan, requester)
        if requester is None or requester not in base.people:
            return (None, base.infeasible) if base.infeasible else (base.plan, None)
        stages = tuple(
            dataclasses.replace(
                s,
                requirements=tuple(
                    ResolvedRequirement(tuple(p for p in r.approvers if p != requester), r.required)
                    for r in s.requirements
                ),
            )
            for s in base.plan.stages
        )
        plan = ResolvedPlan(stages, base.plan.timeout_s)
        problem = _infeasible(base.plan, requester)
        return (None, problem) if problem else (plan, None)

    def _manager_plan(
        self, plan: ResolvedPlan, requester: str | None
    ) -> tuple[ResolvedPlan | None, str | None]:
        """`plan` with `actor.manager` replaced by the requester's manager (and the requester
        taken out); a stage that needs a manager the directory doesn't name is infeasible."""
        manager = self.policy.directory.manager_of(requester)
        if manager is None:
            who = f"'{requester}'" if requester else "a request without actor.user"
            stage = next(
                s.name for s in plan.stages for r in s.requirements if ACTOR_MANAGER in r.approvers
            )
            return None, (
                f"approval cannot be met: stage '{stage}' needs the requester's manager, and "
                f"{who} has no manager in the directory; denied"
            )

        def swap(approvers: tuple[str, ...]) -> tuple[str, ...]:
            named = (manager if p == ACTOR_MANAGER else p for p in approvers)
            return tuple(p for p in dict.fromkeys(named) if p != requester)

        stages = tuple(
            dataclasses.replace(
                s,
                requirements=tuple(
                    ResolvedRequirement(swap(r.approvers), r.required) for r in s.requirements
                ),
            )
            for s in plan.stages
        )
        personal = ResolvedPlan(stages, plan.timeout_s)
        problem = _infeasible(personal, requester)
        return (None, problem) if problem else (personal, None)

    def _build_plan(self, rule_ids: Sequence[str]) -> _BasePlan:
        directory = self.policy.directory
        by_id = {r.id: r for r in self.policy.rules}
        stages: list[ResolvedStage] = []
        timeouts: list[int] = []
        for rule_id in rule_ids:
            plan = by_id[rule_id].approval
            if plan is None:
                continue
            if plan.timeout_s is not None:
                timeouts.append(plan.timeout_s)
            for stage in plan.stages:
                resolved = ResolvedStage(
                    stage.name,
                    tuple(
                        ResolvedRequirement(
                            directory.resolve(req.approvers, keep_actor_manager=True),
                            req.required,
                        )
                        for req in stage.requirements
                    ),
                    mfa=stage.mfa,
                    require_context=stage.require_context,
                    routing=stage.routing,
                )
                _merge_stage(stages, resolved)
        plan_out = ResolvedPlan(tuple(stages), min(timeouts) if timeouts else DEFAULT_TIMEOUT_S)
        people = frozenset(p for s in stages for r in s.requirements for p in r.approvers)
        return _BasePlan(plan_out, people, _infeasible(plan_out, None))


_STRENGTH = {effect: effect.strength for effect in Effect}
_EFFECTS = {effect.strength: effect for effect in Effect}
_DENY = Effect.DENY.strength


def _merge_stage(stages: list[ResolvedStage], stage: ResolvedStage) -> None:
    """Add `stage` unless an identical one is there. Stages that differ only in routing
    (reminders, escalation, pick) are the same stage: the first routing set is kept."""
    bare = dataclasses.replace(stage, routing=None)
    for i, existing in enumerate(stages):
        if dataclasses.replace(existing, routing=None) == bare:
            if existing.routing is None and stage.routing is not None:
                stages[i] = stage
            return
    stages.append(stage)


def _infeasible(plan: ResolvedPlan, requester: str | None) -> str | None:
    """Why `plan` can never be approved by distinct people, or None when it can."""
    why = feasible(plan, requester)
    return f"approval cannot be met: {why}; denied" if why else None
