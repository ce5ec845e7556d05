"""The text fallback for chat channels: `/approve <id> [approve|deny|always] [reason…]` and
`/deny <id> <reason…>`, typed by an approver instead of clicking a button.

A command names the request by its id; who sent it is the platform's verified sender (the
channel fills `Interaction.user_id`), and the shared hub checks that this person may vote on
that request, exactly as for a click. Parsing is strict: a command that is ours but malformed
raises `CommandError` whose text tells the sender what to type instead, and anything that is
not one of our commands parses to `None` (the channel decides whether to show `USAGE`).

Also here: fitting plain-text lines into a platform's length limit, shared by the chat channels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Interaction

USAGE = (
    "To decide a request by text:\n"
    "/approve <request id> — approve it\n"
    "/approve <request id> approve <comment> — approve with a comment\n"
    "/approve <request id> always [comment] — approve, and allow the same again (where the "
    "rule permits standing grants)\n"
    "/approve <request id> deny <reason> — deny it\n"
    "/deny <request id> <reason> — deny it (a denial needs a reason)"
)
MAX_COMMENT = 1000
_COMMAND = re.compile(r"^/(approve|deny)(?:@([A-Za-z0-9_]+))?(?=\s|$)", re.IGNORECASE)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


class CommandError(ValueError):
    """One of our commands, malformed; `str(exc)` is the helpful text to show the sender."""


@dataclass(frozen=True, slots=True)
class Command:
    approval_id: str
    decision: str  # approve | deny | always (approve + a standing grant)
    comment: str | None = None

    def interaction(
        self, *, event_id: str, user_id: str, reply_ref: Mapping[str, Any] | None = None
    ) -> Interaction:
        """The neutral interaction for this command, sent by the verified `user_id`."""
        return Interaction(
            event_id=event_id,
            user_id=user_id,
            approval_id=self.approval_id,
            decision=self.decision,
            comment=self.comment,
            reply_ref=dict(reply_ref or {}),
        )


def parse(text: str, *, bot_username: str | None = None) -> Command | None:
    """The command in `text`; None when it is not one of ours (also `/approve@OtherBot` when
    `bot_username` is known); CommandError when it is ours but malformed."""
    stripped = text.strip()
    match = _COMMAND.match(stripped)
    if match is None:
        return None
    addressed_to = match.group(2)
    if addressed_to and bot_username and addressed_to.lower() != bot_username.lower():
        return None
    verb = match.group(1).lower()
    parts = stripped[match.end() :].strip().split(maxsplit=1)
    if not parts:
        raise CommandError(f"Which request? Send /{verb} <request id> …\n\n{USAGE}")
    approval_id = parts[0]
    rest = parts[1].strip() if len(parts) > 1 else ""
    if not _REQUEST_ID.match(approval_id):
        raise CommandError(
            f"{_quote(approval_id)} is not a request id; copy the id shown in the request "
            f"(like apr_…).\n\n{USAGE}"
        )
    if verb == "approve":
        decision, comment = _approve_tail(rest)
    else:
        first = rest.split(maxsplit=1)[0].lower() if rest else ""
        if first in ("approve", "always"):
            raise CommandError(f"/deny denies; to approve send /approve {approval_id}")
        decision, comment = "deny", rest
    if decision == "deny" and not comment:
        raise CommandError(
            f"A denial needs a reason: send /deny {approval_id} <reason> "
            f"(for example: /deny {approval_id} not during the freeze)."
        )
    if len(comment) > MAX_COMMENT:
        raise CommandError(f"That comment is too long: keep it under {MAX_COMMENT} characters.")
    return Command(approval_id, decision, comment or None)


def _approve_tail(rest: str) -> tuple[str, str]:
    if not rest:
        return "approve", ""
    parts = rest.split(maxsplit=1)
    word = parts[0].lower()
    if word not in ("approve", "deny", "always"):
        raise CommandError(
            f"After the request id say approve or deny (or always), not {_quote(parts[0])}: "
            f"for example "
            f"/approve <id> approve <comment>.\n\n{USAGE}"
        )
    return word, parts[1].strip() if len(parts) > 1 else ""


def _quote(text: str) -> str:
    return repr(clip(text, 40))


# -- fitting text into a platform's limits ---------------------------------------------------------
LINE_MAX = 300


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def fit_lines(
    lines: Sequence[str], budget: int, *, keep_head: int = 1, keep_tail: int = 2
) -> list[str]:
    """`lines` (each clipped to LINE_MAX) joined by newlines within `budget` characters: the
    first `keep_head` and last `keep_tail` lines are kept, lines in between are dropped from
    the end with a "…" marker when they do not fit."""
    clipped = [clip(line, LINE_MAX) for line in lines]

    def size(parts: Sequence[str]) -> int:
        return sum(len(p) for p in parts) + max(0, len(parts) - 1)

    if size(clipped) <= budget:
        return clipped
    head = clipped[:keep_head]
    tail = clipped[len(clipped) - keep_tail :] if keep_tail else []
    middle = clipped[keep_head : len(clipped) - keep_tail]
    kept: list[str] = []
    marker = f"… ({len(middle)} more lines: open the request in Clearance)"
    for line in middle:
        if size([*head, *kept, line, marker, *tail]) > budget:
            break
        kept.append(line)
    dropped = len(middle) - len(kept)
    out = [*head, *kept]
    if dropped:
        out.append(f"… ({dropped} more lines: open the request in Clearance)")
    out.extend(tail)
    if size(out) > budget:  # even the fixed lines are too long: cut the whole text
        return [clip("\n".join(out), budget)]
    return out
