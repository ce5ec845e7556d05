"""Assigning distinct people to approval slots (bipartite matching). Pure and small.

"Dual approval" means two different people: a plan is satisfiable only when every slot of
every requirement can be given its own person. Greedy assignment gets this wrong when groups
overlap; augmenting paths (Kuhn's algorithm) get it right and are cheap at approval sizes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


def max_assignment(
    slots: Sequence[Collection[str]], fixed: Mapping[str, int] | None = None
) -> dict[int, str]:
    """The largest assignment of distinct people to slots (slot index → person).

    `slots[i]` is the set of people who may fill slot i. `fixed` pins a person to a slot
    before the search starts (used when votes already count somewhere).
    """
    owner: dict[str, int] = {}
    assigned: dict[int, str] = {}
    if fixed:
        for person, slot in fixed.items():
            owner[person] = slot
            assigned[slot] = person

    def augment(slot: int, seen: set[str]) -> bool:
        for person in slots[slot]:
            if person in seen:
                continue
            seen.add(person)
            current = owner.get(person)
            if current is None or augment(current, seen):
                owner[person] = slot
                assigned[slot] = person
                return True
        return False

    for slot in range(len(slots)):
        if slot not in assigned:
            augment(slot, set())
    return assigned


def expand(requirements: Sequence[tuple[Collection[str], int]]) -> list[Collection[str]]:
    """One slot per required person: `(people, 2)` becomes two slots over the same people."""
    return [people for people, required in requirements for _ in range(required)]


def can_fill(requirements: Sequence[tuple[Collection[str], int]]) -> bool:
    """True when every requirement can be met by distinct people, all at once."""
    slots = expand(requirements)
    return len(max_assignment(slots)) == len(slots)
