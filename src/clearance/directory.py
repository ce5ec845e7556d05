"""People, groups, roles and channel identities: who may request and who may approve."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GROUP_PREFIX = "group:"
PERSON_PREFIX = "person:"
#: An approver reference to the requester's own manager (`manager:` of `actor.user`),
#: resolved per request: "a new device needs the requester's manager to confirm".
ACTOR_MANAGER = "actor.manager"


@dataclass(frozen=True, slots=True)
class Person:
    """A directory entry: someone who can request or approve."""

    id: str
    name: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    channels: tuple[tuple[str, str], ...] = ()
    manager: str | None = None
    timezone: str | None = None

    def channel_id(self, channel: str) -> str | None:
        for name, ident in self.channels:
            if name == channel:
                return ident
        return None


class Directory:
    """An immutable view of the people in a policy, indexed every way we look them up."""

    __slots__ = ("_by_channel", "_groups", "_people")

    def __init__(self, people: Iterable[Person], groups: Iterable[str] = ()) -> None:
        self._people: dict[str, Person] = {p.id: p for p in people}
        members: dict[str, list[str]] = {g: [] for g in groups}
        by_channel: dict[tuple[str, str], str] = {}
        for person in self._people.values():
            for group in person.groups:
                members.setdefault(group, []).append(person.id)
            for channel, ident in person.channels:
                by_channel[(channel, ident)] = person.id
            if person.email:  # email links are sent to the directory's address
                by_channel.setdefault(("email", person.email.lower()), person.id)
        self._groups: dict[str, tuple[str, ...]] = {g: tuple(m) for g, m in members.items()}
        self._by_channel = by_channel

    # -- lookups -------------------------------------------------------------------------------
    @property
    def people(self) -> Mapping[str, Person]:
        return self._people

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        return self._groups

    def get(self, person_id: str) -> Person | None:
        return self._people.get(person_id)

    def display_name(self, person_id: str) -> str:
        person = self._people.get(person_id)
        return person.name if person else person_id

    def by_channel(self, channel: str, ident: str) -> Person | None:
        """The person whose `channel` identity is `ident` (a Slack user id, a Telegram id…)."""
        key = str(ident).lower() if channel == "email" else str(ident)
        person_id = self._by_channel.get((channel, key))
        return self._people.get(person_id) if person_id else None

    def manager_of(self, person_id: str | None) -> str | None:
        """The directory manager of `person_id`, when both are known."""
        person = self._people.get(person_id) if person_id else None
        manager = person.manager if person is not None else None
        return manager if manager in self._people else None

    def has_role(self, person_id: str, role: str) -> bool:
        person = self._people.get(person_id)
        return person is not None and role in person.roles

    def is_known_ref(self, ref: str) -> bool:
        if ref.startswith(GROUP_PREFIX):
            return ref[len(GROUP_PREFIX) :] in self._groups
        return ref.removeprefix(PERSON_PREFIX) in self._people

    def resolve(self, refs: Iterable[str], *, keep_actor_manager: bool = False) -> tuple[str, ...]:
        """Person ids named by `refs` (people and `group:` references), in order, once each.

        With `keep_actor_manager`, an `actor.manager` reference stays in the result as it is
        (only a request knows whose manager); otherwise it names nobody.
        """
        seen: dict[str, None] = {}
        for ref in refs:
            if ref == ACTOR_MANAGER:
                if keep_actor_manager:
                    seen[ref] = None
            elif ref.startswith(GROUP_PREFIX):
                for member in self._groups.get(ref[len(GROUP_PREFIX) :], ()):
                    seen[member] = None
            else:
                person_id = ref.removeprefix(PERSON_PREFIX)
                if person_id in self._people:
                    seen[person_id] = None
        return tuple(seen)
