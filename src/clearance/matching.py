"""Assigning distinct people to approval slots (bipartite matching). Pure and small.

"Dual approval" means two different people: a plan is satisfiable only when every slot of
every requirement can be given its own person. Greedy assignment gets this wrong when groups
overlap; augmenting paths get it right and are cheap at approval sizes. The policy engine
(feasibility of a plan) and the approval workflow (who counts toward which requirement) share
this one implementation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the policy package imports this module
    from .policy.model import ResolvedPlan, ResolvedRequirement


def max_assignment(slots: Sequence[Sequence[str]]) -> dict[int, str]:
    """A maximum assignment of distinct people to slots; slot `i` accepts anyone in
    `slots[i]`. Returns slot index → person. Deterministic: earlier slots and earlier
    candidates are preferred (augmenting paths, breadth first; no recursion)."""
    slot_of: dict[str, int] = {}
    person_of: dict[int, str] = {}
    for start in range(len(slots)):
        reached_from: dict[str, int] = {}
        seen = {start}
        queue = deque([start])
        free: str | None = None
        while queue and free is None:
            slot = queue.popleft()
            for person in slots[slot]:
                if person in reached_from:
                    continue
                reached_from[person] = slot
                holder = slot_of.get(person)
                if holder is None:
                    free = person
                    break
                if holder not in seen:
                    seen.add(holder)
                    queue.append(holder)
        # Flip the augmenting path: each slot on it takes the person reached from it.
        if free is None:
            continue
        person = free
        while True:
            slot = reached_from[person]
            previous = person_of.get(slot)
            person_of[slot] = person
            slot_of[person] = slot
            if previous is None:
                break
            person = previous
    return person_of


def saturates(slots: Sequence[Sequence[str]]) -> bool:
    """Whether distinct people can fill every slot at once."""
    if len({p for slot in slots for p in slot}) < len(slots):
        return False
    return len(max_assignment(slots)) == len(slots)


def requirement_slots(
    requirements: Iterable[ResolvedRequirement], excluded: Iterable[str | None] = ()
) -> list[tuple[str, ...]]:
    """One slot per required approval, each listing who may fill it (minus `excluded`)."""
    skip = set(excluded)
    slots: list[tuple[str, ...]] = []
    for req in requirements:
        pool = tuple(p for p in dict.fromkeys(req.approvers) if p not in skip)
        slots.extend([pool] * max(req.required, 0))
    return slots


def feasible(plan: ResolvedPlan, requester: str | None) -> str | None:
    """None when distinct people other than `requester` can meet every requirement of every
    stage (one person counts once per request); otherwise why not, in plain language."""
    if not plan.stages:
        return "the approval plan has no stages"
    everyone: list[tuple[str, ...]] = []
    for i, stage in enumerate(plan.stages):
        name = f"stage {i + 1} ({stage.name})"
        if not stage.requirements:
            return f"{name} has no requirements"
        for req in stage.requirements:
            if req.required < 1:
                return f"{name} requires fewer than one approval"
            pool = [p for p in dict.fromkeys(req.approvers) if p != requester]
            if len(pool) < req.required:
                excluded = (
                    f" ({requester} requested it and cannot approve)"
                    if requester in req.approvers
                    else ""
                )
                return (
                    f"{name} needs {_count(req.required, 'approval')} from "
                    f"{_names(req.approvers)} but only {len(pool)} of them can give one"
                    f"{excluded}"
                )
        slots = requirement_slots(stage.requirements, (requester,))
        if not saturates(slots):
            return (
                f"{name} needs {_count(len(slots), 'different person', 'different people')} "
                f"but its approver lists overlap: at most {len(max_assignment(slots))} can "
                "be assigned at once"
            )
        everyone += slots
    if not saturates(everyone):
        return (
            f"the stages need {_count(len(everyone), 'different person', 'different people')} "
            f"in all (one person counts once per request) but at most "
            f"{len(max_assignment(everyone))} can be assigned"
        )
    return None


def _names(people: Sequence[str]) -> str:
    return ", ".join(people) if people else "nobody"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"
