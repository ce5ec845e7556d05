"""A fake of the Microsoft Teams side of a bot: the Bot Framework login (OpenID metadata, its
key set, the token endpoint), the Bot Connector (conversations and activities) and a Workflows
incoming webhook — and a helper that builds activities with a Bot Framework JWT signed by the
fake's RSA key, as the Bot Connector posts them to a bot.

    fake = FakeTeams()
    with serve_in_thread(fake.app) as server:
        fake.base_url = server.url
        settings = fake.settings()          # the channel settings pointing at the fake
        body, headers = fake.invoke(token, "approve", user="aad-bob", now=clock())

Paths: `/openid/.well-known/openidconfiguration`, `/openid/.well-known/keys`,
`/botframework.com/oauth2/v2.0/token`, `/v3/conversations…` (the service URL is the fake's
root) and `/workflows/hook` (a 202, as Workflows answers).
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ISSUER = "https://api.botframework.com"
SCOPE = "https://api.botframework.com/.default"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
TOKEN_PATH = "/botframework.com/oauth2/v2.0/token"  # noqa: S105 - a path
METADATA_PATH = "/openid/.well-known/openidconfiguration"
KEYS_PATH = "/openid/.well-known/keys"
WORKFLOWS_PATH = "/workflows/hook"

_KEY_CACHE: list[rsa.RSAPrivateKey] = []


def _new_key() -> rsa.RSAPrivateKey:
    """RSA keys are slow to make: tests share a few."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    key: rsa.RSAPrivateKey
    endorsements: tuple[str, ...] = ("msteams", "emulator", "webchat")

    def jwk(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
            "endorsements": list(self.endorsements),
        }


@dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeTeams:
    app_id: str = "00000000-0000-0000-0000-00000000b07"
    app_password: str = "fake-app-password"  # noqa: S105 - a fake's test secret
    tenant_id: str = "tenant-0001"
    channel_id: str = "msteams"
    token_lifetime_s: int = 3599
    base_url: str = "http://127.0.0.1:0"  # set to the served URL
    calls: list[Call] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    metadata_fetches: int = 0
    keys_fetches: int = 0
    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    activities: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    posted: list[dict[str, Any]] = field(default_factory=list)  # each POSTed activity
    updates: list[dict[str, Any]] = field(default_factory=list)  # each PUT activity
    workflows: list[dict[str, Any]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # statuses for the next connector calls
    fail_token: list[int] = field(default_factory=list)  # statuses for the next token calls

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._issued: set[str] = set()
        self._ids = itertools.count(1)
        self.signing = SigningKey("fake-key-1", self._shared_key(0))
        self.published: list[SigningKey] = [self.signing]
        self.app = Starlette(
            routes=[
                Route(METADATA_PATH, self._metadata, methods=["GET"]),
                Route(KEYS_PATH, self._keys, methods=["GET"]),
                Route(TOKEN_PATH, self._token, methods=["POST"]),
                Route("/v3/conversations", self._create_conversation, methods=["POST"]),
                Route(
                    "/v3/conversations/{conversation}/activities",
                    self._post_activity,
                    methods=["POST"],
                ),
                Route(
                    "/v3/conversations/{conversation}/activities/{activity}",
                    self._put_activity,
                    methods=["PUT"],
                ),
                Route(WORKFLOWS_PATH, self._workflow, methods=["POST"]),
            ]
        )

    @staticmethod
    def _shared_key(n: int) -> rsa.RSAPrivateKey:
        while len(_KEY_CACHE) <= n:
            _KEY_CACHE.append(_new_key())
        return _KEY_CACHE[n]

    def reset(self) -> None:
        """Forget every call, conversation and token, and publish the first key again (one
        served fake can then be shared by many tests)."""
        with self._lock:
            self.calls.clear()
            self.token_requests.clear()
            self.conversations.clear()
            self.activities.clear()
            self.posted.clear()
            self.updates.clear()
            self.workflows.clear()
            self.fail_next.clear()
            self.fail_token.clear()
            self._issued.clear()
            self.metadata_fetches = self.keys_fetches = 0
            self.signing = SigningKey("fake-key-1", self._shared_key(0))
            self.published = [self.signing]

    # -- configuration helpers -----------------------------------------------------------------
    @property
    def service_url(self) -> str:
        return self.base_url.rstrip("/") + "/"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Channel settings that point every URL at this fake."""
        base = self.base_url.rstrip("/")
        out: dict[str, Any] = {
            "app_id": self.app_id,
            "app_password": self.app_password,
            "service_url": self.service_url,
            "tenant_id": self.tenant_id,
            "openid_metadata_url": base + METADATA_PATH,
            "token_url": base + TOKEN_PATH,
            "workflows_url": base + WORKFLOWS_PATH + "?sig=fake-signature",
        }
        out.update(overrides)
        return {k: v for k, v in out.items() if v is not None}

    def rotate_key(self) -> SigningKey:
        """Publish a new signing key (and withdraw the old one), as Bot Framework rolls over."""
        n = len(self.published) + 1
        self.signing = SigningKey(f"fake-key-{n}", self._shared_key(1 + (n % 2)))
        self.published = [self.signing]
        return self.signing

    def revoke_tokens(self) -> None:
        """Forget the access tokens issued so far: the Bot Connector will answer 401."""
        with self._lock:
            self._issued.clear()

    # -- JWTs and activities -------------------------------------------------------------------
    def jwt(
        self,
        *,
        service_url: str | None = None,
        now: datetime,
        variant: str | None = None,
    ) -> str:
        """A channel → bot token. Variants: expired, not_yet_valid, wrong_audience,
        wrong_issuer, unknown_key (a key the key set lacks), bad_signature (a wrong key under a
        published kid), serviceurl_mismatch, none_alg."""
        claims: dict[str, Any] = {
            "serviceurl": service_url or self.service_url,
            "nbf": int((now - timedelta(minutes=1)).timestamp()),
            "exp": int((now + timedelta(minutes=59)).timestamp()),
            "iss": ISSUER,
            "aud": self.app_id,
        }
        key, kid = self.signing.key, self.signing.kid
        if variant == "expired":
            claims["nbf"] = int((now - timedelta(hours=2)).timestamp())
            claims["exp"] = int((now - timedelta(minutes=6)).timestamp())
        elif variant == "not_yet_valid":
            claims["nbf"] = int((now + timedelta(minutes=6)).timestamp())
        elif variant == "wrong_audience":
            claims["aud"] = "11111111-2222-3333-4444-555555555555"
        elif variant == "wrong_issuer":
            claims["iss"] = "https://sts.windows.net/evil/"
        elif variant == "unknown_key":
            key, kid = self._shared_key(3), "not-published"
        elif variant == "bad_signature":
            key = self._shared_key(3)
        elif variant == "serviceurl_mismatch":
            claims["serviceurl"] = "https://smba.trafficmanager.net/evil/"
        elif variant == "none_alg":
            parts = ({"alg": "none", "typ": "JWT", "kid": kid}, claims)
            return ".".join(_b64json(part) for part in parts) + "."
        elif variant is not None:
            raise ValueError(f"unknown variant {variant!r}")
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "x5t": kid})

    def activity_request(
        self, activity: Mapping[str, Any], *, now: datetime, variant: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers the Bot Connector posts to the bot's messaging endpoint."""
        token = self.jwt(service_url=str(activity.get("serviceUrl")), now=now, variant=variant)
        body = json.dumps(activity).encode()
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        return body, headers

    def _base_activity(
        self,
        kind: str,
        *,
        user: str,
        conversation_id: str | None,
        activity_id: str | None,
        now: datetime,
        reply_to: str | None,
    ) -> dict[str, Any]:
        conversation_id = conversation_id or f"a:conv-{user}"
        return {
            "type": kind,
            "id": activity_id or f"f:{secrets.token_hex(8)}",
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "localTimestamp": now.isoformat(),
            "serviceUrl": self.service_url,
            "channelId": self.channel_id,
            "from": {"id": f"29:teams-{user}", "name": user, "aadObjectId": user},
            "conversation": {
                "conversationType": "personal",
                "tenantId": self.tenant_id,
                "id": conversation_id,
            },
            "recipient": {"id": f"28:{self.app_id}", "name": "Clearance"},
            "entities": [{"type": "clientInfo", "locale": "en-US", "platform": "Web"}],
            "channelData": {
                "tenant": {"id": self.tenant_id},
                "source": {"name": "message"},
                "legacy": {"replyToId": reply_to},
            },
            "replyToId": reply_to,
            "locale": "en-US",
        }

    def invoke(
        self,
        token: str,
        verb: str,
        *,
        user: str,
        now: datetime,
        reason: str | None = None,
        activity_id: str | None = None,
        conversation_id: str | None = None,
        reply_to: str | None = None,
        variant: str | None = None,
        tweak: Mapping[str, Any] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """An `adaptiveCard/action` invoke, as Teams sends for a click on an Action.Execute."""
        activity = self._base_activity(
            "invoke",
            user=user,
            conversation_id=conversation_id,
            activity_id=activity_id,
            now=now,
            reply_to=reply_to,
        )
        data: dict[str, Any] = {"token": token}
        if reason is not None:
            data["reason"] = reason  # Input.Text values are merged into the action's data
        activity["name"] = "adaptiveCard/action"
        activity["value"] = {
            "action": {
                "type": "Action.Execute",
                "id": f"action-{verb}",
                "title": verb.title(),
                "verb": verb,
                "data": data,
            },
            "trigger": "manual",
        }
        activity.update(tweak or {})
        return self.activity_request(activity, now=now, variant=variant)

    def submit(
        self,
        token: str,
        verb: str,
        *,
        user: str,
        now: datetime,
        reason: str | None = None,
        activity_id: str | None = None,
        conversation_id: str | None = None,
        reply_to: str | None = None,
        variant: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The message activity an `Action.Submit` (the fallback) produces."""
        activity = self._base_activity(
            "message",
            user=user,
            conversation_id=conversation_id,
            activity_id=activity_id,
            now=now,
            reply_to=reply_to,
        )
        value: dict[str, Any] = {"verb": verb, "token": token}
        if reason is not None:
            value["reason"] = reason
        activity["value"] = value
        activity["text"] = ""
        return self.activity_request(activity, now=now, variant=variant)

    def message(
        self,
        text: str,
        *,
        user: str,
        now: datetime,
        activity_id: str | None = None,
        conversation_id: str | None = None,
        variant: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The message activity for `user` typing `text` to the bot in their personal chat."""
        activity = self._base_activity(
            "message",
            user=user,
            conversation_id=conversation_id,
            activity_id=activity_id,
            now=now,
            reply_to=None,
        )
        activity["text"] = text
        activity["textFormat"] = "plain"
        with self._lock:  # someone who writes to the bot has a conversation with it
            self.conversations.setdefault(
                activity["conversation"]["id"],
                {"members": [{"id": user}], "bot": {"id": f"28:{self.app_id}"}},
            )
        return self.activity_request(activity, now=now, variant=variant)

    # -- what was sent -------------------------------------------------------------------------
    def cards(self) -> list[dict[str, Any]]:
        """The Adaptive Cards posted to conversations, in order."""
        return [a["attachments"][0]["content"] for a in self.posted if a.get("attachments")]

    def current_card(self, conversation_id: str, activity_id: str) -> dict[str, Any]:
        activity = self.activities[(conversation_id, activity_id)]
        content: dict[str, Any] = activity["attachments"][0]["content"]
        return content

    # -- the endpoints -------------------------------------------------------------------------
    def _record(self, request: Request, body: Any) -> None:
        with self._lock:
            self.calls.append(Call(request.method, request.url.path, dict(request.headers), body))

    async def _metadata(self, request: Request) -> Response:
        self.metadata_fetches += 1
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": base + KEYS_PATH,
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _keys(self, request: Request) -> Response:
        self.keys_fetches += 1
        return JSONResponse({"keys": [k.jwk() for k in self.published]})

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        with self._lock:
            self.token_requests.append(form)
            status = self.fail_token.pop(0) if self.fail_token else None
        if status is not None:
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=status)
        if form.get("grant_type") != "client_credentials" or form.get("scope") != SCOPE:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "AADSTS900144"},
                status_code=400,
            )
        if form.get("client_id") != self.app_id or form.get("client_secret") != self.app_password:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid secret"},
                status_code=401,
            )
        token = "fake-bot-token-" + secrets.token_urlsafe(12)
        with self._lock:
            self._issued.add(token)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_s,
                "ext_expires_in": self.token_lifetime_s,
                "access_token": token,
            }
        )

    def _denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            ok = scheme == "Bearer" and token in self._issued
            status = self.fail_next.pop(0) if ok and self.fail_next else None
        if not ok:
            return JSONResponse(
                {"message": "Authorization has been denied for this request."}, status_code=401
            )
        if status is not None:
            return JSONResponse(
                {"error": {"code": "ServiceError", "message": "Unknown error"}},
                status_code=status,
            )
        return None

    @staticmethod
    def _bad(message: str, status: int = 400) -> Response:
        return JSONResponse({"error": {"code": "BadArgument", "message": message}}, status)

    async def _create_conversation(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        denied = self._denied(request)
        if denied is not None:
            return denied
        members = body.get("members")
        bot = body.get("bot")
        if not isinstance(bot, dict) or not bot.get("id"):
            return self._bad("Bot is required")
        if not isinstance(members, list) or len(members) != 1 or not members[0].get("id"):
            return self._bad("Conversation must have exactly one member")
        if body.get("isGroup"):
            return self._bad("Only 1:1 conversations are supported")
        if body.get("tenantId") != self.tenant_id:
            return self._bad("Tenant id is required", 400)
        conversation_id = f"a:conv-{members[0]['id']}"
        with self._lock:
            self.conversations.setdefault(conversation_id, {"members": members, "bot": bot})
        return JSONResponse({"id": conversation_id}, status_code=201)

    async def _post_activity(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        denied = self._denied(request)
        if denied is not None:
            return denied
        conversation_id = request.path_params["conversation"]
        if conversation_id not in self.conversations:
            return self._bad("Conversation not found.", 404)
        if body.get("type") != "message":
            return self._bad("Activity type is required")
        for attachment in body.get("attachments") or []:
            if attachment.get("contentType") != CARD_TYPE:
                return self._bad("Unknown attachment type")
            card = attachment.get("content") or {}
            if card.get("type") != "AdaptiveCard" or _version(card.get("version")) < (1, 4):
                return self._bad("Invalid Adaptive Card")
        activity_id = f"1:{next(self._ids)}"
        stored = {**body, "id": activity_id}
        with self._lock:
            self.posted.append(stored)
            self.activities[(conversation_id, activity_id)] = stored
        return JSONResponse({"id": activity_id}, status_code=201)

    async def _put_activity(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        denied = self._denied(request)
        if denied is not None:
            return denied
        key = (request.path_params["conversation"], request.path_params["activity"])
        if key not in self.activities:
            return JSONResponse(
                {"error": {"code": "ActivityNotFoundInConversation", "message": "Unknown"}},
                status_code=404,
            )
        if body.get("type") != "message":
            return self._bad("Activity type is required")
        stored = {**body, "id": key[1]}
        with self._lock:
            self.updates.append(stored)
            self.activities[key] = stored
        return JSONResponse({"id": key[1]}, status_code=200)

    async def _workflow(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if request.query_params.get("sig") != "fake-signature":
            return JSONResponse({"error": {"code": "DirectApiAuthorizationRequired"}}, 401)
        attachments = body.get("attachments")
        if body.get("type") != "message" or not isinstance(attachments, list) or not attachments:
            return JSONResponse({"error": {"code": "InvalidRequestContent"}}, 400)
        if attachments[0].get("contentType") != CARD_TYPE:
            return JSONResponse({"error": {"code": "InvalidRequestContent"}}, 400)
        with self._lock:
            status = self.fail_next.pop(0) if self.fail_next else None
            if status is None:
                self.workflows.append(body)
        if status is not None:
            return JSONResponse({"error": {"code": "ServiceError"}}, status)
        return Response(status_code=202)


def _b64json(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _version(value: object) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(value).split("."))
    except ValueError:
        return (0,)
