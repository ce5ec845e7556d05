"""YAML policy files → a checked, compiled `Policy`, or every problem with file:line:column.

Loading runs in named stages, like OPA's compiler: parse (YAML), shape (pydantic), merge
(several files into one), resolve (people, groups, approval plans) and conditions (CEL).
Each stage collects *all* its problems; nothing is half-loaded: either a whole `Policy` comes
back, or `PolicyError` with the list.
"""

from __future__ import annotations

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
    ApprovalPlan,
    Effect,
    Location,
    OnError,
    Requirement,
    Rule,
    Stage,
)
from .schema import ApprovalIn, PersonIn, PolicyFileIn, RuleIn, parse_duration
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
    message = str(err["msg"]).removeprefix("Value error, ")
    where = ".".join(str(p) for p in loc)
    return Problem("invalid", f"{where}: {message}", doc.where(loc), rule_id)


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


_KEYS: dict[str, list[str]] = {
    "": ["version", "directory", "policies", "server", "channels", "risk"],
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
    ],
    "approval": ["stages", "approvers", "required", "timeout"],
    "stage": ["name", "approvers", "required", "all_of"],
    "requirement": ["approvers", "required"],
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
            self._add("risk", str(exc), file.doc.where_key(("risk",)))

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
            plan = self._plan(doc, (*path, "approval"), raw.approval, raw.id, directory)
            ok = ok and plan is not None
        elif raw.approval is not None:
            self._add(
                "unexpected_approval",
                f"approval: only applies to approve rules, not {effect}",
                doc.where_key((*path, "approval")),
                raw.id,
            )
            ok = False
        for j, ref in enumerate(raw.alert):
            ok = self._check_ref(doc, (*path, "alert", j), ref, raw.id, directory) and ok
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
    ) -> ApprovalPlan | None:
        stages: list[Stage] = []
        ok = True
        timeout = parse_duration(raw.timeout) if raw.timeout is not None else None
        if raw.stages is None:
            spec = [(rule_id, [(raw.approvers or [], raw.required or 1, path)])]
        else:
            spec = []
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
        for name, reqs in spec:
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
            stages.append(Stage(name, tuple(requirements)))
        if not ok:
            return None
        return ApprovalPlan(tuple(stages), timeout)

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
