"""What a channel is: three translations between our neutral types and one platform.

A channel sends an approval request to one person (`send`), refreshes that message when the
request moves on (`update`), and turns the platform's callback into neutral `Interaction`s
after verifying it (`parse_callback`). Everything else — routing, retries, identity mapping,
eligibility, recording the vote — is shared and lives outside the channel (Bolt's adapter
shape: the core never sees a platform type).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..directory import Person


class ChannelError(Exception):
    """Sending or updating failed. `retry` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool = True, uncertain: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        # True when the platform may have accepted the call all the same (a timeout, a reset
        # connection): the dispatcher then treats the attempt as possibly delivered.
        self.uncertain = uncertain


class CallbackRejected(Exception):
    """A callback that must not count: bad signature, stale, malformed. `status` for the reply."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class StageView:
    index: int
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class Message:
    """An approval request (or its new state) as every channel renders it."""

    approval_id: str
    action: str
    params: Mapping[str, Any]
    reasons: tuple[str, ...]
    requester: str | None
    agent: str | None
    stage: StageView
    expires_at: datetime
    state: str
    status_line: str  # "Approved by Alice Ng at 14:02 — stage 1 of 2", or "Waiting for …"
    approve_token: str | None = None  # opaque: names the request and recipient, grants nothing
    deny_token: str | None = None
    # Set when the request may be approved always (a standing grant, clearance.grants).
    always_token: str | None = None
    inbox_url: str = ""
    recipient: Person | None = None
    # Set by the dispatcher on a request it sends: a stable id of this delivery (request,
    # stage, person, channel) that platforms with an idempotency key or message metadata
    # carry, and when an earlier attempt of the same delivery began (it may have arrived).
    delivery_id: str = ""
    earlier_attempt_at: datetime | None = None
    # An alert (state "blocked"): what happened, for its heading.
    alert_kind: str = "blocked"  # blocked | override

    @property
    def open(self) -> bool:
        return self.state == "pending" and self.approve_token is not None

    @property
    def title(self) -> str:
        return f"Approval needed: {self.action}"

    @property
    def alert_title(self) -> str:
        """The heading of an alert: "Blocked: payments.transfer", "Emergency override: …"."""
        what = "Emergency override" if self.alert_kind == "override" else "Blocked"
        return f"{what}: {self.action}"

    def summary_lines(self) -> list[str]:
        """The plain text every channel shows: what, with which arguments, why, until when."""
        who = self.requester or self.agent or "an agent"
        lines = [f"{who} wants to run {self.action}"]
        for key, value in self.params.items():
            lines.append(f"  {key}: {value}")
        lines.extend(f"Why: {reason}" for reason in self.reasons)
        lines.append(f"Stage {self.stage.index + 1} of {self.stage.count}: {self.stage.name}")
        lines.append(f"Decide by {self.expires_at.strftime('%Y-%m-%d %H:%M UTC')}")
        return lines


@dataclass(frozen=True, slots=True)
class Sent:
    """What the platform answered to a send: the handle to update the message later."""

    ref: dict[str, Any]
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Interaction:
    """A verified click (or text command) from the platform, in neutral terms."""

    event_id: str  # the platform's id for this event: replays are dropped on it
    user_id: str  # the platform's id of who clicked: mapped to a directory person
    token: str | None = None  # the opaque token of the button, when there is one
    approval_id: str | None = None  # from a text command (`/approve <id> …`)
    decision: str | None = None  # approve | deny | always (from the button or the command)
    comment: str | None = None
    reply_ref: dict[str, Any] = field(default_factory=dict)  # where to answer, if anywhere


@dataclass(frozen=True, slots=True)
class RawRequest:
    """An incoming HTTP callback, before anything trusts it."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class CallbackReply:
    """What to answer the platform's HTTP call with."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A verified callback: the interactions it carries, and the immediate reply."""

    interactions: tuple[Interaction, ...] = ()
    reply: CallbackReply = field(default_factory=CallbackReply)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the shared handler made of one interaction, for the channel's answer."""

    interaction: Interaction
    ok: bool
    text: str
    message: Message | None = None


class Channel(Protocol):
    """One platform. Constructed with its settings (from the config) and the public URL."""

    name: str

    async def send(self, message: Message, address: str) -> Sent:
        """Deliver `message` to `address` (the person's id on this platform)."""
        ...

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        """Replace the earlier message (`ref` from `send`) with the new state."""
        ...

    async def parse_callback(self, request: RawRequest) -> Parsed:
        """Verify (before parsing anything) and translate a callback; raise CallbackRejected."""
        ...

    async def acknowledge(self, outcome: Outcome) -> CallbackReply | None:
        """Tell the clicker what happened (an ephemeral reply, a toast), when the platform
        has a way; the message itself is refreshed through `update`. A reply returned here
        answers the callback's HTTP request instead of `Parsed.reply` (Discord, Teams)."""
        ...

    async def aclose(self) -> None: ...


class FindsSent(Protocol):
    """A channel that can tell, after a crash, whether an earlier attempt of a delivery reached
    the platform (Slack: the message's metadata carries `Message.delivery_id`)."""

    async def find_sent(self, message: Message, address: str, since: datetime) -> Sent | None:
        """The message sent for `message.delivery_id` since `since`, or None when there is none."""
        ...


# A channel whose platform drops a repeated send by itself sets a class attribute
# `dedupes_sends_within` (seconds): Discord's enforced nonce holds for a few minutes, the
# webhook receiver's `webhook-id` for good. A request re-sent after an attempt whose outcome
# is unknown, later than that, carries this note.
RESENT_NOTE = " (sent again after an interrupted attempt: if you got it twice, either copy works)"
