"""Channel names → implementations, loaded lazily so an unused platform SDK is never imported."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from .base import Channel

REGISTRY: dict[str, str] = {
    "email": "clearance.channels.email:EmailChannel",
    "slack": "clearance.channels.slack:SlackChannel",
    "teams": "clearance.channels.teams:TeamsChannel",
    "discord": "clearance.channels.discord:DiscordChannel",
    "telegram": "clearance.channels.telegram:TelegramChannel",
    "whatsapp": "clearance.channels.whatsapp:WhatsAppChannel",
    "webhook": "clearance.channels.webhook:WebhookChannel",
    "memory": "clearance.testing.channel:MemoryChannel",
}


class UnknownChannel(ValueError):
    pass


def load_channel(name: str, settings: Mapping[str, Any], public_url: str) -> Channel:
    """The channel configured as `name`. `kind:` picks the implementation when the name is
    not one (two Slack workspaces: `slack-eu: {kind: slack, …}`)."""
    kind = str(settings.get("kind", name))
    target = REGISTRY.get(kind)
    if target is None:
        known = ", ".join(sorted(REGISTRY))
        raise UnknownChannel(f"unknown channel {kind!r}; known channels: {known}")
    settings = {**settings, "name": name}
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    channel: Channel = cls(dict(settings), public_url)
    return channel
