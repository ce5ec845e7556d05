"""YAML policy files → a checked, compiled `Policy`, or every problem with file:line:column.

Loading runs in named stages, like OPA's compiler: parse (YAML), shape (pydantic), merge
(several files into one), resolve (people, groups, approval plans) and conditions (CEL).
Each stage collects *all* its problems; nothing is half-loaded: either a whole `Policy` comes
back, or `PolicyError` with the list.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..canonical import canonical_json
from ..directory import ACTOR_MANAGER, GROUP_PREFIX, PERSON_PREFIX, Directory, Person
from .cel import CelCompileError, Condition, compile_condition
from .model import (
    DEFAULT_TIMEOUT_S,
    AllowAlways,
    ApprovalPlan,
    ContextRequirement,
    Controls,
    Effect,
    Location,
    OnError,
    OnTimeout,
    OverrideSettings,
    Pick,
    Requirement,
    Routing,
    Rule,
    Stage,
)
from .schema import (
    CONTEXT_KEYS,
    ApprovalIn,
    PersonIn,
    PolicyFileIn,
    RuleIn,
    error_text,
    parse_duration,
    parse_rate,
)
from .yamlpos import Document, YamlSyntaxError, parse

_M = TypeVar("_M", bound=BaseModel)
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: where, what, and what to do about it."""

    code: str
    message: str
    location: Location
    rule_id: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        rule = f" [rule {self.rule_id}]" if self.rule_id else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{self.location}:{rule} {self.message}{hint}"


class PolicyError(Exception):
    """The policy did not load. `problems` lists every error found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Policy:
    """A loaded policy: everything the engine needs, already checked and compiled."""

    rules: tuple[Rule, ...]
    conditions: dict[str, Condition]
    directory: Directory
    default: Effect
    version: str
    files: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


def load_policy(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Policy:
    """Load and merge one or more policy files."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise PolicyError([Problem("no_files", "no policy file given", Location("-", 1, 1))])
    sources: list[tuple[str, str]] = []
    problems: list[Problem] = []
    for path in paths:
        name = str(path)
        try:
            sources.append((name, Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            problems.append(
                Problem(
                    "file_not_found",
                    "file not found",
                    Location(name, 1, 1),
                    hint="create one with `clearance init`, or pass --config FILE",
                )
            )
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem("file_unreadable", f"cannot read: {exc}", Location(name, 1, 1)))
    if problems:
        raise PolicyError(problems)
    return load_policy_texts(sources)


def load_policy_text(text: str, file: str = "<policy>") -> Policy:
    return load_policy_texts([(file, text)])


def load_policy_texts(sources: Sequence[tuple[str, str]]) -> Policy:
    """Load policy files given as (name, text) pairs."""
    problems: list[Problem] = []
    files: list[_File] = []
    for name, text in sources:
        parsed = _parse_file(name, text, problems)
        if parsed is not None:
            files.append(parsed)
    return _Linker(files, problems).link()


@dataclass
class _File:
    """One file that parsed: its document, its top level, and the entries that passed."""

    doc: Document
    top: PolicyFileIn
    people: list[tuple[int, PersonIn]]
    rules: list[tuple[int, RuleIn]]


# ---------------------------------------------------------------------------------------------
# Stage 1 and 2: parse and check the shape of each file


def _parse_file(name: str, text: str, problems: list[Problem]) -> _File | None:
    try:
        doc = parse(text, name)
    except YamlSyntaxError as exc:
        problems.append(Problem("yaml", exc.message, exc.location))
        return None
    if not isinstance(doc.data, dict):
        problems.append(
            Problem("shape", "a policy file is a mapping with keys like policies:", doc.where(()))
        )
        return None
    env_problems = _substitute_env(doc.data, (), doc)
    if env_problems:
        problems.extend(env_problems)
        return None
    try:
        top = PolicyFileIn.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_schema_problem(doc, err, ()) for err in exc.errors())
        return None
    people = _each(doc, PersonIn, top.directory.people, ("directory", "people"), problems)
    rules = _each(doc, RuleIn, top.policies.rules, ("policies", "rules"), problems)
    return _File(doc, top, people, rules)


def _each(
    doc: Document,
    model: type[_M],
    items: list[dict[str, Any]],
    base: tuple[str, ...],
    problems: list[Problem],
) -> list[tuple[int, _M]]:
    """Check every entry of a list on its own, so that one bad entry hides no other problem."""
    out: list[tuple[int, _M]] = []
    for i, item in enumerate(items):
        try:
            out.append((i, model.model_validate(item)))
        except ValidationError as exc:
            problems.extend(_schema_problem(doc, err, (*base, i)) for err in exc.errors())
    return out


def _substitute_env(node: Any, path: tuple[str | int, ...], doc: Document) -> list[Problem]:
    """Replace `${VAR}` in string values from the environment; a missing variable is an error."""
    out: list[Problem] = []
    items: Iterable[tuple[Any, Any]]
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return out
    for key, value in items:
        child = (*path, key if isinstance(key, int) else str(key))
        if isinstance(value, str) and "${" in value:
            missing = [m for m in _ENV_VAR.findall(value) if m not in os.environ]
            if missing:
                out.append(
                    Problem(
                        "env",
                        f"environment variable {missing[0]} is not set",
                        doc.where(child),
                        hint=f"export {missing[0]}=… before starting, or remove the reference",
                    )
                )
                continue
            node[key] = _ENV_VAR.sub(lambda m: os.environ[m[1]], value)
        else:
            out.extend(_substitute_env(value, child, doc))
    return out


def _schema_problem(doc: Document, err: Any, prefix: tuple[str | int, ...]) -> Problem:
    loc = (*prefix, *err["loc"])
    kind = err["type"]
    rule_id = _rule_id_at(doc, loc)
    if kind == "extra_forbidden":
        parent = loc[:-1]
        known = _known_keys(parent)
        hint = None
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            hint = f"did you mean '{close[0]}'?"
        elif known:
            hint = "known keys: " + ", ".join(known)
        return Problem("unknown_key", f"unknown key '{loc[-1]}'", doc.where_key(loc), rule_id, hint)
    if kind == "literal_error" and loc and loc[-1] == "effect":
        return Problem(
            "unknown_effect",
            f"unknown effect {doc_value(doc, loc)!r}",
            doc.where(loc),
            rule_id,
            "an effect is one of allow, deny, approve, block",
        )
    if kind == "missing":
        return Problem("missing_key", f"'{loc[-1]}' is required here", doc.where(loc[:-1]), rule_id)
    where = ".".join(str(p) for p in loc)
    return Problem("invalid", f"{where}: {error_text(err)}", doc.where(loc), rule_id)


def doc_value(doc: Document, loc: tuple[Any, ...]) -> Any:
    node: Any = doc.data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _rule_id_at(doc: Document, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 3 and loc[0] == "policies" and loc[1] == "rules" and isinstance(loc[2], int):
        rule = doc_value(doc, loc[:3])
        if isinstance(rule, dict) and isinstance(rule.get("id"), str):
            return str(rule["id"])
    return None


_ROUTING_KEYS = ["remind_after", "escalate_after", "escalate_to", "on_timeout", "pick"]
_KEYS: dict[str, list[str]] = {
    "": ["version", "directory", "policies", "server", "channels", "risk", "controls"],
    "directory": ["people", "groups"],
    "person": ["id", "name", "email", "groups", "roles", "channels", "manager", "timezone"],
    "policies": ["default", "rules"],
    "rule": [
        "id",
        "description",
        "actions",
        "when",
        "effect",
        "approval",
        "alert",
        "on_error",
        "redact",
        "mfa",
        "require_context",
        "allow_always",
    ],
    "approval": ["stages", "approvers", "required", "timeout", *_ROUTING_KEYS],
    "stage": ["name", "approvers", "required", "all_of", "mfa", "require_context", *_ROUTING_KEYS],
    "requirement": ["approvers", "required"],
    "allow_always": ["max_ttl", "scope"],
    "controls": ["override", "remember_denials"],
    "override": ["role", "alert", "review_by", "rate_limit"],
}


def _known_keys(parent: tuple[Any, ...]) -> list[str]:
    names = [p for p in parent if isinstance(p, str)]
    if not names:
        return _KEYS[""]
    last = names[-1]
    return {
        "directory": _KEYS["directory"],
        "people": _KEYS["person"],
        "policies": _KEYS["policies"],
        "rules": _KEYS["rule"],
        "approval": _KEYS["approval"],
        "stages": _KEYS["stage"],
        "all_of": _KEYS["requirement"],
        "allow_always": _KEYS["allow_always"],
        "controls": _KEYS["controls"],
        "override": _KEYS["override"],
    }.get(last, [])


# ---------------------------------------------------------------------------------------------
# Stages 3 to 5: merge the files, resolve references, compile conditions


class _Linker:
    def __init__(self, files: list[_File], problems: list[Problem]) -> None:
        self.files = files
        self.problems = problems

    def link(self) -> Policy:
        directory = self._directory()
        default = self._default()
        rules: list[Rule] = []
        conditions: dict[str, Condition] = {}
        seen: dict[str, Location] = {}
        for file in self.files:
            doc = file.doc
            for i, raw in file.rules:
                path: tuple[str | int, ...] = ("policies", "rules", i)
                loc = doc.where(path)
                if raw.id in seen:
                    self._add(
                        "duplicate_rule",
                        f"duplicate rule id '{raw.id}'",
                        doc.where((*path, "id")),
                        raw.id,
                        f"first defined at {seen[raw.id]}",
                    )
                    continue
                seen[raw.id] = loc
                rule = self._rule(doc, path, raw, directory)
                cond = self._condition(doc, path, raw) if raw.when is not None else None
                if rule is None or (raw.when is not None and cond is None):
                    continue
                if cond is not None:
                    conditions[rule.id] = cond
                rules.append(rule)
        if self.problems:
            order = {file.doc.file: i for i, file in enumerate(self.files)}
            self.problems.sort(
                key=lambda p: (order.get(p.location.file, -1), p.location.line, p.location.column)
            )
            raise PolicyError(self.problems)
        settings: dict[str, Any] = {}
        for file in self.files:
            if file.top.server is not None:
                settings.setdefault("server", {}).update(file.top.server)
            if file.top.channels is not None:
                settings.setdefault("channels", {}).update(file.top.channels)
            if file.top.risk is not None:
                self._check_risk(file)
                settings.setdefault("risk", {}).update(file.top.risk)
        controls = self._controls(directory)
        if controls is not None:
            settings["controls"] = controls
        if self.problems:
            raise PolicyError(self.problems)
        return Policy(
            rules=tuple(rules),
            conditions=conditions,
            directory=directory,
            default=default,
            version=self._version(),
            files=tuple(file.doc.file for file in self.files),
            settings=settings,
        )

    def _add(
        self,
        code: str,
        message: str,
        loc: Location,
        rule_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.problems.append(Problem(code, message, loc, rule_id, hint))

    def _version(self) -> str:
        digest = hashlib.sha256()
        for file in self.files:
            body = file.top.model_dump(mode="json", exclude={"server", "channels"})
            digest.update(canonical_json(body).encode())
        return "sha256:" + digest.hexdigest()

    def _check_risk(self, file: _File) -> None:
        """The `risk:` section, checked by the risk package (loaded only when there is one)."""
        from ..risk import RiskSettingsError, load_risk_settings

        try:
            load_risk_settings(file.top.risk)
        except RiskSettingsError as exc:
            for path, message in exc.problems:
                where = file.doc.where(("risk", *path)) if path else file.doc.where_key(("risk",))
                self._add("risk", message, where)

    def _allow_always(
        self,
        doc: Document,
        path: tuple[str | int, ...],
        raw: RuleIn,
        effect: Effect,
        plan: ApprovalPlan | None,
    ) -> AllowAlways | None:
        """`allow_always:` checked against its rule: only on approve rules whose plan is one
        stage of one requirement with `required: 1` (one person can speak for it)."""
        spec = raw.allow_always
        if spec is None:
            return None
        where = doc.where_key((*path, "allow_always"))
        if effect is not Effect.APPROVE:
            self._add(
                "unexpected_allow_always",
                f"allow_always: only applies to approve rules, not {effect}",
                where,
                raw.id,
                "a standing grant replaces a human approval; allow, deny and block rules need none",
            )
            return None
        if plan is not None and not (
            len(plan.stages) == 1
            and len(plan.stages[0].requirements) == 1
            and plan.stages[0].requirements[0].required == 1
        ):
            self._add(
                "allow_always_plan",
                "allow_always: needs an approval of one stage with one requirement of "
                "required: 1; one approver cannot grant for a multi-stage or N-of-M approval",
                where,
                raw.id,
                "split the rule: a single-approver rule with allow_always, and keep the "
                "multi-stage one without it",
            )
            return None
        return AllowAlways(parse_duration(spec.max_ttl), tuple(spec.scope))

    def _controls(self, directory: Directory) -> Controls | None:
        """`controls:` from every file (later files override earlier keys), resolved."""
        override: OverrideSettings | None = None
        remember: int | None = None
        found = False
        for file in self.files:
            spec = file.top.controls
            if spec is None:
                continue
            found = True
            if spec.remember_denials is not None:
                remember = parse_duration(spec.remember_denials)
            if spec.override is None:
                continue
            base: tuple[str | int, ...] = ("controls", "override")
            refs_ok = True
            for key in ("alert", "review_by"):
                for j, ref in enumerate(getattr(spec.override, key)):
                    refs_ok = (
                        self._check_ref(file.doc, (*base, key, j), ref, "controls", directory)
                        and refs_ok
                    )
            if not refs_ok:
                continue
            limit, window = parse_rate(spec.override.rate_limit)
            reviewers = directory.resolve(spec.override.review_by)
            if not reviewers:
                self._add(
                    "no_reviewers",
                    "controls.override.review_by names nobody",
                    file.doc.where_key((*base, "review_by")),
                    None,
                    "add people to the group, or name people: every override must be "
                    "reviewed by someone other than the overrider",
                )
                continue
            override = OverrideSettings(
                role=spec.override.role,
                alert=directory.resolve(spec.override.alert) or reviewers,
                review_by=reviewers,
                rate_limit=limit,
                rate_window_s=window,
            )
        if not found:
            return None
        return Controls(override=override, remember_denials_s=remember)

    def _default(self) -> Effect:
        chosen: tuple[Effect, Location] | None = None
        for file in self.files:
            if file.top.policies.default is None:
                continue
            effect = Effect(file.top.policies.default)
            loc = file.doc.where(("policies", "default"))
            if effect is Effect.APPROVE:
                self._add(
                    "invalid_default",
                    "the default cannot be approve: it names no approvers",
                    loc,
                    hint="use deny (recommended), allow or block; write approve rules instead",
                )
                continue
            if chosen and chosen[0] is not effect:
                self._add(
                    "conflicting_default",
                    f"default '{effect}' conflicts with '{chosen[0]}' set at {chosen[1]}",
                    loc,
                )
            chosen = chosen or (effect, loc)
        return chosen[0] if chosen else Effect.DENY

    def _directory(self) -> Directory:
        people: list[Person] = []
        declared: list[str] = []
        seen: dict[str, Location] = {}
        for file in self.files:
            declared.extend(file.top.directory.groups)
            for i, raw in file.people:
                loc = file.doc.where(("directory", "people", i, "id"))
                if raw.id in seen:
                    self._add(
                        "duplicate_person",
                        f"person '{raw.id}' is defined twice",
                        loc,
                        hint=f"first defined at {seen[raw.id]}",
                    )
                    continue
                seen[raw.id] = loc
                people.append(
                    Person(
                        id=raw.id,
                        name=raw.name or raw.id,
                        email=raw.email,
                        groups=tuple(raw.groups),
                        roles=tuple(raw.roles),
                        channels=tuple((k, str(v)) for k, v in raw.channels.items()),
                        manager=raw.manager,
                        timezone=raw.timezone,
                    )
                )
        directory = Directory(people, declared)
        for file in self.files:
            doc = file.doc
            for i, raw in file.people:
                if raw.manager and directory.get(raw.manager) is None:
                    self._add(
                        "unknown_person",
                        f"manager '{raw.manager}' of '{raw.id}' is not in the directory",
                        doc.where(("directory", "people", i, "manager")),
                        hint=_known_hint(raw.manager, list(directory.people)),
                    )
                if raw.timezone:
                    from ..risk.settings import check_zone

                    try:
                        check_zone(raw.timezone)
                    except ValueError as exc:
                        self._add(
                            "invalid_timezone",
                            f"{exc} (the timezone of '{raw.id}')",
                            doc.where(("directory", "people", i, "timezone")),
                        )
        return directory

    def _rule(
        self, doc: Document, path: tuple[str | int, ...], raw: RuleIn, directory: Directory
    ) -> Rule | None:
        effect = Effect(raw.effect)
        ok = True
        for j, pattern in enumerate(raw.actions):
            if not pattern.strip():
                self._add(
                    "invalid_action",
                    "an action name cannot be empty",
                    doc.where((*path, "actions", j)),
                    raw.id,
                )
                ok = False
        plan: ApprovalPlan | None = None
        if effect is Effect.APPROVE:
            if raw.approval is None:
                self._add(
                    "missing_approval",
                    "an approve rule needs an approval: block saying who approves",
                    doc.where(path),
                    raw.id,
                    "add approval: {stages: [{name: manager, approvers: [group:managers]}]}",
                )
                return None
            rule_context = self._context(doc, path, raw.require_context, raw.id)
            plan = self._plan(
                doc, (*path, "approval"), raw.approval, raw.id, directory,
                raw.mfa, rule_context or (),
            )  # fmt: skip
            ok = ok and plan is not None and rule_context is not None
            if plan is not None:
                plan = self._with_routing(
                    doc, (*path, "approval"), raw.approval, plan, raw.id, directory
                )
                ok = ok and plan is not None
        elif raw.approval is not None:
            self._add(
                "unexpected_approval",
                f"approval: only applies to approve rules, not {effect}",
                doc.where_key((*path, "approval")),
                raw.id,
            )
            ok = False
        for key in ("mfa", "require_context"):
            if effect is not Effect.APPROVE and getattr(raw, key) is not None:
                self._add(
                    "unexpected_step_up",
                    f"{key}: only applies to approve rules (it governs the approvers' votes), "
                    f"not {effect}",
                    doc.where_key((*path, key)),
                    raw.id,
                )
                ok = False
        for j, ref in enumerate(raw.alert):
            ok = self._check_ref(doc, (*path, "alert", j), ref, raw.id, directory) and ok
        allow_always = self._allow_always(doc, path, raw, effect, plan)
        ok = ok and (raw.allow_always is None or allow_always is not None)
        if not ok:
            return None
        return Rule(
            id=raw.id,
            actions=tuple(raw.actions),
            effect=effect,
            description=raw.description.strip(),
            when=raw.when,
            approval=plan,
            alert=tuple(raw.alert),
            on_error=OnError(raw.on_error),
            redact=tuple(raw.redact),
            allow_always=allow_always,
            location=doc.where(path),
            when_location=doc.where((*path, "when")) if raw.when is not None else None,
        )

    def _plan(
        self,
        doc: Document,
        path: tuple[str | int, ...],
        raw: ApprovalIn,
        rule_id: str,
        directory: Directory,
        rule_mfa: str | None = None,
        rule_context: ContextRequirement = (),
    ) -> ApprovalPlan | None:
        stages: list[Stage] = []
        ok = True
        timeout = parse_duration(raw.timeout) if raw.timeout is not None else None
        if raw.stages is None:
            spec = [(rule_id, [(raw.approvers or [], raw.required or 1, path)])]
            step = [(rule_mfa, rule_context)]
        else:
            spec = []
            step = []
            for i, stage in enumerate(raw.stages):
                spath = (*path, "stages", i)
                if stage.all_of is not None:
                    reqs = [
                        (r.approvers, r.required, (*spath, "all_of", k))
                        for k, r in enumerate(stage.all_of)
                    ]
                else:
                    reqs = [(stage.approvers or [], stage.required or 1, spath)]
                spec.append((stage.name, reqs))
                context = self._context(doc, spath, stage.require_context, rule_id)
                ok = ok and context is not None
                merged = dict(rule_context)
                merged.update(dict(context or ()))
                step.append((stage.mfa or rule_mfa, tuple(sorted(merged.items()))))
        for (name, reqs), (mfa, context) in zip(spec, step, strict=True):
            requirements: list[Requirement] = []
            for approvers, required, rpath in reqs:
                refs_ok = True
                for k, ref in enumerate(approvers):
                    refs_ok = (
                        ref == ACTOR_MANAGER  # the requester's manager: known per request
                        or self._check_ref(doc, (*rpath, "approvers", k), ref, rule_id, directory)
                    ) and refs_ok
                if refs_ok:
                    people = directory.resolve(approvers, keep_actor_manager=True)
                    if required > len(people):
                        self._add(
                            "required_exceeds",
                            f"required is {required} but {', '.join(approvers)} "
                            f"names only {len(people)} "
                            f"{'person' if len(people) == 1 else 'people'}",
                            doc.where((*rpath, "required"))
                            if (*rpath, "required") in doc.positions
                            else doc.where(rpath),
                            rule_id,
                            "lower required, or add people to the group",
                        )
                        refs_ok = False
                ok = ok and refs_ok
                requirements.append(Requirement(tuple(approvers), required))
            stages.append(Stage(name, tuple(requirements), mfa=mfa, require_context=context))
        if not ok:
            return None
        return ApprovalPlan(tuple(stages), timeout)

    def _context(
        self,
        doc: Document,
        path: tuple[str | int, ...],
        raw: dict[str, list[str]] | None,
        rule_id: str,
    ) -> ContextRequirement | None:
        """`require_context:` as data, or None (after adding the problems) when it is wrong."""
        if not raw:
            return ()
        ok = True
        for key, values in raw.items():
            where = doc.where_key((*path, "require_context", key))
            if key not in CONTEXT_KEYS:
                close = difflib.get_close_matches(key, CONTEXT_KEYS, n=1)
                self._add(
                    "unknown_context",
                    f"require_context: unknown fact '{key}'",
                    where,
                    rule_id,
                    f"did you mean '{close[0]}'?" if close else "known: " + ", ".join(CONTEXT_KEYS),
                )
                ok = False
            elif not values or any(not str(v).strip() for v in values):
                self._add(
                    "invalid_context",
                    f"require_context: {key} needs at least one allowed value",
                    where,
                    rule_id,
                    "for example approver_geo: [US, CA]",
                )
                ok = False
        if not ok:
            return None
        return tuple(sorted((k, tuple(str(v) for v in vs)) for k, vs in raw.items()))

    def _check_ref(
        self,
        doc: Document,
        path: tuple[str | int, ...],
        ref: str,
        rule_id: str,
        directory: Directory,
    ) -> bool:
        if directory.is_known_ref(ref):
            return True
        if ref.startswith(GROUP_PREFIX):
            name = ref[len(GROUP_PREFIX) :]
            self._add(
                "unknown_group",
                f"unknown group '{name}'",
                doc.where(path),
                rule_id,
                _known_hint(name, list(directory.groups)),
            )
        else:
            name = ref.removeprefix(PERSON_PREFIX)
            hint = _known_hint(name, list(directory.people))
            if name in directory.groups:
                hint = f"'{name}' is a group: write group:{name}"
            self._add("unknown_person", f"unknown person '{name}'", doc.where(path), rule_id, hint)
        return False

    def _with_routing(
        self,
        doc: Document,
        path: tuple[str | int, ...],
        raw: ApprovalIn,
        plan: ApprovalPlan,
        rule_id: str,
        directory: Directory,
    ) -> ApprovalPlan | None:
        """`plan` with each stage's reminders, escalation and pick (a stage's own keys override
        the approval's), or None after adding the problems found."""
        ok = True
        stages: list[Stage] = []
        timeout = plan.timeout_s or DEFAULT_TIMEOUT_S
        said: set[tuple[str, Location]] = set()

        def add(code: str, message: str, where: Location, hint: str) -> None:
            """A problem once, though a key of the approval is checked for every stage."""
            if (code, where) not in said:
                said.add((code, where))
                self._add(code, message, where, rule_id, hint)

        # Each escalate_to entry, checked once though an approval's key applies to every stage:
        # its people, or None when it names nobody usable (the problem is said then).
        level_at: dict[tuple[str | int, ...], tuple[str, ...] | None] = {}

        def level(at: tuple[str | int, ...], k: int, ref: str) -> tuple[str, ...] | None:
            if not self._check_ref(doc, at, ref, rule_id, directory):
                return None
            people = directory.resolve([ref])
            if not people:
                add(
                    "escalation_to_nobody",
                    f"escalate_to level {k + 1} ({ref}) has nobody in it",
                    doc.where(at),
                    "add people to the group, or escalate to someone who can decide",
                )
                return None
            return people

        for i, stage in enumerate(plan.stages):
            own = raw.stages[i] if raw.stages is not None else None
            spath = (*path, "stages", i) if own is not None else path

            def value(key: str, own: Any = own, spath: tuple[str | int, ...] = spath) -> Any:
                if own is not None and getattr(own, key) is not None:
                    return getattr(own, key), (*spath, key)
                return getattr(raw, key), (*path, key)

            (remind, remind_at), (after, after_at) = value("remind_after"), value("escalate_after")
            (targets, targets_at), (on_timeout, timeout_at) = (
                value("escalate_to"),
                value("on_timeout"),
            )
            pick, pick_at = value("pick")
            if all(v is None for v in (remind, after, targets, on_timeout, pick)):
                stages.append(stage)
                continue
            remind_s = parse_duration(remind) if remind is not None else None
            after_s = parse_duration(after) if after is not None else None
            levels: list[tuple[str, ...]] = []
            for k, ref in enumerate(targets or ()):
                at = (*targets_at, k)
                if at not in level_at:
                    level_at[at] = level(at, k, ref)
                people = level_at[at]
                if people is None:
                    ok = False
                else:
                    levels.append(people)
            # With on_timeout: escalate the deadline moves by escalate_after (else by the
            # timeout) at each level, so escalate_after may be the time each level gets, and a
            # reminder can fire as long as the last level's deadline is later. (The reserve a
            # pick holds back is one more level: counted, though a small group may have none.)
            escalating = on_timeout == "escalate"
            lifetime = timeout
            if escalating:
                n_levels = len(levels) + (1 if pick not in (None, "all") else 0)
                lifetime = timeout + n_levels * (after_s or timeout)
            timers = [(remind_s, "remind_after", remind_at, lifetime)]
            if not escalating:
                timers.append((after_s, "escalate_after", after_at, timeout))
            for seconds, key, where, limit in timers:
                if seconds is None or seconds < limit:
                    continue
                ok = False
                if limit == timeout:
                    before = f"the timeout ({timeout}s)"
                    hint = f"make {key} shorter than timeout, or lengthen timeout"
                else:
                    before = f"the last deadline ({limit}s: timeout plus each level's time)"
                    hint = f"make {key} shorter, or give each level more time (escalate_after)"
                if key == "escalate_after":
                    hint += (
                        " (or use on_timeout: escalate, where escalate_after is the time each "
                        "level gets)"
                    )
                add(
                    "routing_after_timeout",
                    f"{key} ({seconds}s) is not before {before}: it would never fire",
                    doc.where(where),
                    hint,
                )
            if pick not in (None, "all") and len(stage.requirements) > 1:
                ok = False
                add(
                    "pick_with_all_of",
                    f"pick: {pick} chooses people for one requirement, but stage "
                    f"'{stage.name}' has all_of",
                    doc.where(pick_at),
                    "drop pick, or split the all_of into stages with approvers/required",
                )
            widens = pick not in (None, "all")
            escalates = after_s is not None or on_timeout == "escalate"
            if escalates and not targets and not widens:
                ok = False
                add(
                    "nothing_to_escalate",
                    "escalation is set but names nobody to escalate to",
                    doc.where(after_at if after_s is not None else timeout_at),
                    "add escalate_to: [group:…], or pick: round_robin to widen to the group",
                )
            if targets and after_s is None and on_timeout != "escalate":
                ok = False
                add(
                    "escalation_never_fires",
                    "escalate_to is set, but neither escalate_after nor on_timeout: escalate "
                    "says when",
                    doc.where(targets_at),
                    "add escalate_after: 2h, or on_timeout: escalate",
                )
            routing = Routing(
                remind_after_s=remind_s,
                escalate_after_s=after_s,
                escalate_to=tuple(levels),
                on_timeout=OnTimeout(on_timeout or "deny"),
                pick=Pick(pick or "all"),
            )
            stages.append(dataclasses.replace(stage, routing=routing))
        return ApprovalPlan(tuple(stages), plan.timeout_s) if ok else None

    def _condition(
        self, doc: Document, path: tuple[str | int, ...], raw: RuleIn
    ) -> Condition | None:
        source = raw.when or ""
        try:
            return compile_condition(source)
        except CelCompileError as exc:
            base = doc.where((*path, "when"))
            quoted = doc.char_at(base) in {"'", '"'}
            for p in exc.problems:
                loc = _offset(base, p.line, p.column + (1 if quoted else 0), source)
                self._add("cel", p.message, loc, raw.id, p.hint)
            return None


def _offset(base: Location, line: int, column: int, text: str) -> Location:
    """Map a position inside a condition to the file (best effort for block scalars)."""
    if line == 1 and "\n" not in text.strip():
        return Location(base.file, base.line, base.column + column - 1)
    return Location(base.file, base.line + line, column)


def _known_hint(name: str, known: list[str]) -> str:
    if not known:
        return "the directory has none"
    close = difflib.get_close_matches(name, known, n=1)
    listed = ", ".join(sorted(known)[:12]) + (" …" if len(known) > 12 else "")
    if close:
        return f"did you mean '{close[0]}'? known: {listed}"
    return f"known: {listed}"


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Policy",
    "PolicyError",
    "Problem",
    "load_policy",
    "load_policy_text",
]
