"""Microsoft Teams: a Bot Framework bot that sends Adaptive Cards, and notify-only Workflows.

Settings::

    teams:
      app_id: 00000000-…               # the bot's Microsoft app id
      app_password: ${TEAMS_APP_PASSWORD}
      service_url: https://smba.trafficmanager.net/teams/   # where conversations are started
      tenant_id: …                      # optional; when set, activities from other tenants
                                        # are refused and new conversations name it
      openid_metadata_url: …            # default: the Bot Framework's
      token_url: …                      # default: login.microsoftonline.com/botframework.com
      workflows_url: https://…          # optional: a Teams Workflows incoming webhook
      notify_only: false                # true: no bot at all, every send goes to workflows_url
      bot_id: 28:<app_id>               # optional: the bot's Teams id (the default shown)
      timeout: 10                       # optional: seconds per HTTP call

Sending: an OAuth2 client-credentials token (cached until shortly before it expires), a 1:1
conversation with the approver (`POST {serviceUrl}/v3/conversations`; the address is the
person's `channels.teams`: their AAD object id — clicks are identified by it, so use it rather
than a Teams `29:` id, which only matches clicks that carry no `aadObjectId`), then the card
(`POST …/activities`). The card has `Action.Execute` buttons (Universal Actions; verbs
`approve` / `deny`, data `{token}`), each falling back to an `Action.Submit` on clients without
Universal Actions, an `Input.Text` for the reason, and a link to the web inbox. `update`
replaces the card (`PUT …/activities/{id}`), without buttons once the request is decided.

Notify-only: a person whose `channels.teams` is `workflows` (someone the bot cannot reach),
or everyone when `notify_only: true`, gets the card through the Workflows webhook instead,
with a link to the web inbox as its only action: nothing can be decided through it, and it
cannot be edited later.

Callbacks (`/hooks/teams`): the Bot Framework JWT is verified (see `teams_auth`) before the
activity is parsed. A message whose text is `/approve <id> [approve|deny] [reason]` (or
`/deny <id> <reason>`) is a text command (`textcommand`), answered with a text reply.
An `adaptiveCard/action` invoke is answered with the refreshed card (or a
message when the click did not count); an `Action.Submit` message is answered 200 and the
card is then replaced through the Bot Connector. The clicker is `from.aadObjectId` (or
`from.id`), mapped through `channels.teams` in the directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from . import textcommand
from .base import (
    CallbackRejected,
    CallbackReply,
    ChannelError,
    Interaction,
    Message,
    Outcome,
    Parsed,
    RawRequest,
    Sent,
)
from .teams_auth import DEFAULT_OPENID_METADATA_URL, BotFrameworkAuth

DEFAULT_LOGIN_ENDPOINT = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
BOT_SCOPE = "https://api.botframework.com/.default"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
MESSAGE_RESPONSE_TYPE = "application/vnd.microsoft.activity.message"
ERROR_RESPONSE_TYPE = "application/vnd.microsoft.error"
WORKFLOWS_ADDRESS = "workflows"
REASON_INPUT = "reason"
TOKEN_MARGIN_S = 300.0
MAX_VALUE_CHARS = 500
MAX_FACTS = 40
_MENTION = re.compile(r"<at>[^<]*</at>")  # "<at>Clearance</at> /approve …" in a group chat


class TeamsChannel:
    """The Teams channel: Bot Connector REST calls over httpx, Workflows for notify-only."""

    def __init__(self, settings: dict[str, Any], public_url: str) -> None:
        self.name = str(settings.get("name", "teams"))
        self.public_url = public_url
        self.notify_only = bool(settings.get("notify_only", False))
        self.workflows_url = _optional_url(settings, "workflows_url", self.name)
        if self.notify_only:
            if self.workflows_url is None:
                raise ValueError(f"channel {self.name!r}: notify_only needs 'workflows_url'")
            self.app_id = _optional(settings, "app_id", self.name) or ""
            self.app_password = _optional(settings, "app_password", self.name) or ""
            self.service_url = _optional_url(settings, "service_url", self.name) or ""
        else:
            self.app_id = _required(settings, "app_id", self.name)
            self.app_password = _required(settings, "app_password", self.name)
            self.service_url = _required_url(settings, "service_url", self.name)
        self.tenant_id = _optional(settings, "tenant_id", self.name)
        self.token_url = _optional_url(settings, "token_url", self.name) or DEFAULT_LOGIN_ENDPOINT
        self.openid_metadata_url = (
            _optional_url(settings, "openid_metadata_url", self.name) or DEFAULT_OPENID_METADATA_URL
        )
        self.bot_id = _optional(settings, "bot_id", self.name) or f"28:{self.app_id}"
        timeout = settings.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"channel {self.name!r}: 'timeout' must be a positive number")
        self._http = httpx.AsyncClient(timeout=float(timeout))
        self.auth: BotFrameworkAuth | None = None
        if not self.notify_only:
            self.auth = BotFrameworkAuth(
                app_id=self.app_id,
                openid_metadata_url=self.openid_metadata_url,
                http=self._http,
            )
        self.monotonic = time.monotonic  # the token cache's clock (tests replace it)
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: Message, address: str) -> Sent:
        if self.notify_only or address.strip().lower() == WORKFLOWS_ADDRESS:
            return await self._send_workflows(message)
        if not address.strip():
            raise ChannelError(f"{self.name}: the person has no Teams id", retry=False)
        base = self.service_url.rstrip("/")
        params: dict[str, Any] = {
            "bot": {"id": self.bot_id},
            "isGroup": False,
            "members": [{"id": address}],
        }
        if self.tenant_id:
            params["tenantId"] = self.tenant_id
            params["channelData"] = {"tenant": {"id": self.tenant_id}}
        conversation = await self._connector("POST", f"{base}/v3/conversations", params)
        conversation_id = conversation.get("id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise ChannelError(f"{self.name}: the Bot Connector returned no conversation id")
        service_url = str(conversation.get("serviceUrl") or self.service_url)
        activity = {
            "type": "message",
            "from": {"id": self.bot_id},
            "conversation": {"id": conversation_id},
            "recipient": {"id": address},
            "summary": message.title,
            "attachments": [_attachment(build_card(message))],
        }
        url = f"{service_url.rstrip('/')}/v3/conversations/{_seg(conversation_id)}/activities"
        posted = await self._connector("POST", url, activity)
        activity_id = posted.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            raise ChannelError(f"{self.name}: the Bot Connector returned no activity id")
        ref = {
            "kind": "bot",
            "service_url": service_url,
            "conversation_id": conversation_id,
            "activity_id": activity_id,
        }
        return Sent(ref, {"conversation": conversation, "activity": posted})

    async def update(self, ref: Mapping[str, Any], message: Message) -> None:
        if ref.get("kind") == WORKFLOWS_ADDRESS:
            return  # a Workflows post cannot be edited; it only ever linked to the inbox
        await self._put_card(
            str(ref["service_url"]),
            str(ref["conversation_id"]),
            str(ref["activity_id"]),
            build_card(message),
        )

    async def _put_card(
        self, service_url: str, conversation_id: str, activity_id: str, card: dict[str, Any]
    ) -> None:
        url = (
            f"{service_url.rstrip('/')}/v3/conversations/{_seg(conversation_id)}"
            f"/activities/{_seg(activity_id)}"
        )
        activity = {
            "type": "message",
            "id": activity_id,
            "from": {"id": self.bot_id},
            "conversation": {"id": conversation_id},
            "attachments": [_attachment(card)],
        }
        await self._connector("PUT", url, activity)

    async def _send_workflows(self, message: Message) -> Sent:
        if self.workflows_url is None:
            raise ChannelError(
                f"{self.name}: the person has no bot address and no workflows_url is set",
                retry=False,
            )
        payload = {
            "type": "message",
            "attachments": [
                {"contentType": CARD_TYPE, "contentUrl": None, "content": notify_card(message)}
            ],
        }
        try:
            response = await self._http.post(self.workflows_url, json=payload)
        except httpx.TimeoutException:
            raise ChannelError(f"{self.name}: the Workflows webhook timed out") from None
        except httpx.HTTPError as exc:
            # The webhook URL carries its signature: never put it in an error.
            raise ChannelError(f"{self.name}: Workflows webhook: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise _http_error(self.name, "Workflows webhook", response)
        return Sent({"kind": WORKFLOWS_ADDRESS}, {"status": response.status_code})

    # -- the Bot Connector ---------------------------------------------------------------------
    async def _connector(self, method: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """One authenticated Bot Connector call; a 401 gets one retry with a fresh token."""
        response: httpx.Response | None = None
        for attempt in range(2):
            token = await self._access_token(refresh=attempt > 0)
            try:
                response = await self._http.request(
                    method, url, json=body, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.TimeoutException:
                raise ChannelError(
                    f"{self.name}: the Bot Connector timed out", uncertain=True
                ) from None
            except httpx.HTTPError as exc:
                raise ChannelError(f"{self.name}: Bot Connector: {type(exc).__name__}") from None
            if response.status_code != 401:
                break
        assert response is not None
        if response.status_code >= 400:
            raise _http_error(self.name, "Bot Connector", response)
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def _access_token(self, *, refresh: bool = False) -> str:
        """The bot's access token, from the cache while it has more than a few minutes left."""
        async with self._token_lock:
            now = self.monotonic()
            if not refresh and self._token is not None and now < self._token[1]:
                return self._token[0]
            form = {
                "grant_type": "client_credentials",
                "client_id": self.app_id,
                "client_secret": self.app_password,
                "scope": BOT_SCOPE,
            }
            try:
                response = await self._http.post(self.token_url, data=form)
            except httpx.TimeoutException:
                raise ChannelError(f"{self.name}: the token endpoint timed out") from None
            except httpx.HTTPError as exc:
                raise ChannelError(f"{self.name}: token endpoint: {type(exc).__name__}") from None
            if response.status_code >= 400:
                raise _http_error(self.name, "token endpoint", response)
            try:
                data = response.json()
                token = str(data["access_token"])
                lifetime = float(data.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError):
                raise ChannelError(f"{self.name}: the token endpoint answered no token") from None
            margin = min(TOKEN_MARGIN_S, lifetime / 2)
            self._token = (token, now + lifetime - margin)
            return token

    # -- callbacks -----------------------------------------------------------------------------
    async def parse_callback(self, request: RawRequest) -> Parsed:
        if self.auth is None:
            raise CallbackRejected("this Teams channel is notify-only: it takes no callbacks", 404)
        verified = await self.auth.verify(request.headers.get("authorization"), request.received_at)
        try:
            activity = json.loads(request.body)
        except ValueError:
            raise CallbackRejected("malformed activity", 400) from None
        if not isinstance(activity, dict):
            raise CallbackRejected("malformed activity", 400)
        self.auth.check_activity(verified, activity.get("serviceUrl"), activity.get("channelId"))
        if self.tenant_id and _tenant(activity) != self.tenant_id:
            raise CallbackRejected("activity from another tenant", 403)
        kind = activity.get("type")
        if kind == "invoke":
            if activity.get("name") != "adaptiveCard/action":
                return Parsed(reply=CallbackReply(status=501))
            return self._parse_execute(activity)
        if kind == "message" and isinstance(activity.get("value"), dict):
            return self._parse_submit(activity)
        if kind == "message" and isinstance(activity.get("text"), str):
            return await self._parse_text(activity)
        return Parsed()  # conversation updates, other messages: nothing to decide

    async def _parse_text(self, activity: dict[str, Any]) -> Parsed:
        """`/approve <id> [approve|deny] [reason]` typed to the bot (a mention of the bot in
        front is dropped); the sender is the activity's verified `from`."""
        text = _MENTION.sub("", str(activity["text"])).strip()
        conversation = activity.get("conversation")
        conversation_id = conversation.get("id") if isinstance(conversation, dict) else None
        ref = {
            "kind": "text",
            "service_url": activity["serviceUrl"],
            "conversation_id": conversation_id,
            "reply_to": activity.get("id"),
        }
        try:
            command = textcommand.parse(text)
        except textcommand.CommandError as exc:
            await self._reply_text(ref, str(exc))
            return Parsed()
        if command is None:
            if text.startswith("/"):
                await self._reply_text(ref, textcommand.USAGE)
            return Parsed()
        interaction = command.interaction(
            event_id=_event_id(activity), user_id=_user(activity), reply_ref=ref
        )
        return Parsed((interaction,))

    def _parse_execute(self, activity: dict[str, Any]) -> Parsed:
        value = activity.get("value")
        action = value.get("action") if isinstance(value, dict) else None
        if not isinstance(action, dict):
            raise CallbackRejected("adaptiveCard/action without an action", 400)
        verb = action.get("verb")
        data = action.get("data")
        data = data if isinstance(data, dict) else {}
        token = data.get("token")
        if verb not in VERBS or not isinstance(token, str) or not token:
            body = _invoke_body(
                400,
                ERROR_RESPONSE_TYPE,
                {"code": "BadRequest", "message": "This button is not valid."},
            )
            return Parsed(reply=CallbackReply(body=body))
        interaction = Interaction(
            event_id=_event_id(activity),
            user_id=_user(activity),
            token=token,
            decision=str(verb),
            comment=_comment(data),
            reply_ref={"kind": "invoke"},
        )
        # Replaced by what `acknowledge` returns once the hub has decided.
        received = _invoke_body(200, MESSAGE_RESPONSE_TYPE, "Received.")
        return Parsed((interaction,), CallbackReply(body=received))

    def _parse_submit(self, activity: dict[str, Any]) -> Parsed:
        data: dict[str, Any] = activity["value"]
        verb = data.get("verb")
        token = data.get("token")
        if verb not in VERBS or not isinstance(token, str) or not token:
            return Parsed()  # some other card's submit: not ours
        conversation = activity.get("conversation")
        conversation_id = conversation.get("id") if isinstance(conversation, dict) else None
        interaction = Interaction(
            event_id=_event_id(activity),
            user_id=_user(activity),
            token=token,
            decision=str(verb),
            comment=_comment(data),
            reply_ref={
                "kind": "submit",
                "service_url": activity["serviceUrl"],
                "conversation_id": conversation_id,
                "reply_to": activity.get("replyToId"),
            },
        )
        return Parsed((interaction,))

    async def acknowledge(self, outcome: Outcome) -> CallbackReply | None:
        """An invoke is answered with the refreshed card (Teams shows it in place of the old
        one) or, when the click did not count, a message; a submit gets the card replaced,
        or a text reply in the chat."""
        ref = outcome.interaction.reply_ref
        if ref.get("kind") == "invoke":
            if outcome.ok and outcome.message is not None:
                body = _invoke_body(200, CARD_TYPE, build_card(outcome.message))
            else:
                body = _invoke_body(200, MESSAGE_RESPONSE_TYPE, outcome.text)
            return CallbackReply(body=body)
        if ref.get("kind") not in ("submit", "text"):
            return None
        reply_to = ref.get("reply_to")
        if (
            ref.get("kind") == "submit"
            and outcome.ok
            and outcome.message is not None
            and isinstance(reply_to, str)
            and reply_to
            and isinstance(ref.get("conversation_id"), str)
        ):
            await self._put_card(
                str(ref["service_url"]),
                str(ref["conversation_id"]),
                reply_to,
                build_card(outcome.message),
            )
            return None
        await self._reply_text(ref, outcome.text)
        return None

    async def _reply_text(self, ref: Mapping[str, Any], text: str) -> None:
        """A plain-text answer in the conversation `ref` names (after a submit or a command)."""
        if not isinstance(ref.get("conversation_id"), str):
            return
        service_url = str(ref["service_url"])
        conversation_id = str(ref["conversation_id"])
        reply_to = ref.get("reply_to")
        reply: dict[str, Any] = {
            "type": "message",
            "from": {"id": self.bot_id},
            "conversation": {"id": conversation_id},
            "text": text,
            "textFormat": "plain",
        }
        if isinstance(reply_to, str) and reply_to:
            reply["replyToId"] = reply_to
        url = f"{service_url.rstrip('/')}/v3/conversations/{_seg(conversation_id)}/activities"
        await self._connector("POST", url, reply)

    async def aclose(self) -> None:
        await self._http.aclose()


# -- cards -------------------------------------------------------------------------------------
def build_card(message: Message) -> dict[str, Any]:
    """The Adaptive Card for a request (or an alert): buttons only while the recipient may vote."""
    body = _summary(message)
    actions: list[dict[str, Any]] = []
    if message.open and message.approve_token and message.deny_token:
        body.append(
            {
                "type": "Input.Text",
                "id": REASON_INPUT,
                "label": "Reason",
                "placeholder": "Why (optional; recorded with your decision)",
                "isMultiline": True,
                "maxLength": 500,
            }
        )
        actions.append(_execute("approve", "Approve", message.approve_token, "positive"))
        actions.append(_execute("deny", "Deny", message.deny_token, "destructive"))
        if message.always_token:  # a standing grant, where the rule allows it
            actions.append(_execute("always", "Approve always", message.always_token, "default"))
    if message.inbox_url:
        actions.append(
            {"type": "Action.OpenUrl", "title": "Open in Clearance", "url": message.inbox_url}
        )
    return _card(body, actions)


def notify_card(message: Message) -> dict[str, Any]:
    """The Workflows card: the same summary, and only a link to the web inbox."""
    body = _summary(message)
    actions: list[dict[str, Any]] = []
    if message.inbox_url:
        title = "Decide in Clearance" if message.state == "pending" else "Open in Clearance"
        actions.append({"type": "Action.OpenUrl", "title": title, "url": message.inbox_url})
    return _card(body, actions)


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
        "actions": actions,
        "msteams": {"width": "Full"},
    }


def _summary(message: Message) -> list[dict[str, Any]]:
    if message.state == "blocked":
        return [
            _text(message.alert_title, weight="Bolder", size="Medium", color="Attention"),
            _text(message.status_line),
        ]
    who = message.requester or message.agent or "an agent"
    body: list[dict[str, Any]] = [
        _text(message.title, weight="Bolder", size="Medium"),
        _text(f"{who} wants to run {message.action}"),
    ]
    facts = [
        {"title": _md(str(key))[:100], "value": _md(_clip(value))}
        for key, value in list(message.params.items())[:MAX_FACTS]
    ]
    if len(message.params) > MAX_FACTS:
        facts.append({"title": "…", "value": f"{len(message.params) - MAX_FACTS} more"})
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    body.extend(_text(f"Why: {reason}") for reason in message.reasons)
    stage = message.stage
    body.append(
        {
            "type": "FactSet",
            "facts": [
                {
                    "title": "Stage",
                    "value": _md(f"{stage.index + 1} of {stage.count}: {stage.name}"),
                },
                {
                    "title": "Decide by",
                    "value": message.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                },
            ],
        }
    )
    color = {"approved": "Good", "denied": "Attention", "expired": "Warning"}.get(
        message.state, "Default"
    )
    body.append(_text(message.status_line, weight="Bolder", color=color))
    return body


def _text(text: str, **style: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": _md(_clip(text)), "wrap": True, **style}


VERBS = ("approve", "deny", "always")  # always: approve, and grant the rule's scope


def _execute(verb: str, title: str, token: str, style: str) -> dict[str, Any]:
    """A Universal Action, falling back to a plain submit on clients that lack them."""
    return {
        "type": "Action.Execute",
        "title": title,
        "verb": verb,
        "data": {"token": token},
        "style": style,
        "fallback": {
            "type": "Action.Submit",
            "title": title,
            "data": {"verb": verb, "token": token},
            "style": style,
        },
    }


def _attachment(card: dict[str, Any]) -> dict[str, Any]:
    return {"contentType": CARD_TYPE, "content": card}


def _md(text: str) -> str:
    """Agent-supplied text must not become links or emphasis in a trusted card."""
    out = []
    for char in text:
        if char in "\\[]*_`":
            out.append("\\")
        out.append(char)
    return "".join(out)


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


# -- activities --------------------------------------------------------------------------------
def _event_id(activity: dict[str, Any]) -> str:
    """The activity id, tied to its conversation (Teams ids are only unique within one)."""
    activity_id = activity.get("id")
    if not isinstance(activity_id, str) or not activity_id:
        raise CallbackRejected("activity without an id", 400)
    conversation = activity.get("conversation")
    conversation_id = conversation.get("id") if isinstance(conversation, dict) else None
    if not isinstance(conversation_id, str) or not conversation_id:
        return activity_id[:200]
    digest = hashlib.sha256(conversation_id.encode()).hexdigest()[:16]
    return f"{activity_id[:200]}@{digest}"


def _user(activity: dict[str, Any]) -> str:
    sender = activity.get("from")
    if isinstance(sender, dict):
        for key in ("aadObjectId", "id"):
            value = sender.get(key)
            if isinstance(value, str) and value:
                return value
    raise CallbackRejected("activity without a sender", 400)


def _comment(data: Mapping[str, Any]) -> str | None:
    value = data.get(REASON_INPUT)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:1000]


def _tenant(activity: dict[str, Any]) -> str | None:
    channel_data = activity.get("channelData")
    if isinstance(channel_data, dict):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, dict) and isinstance(tenant.get("id"), str):
            return str(tenant["id"])
    conversation = activity.get("conversation")
    if isinstance(conversation, dict) and isinstance(conversation.get("tenantId"), str):
        return str(conversation["tenantId"])
    return None


def _invoke_body(status: int, kind: str, value: object) -> bytes:
    return json.dumps({"statusCode": status, "type": kind, "value": value}).encode()


def _seg(value: str) -> str:
    return quote(value, safe="")


# -- errors and settings -----------------------------------------------------------------------
def _http_error(name: str, what: str, response: httpx.Response) -> ChannelError:
    """A platform error: retry on 408/429/5xx, not on the other 4xx (bad credentials, ids)."""
    status = response.status_code
    code = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # the Bot Connector's {"error": {"code", "message"}}
            code = str(error.get("code") or "")
        elif isinstance(error, str):  # the token endpoint's {"error": "invalid_client"}
            code = error
    detail = f" ({code[:80]})" if code else ""
    retry = status in (408, 429) or status >= 500
    return ChannelError(f"{name}: {what} answered {status}{detail}", retry=retry)


def _required(settings: Mapping[str, Any], key: str, name: str) -> str:
    value = settings.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"channel {name!r}: missing setting {key!r}")
    return value.strip()


def _optional(settings: Mapping[str, Any], key: str, name: str) -> str | None:
    value = settings.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"channel {name!r}: setting {key!r} must be a string")
    return value.strip() or None


def _required_url(settings: Mapping[str, Any], key: str, name: str) -> str:
    value = _required(settings, key, name)
    _check_url(value, key, name)
    return value


def _optional_url(settings: Mapping[str, Any], key: str, name: str) -> str | None:
    value = _optional(settings, key, name)
    if value is not None:
        _check_url(value, key, name)
    return value


def _check_url(value: str, key: str, name: str) -> None:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"channel {name!r}: setting {key!r} must be an http(s) URL")
