"""Verifying the Bot Framework JWT that comes with every activity the Bot Connector posts.

The steps of "Authenticate requests from the Bot Connector service to your bot": take the
`Authorization: Bearer` token; read the OpenID metadata document, then the key set at its
`jwks_uri`; pick the key whose `kid` the token names (refetching the keys once when it is
unknown: they roll over); check the RS256 signature, the issuer (`https://api.botframework.com`),
the audience (the bot's app id) and the lifetime with five minutes of clock skew. What the
token binds to the activity — the `serviceurl` claim and the key's channel endorsements — is
checked by the caller once the verified body may be parsed (`check_activity`).

Times are judged against the time the request was received (the gateway's clock), not
`time.time()`, so a frozen test clock and the real one behave the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import jwt

from .base import CallbackRejected

BOTFRAMEWORK_ISSUER = "https://api.botframework.com"
DEFAULT_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
SKEW_S = 300.0
KEYS_TTL_S = 24 * 3600.0  # the Bot Framework keys roll over about daily
REFETCH_INTERVAL_S = 300.0  # an unknown kid refetches at most this often (no fetch amplifier)
SERVICE_URL_CLAIM = "serviceurl"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature, issuer, audience and lifetime were checked."""

    claims: Mapping[str, Any]
    endorsements: tuple[str, ...] | None  # the signing key's channels, when the key lists them

    @property
    def service_url(self) -> str | None:
        value = self.claims.get(SERVICE_URL_CLAIM)
        return value if isinstance(value, str) else None


class BotFrameworkAuth:
    """Validates channel → bot tokens for one bot; caches the signing keys."""

    def __init__(
        self,
        *,
        app_id: str,
        openid_metadata_url: str = DEFAULT_OPENID_METADATA_URL,
        http: httpx.AsyncClient,
        issuer: str = BOTFRAMEWORK_ISSUER,
        skew_s: float = SKEW_S,
        keys_ttl_s: float = KEYS_TTL_S,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self.openid_metadata_url = openid_metadata_url
        self.issuer = issuer
        self.skew_s = skew_s
        self.keys_ttl_s = keys_ttl_s
        self.refetch_interval_s = refetch_interval_s
        self.monotonic = monotonic
        self._http = http
        self._keys: dict[str, tuple[jwt.PyJWK, tuple[str, ...] | None]] = {}
        self._loaded_at: float | None = None
        self._refetched_at: float | None = None
        self._lock = asyncio.Lock()

    # -- the token ------------------------------------------------------------------------------
    async def verify(self, authorization: str | None, now: datetime) -> VerifiedToken:
        """Check the bearer token; raise CallbackRejected(401) for anything wrong with it."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CallbackRejected("missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CallbackRejected("malformed token") from None
        if header.get("alg") != "RS256":
            raise CallbackRejected("token not signed with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise CallbackRejected("token names no signing key")
        key, endorsements = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.app_id,
                issuer=self.issuer,
                # The lifetime is checked below against the time the request arrived.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iss", "aud"],
                },
            )
        except jwt.InvalidSignatureError:
            raise CallbackRejected("bad token signature") from None
        except jwt.InvalidAudienceError:
            raise CallbackRejected("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise CallbackRejected("token from an unexpected issuer") from None
        except jwt.PyJWTError as exc:
            raise CallbackRejected(f"invalid token: {type(exc).__name__}") from None
        at = now.timestamp()
        exp = _number(claims.get("exp"))
        if exp is None or at > exp + self.skew_s:
            raise CallbackRejected("token expired")
        nbf = _number(claims.get("nbf"))
        if nbf is not None and at < nbf - self.skew_s:
            raise CallbackRejected("token not valid yet")
        return VerifiedToken(claims, endorsements)

    @staticmethod
    def check_activity(verified: VerifiedToken, service_url: object, channel_id: object) -> None:
        """What the token binds the (now parsed) activity to: its service URL and channel."""
        if not isinstance(service_url, str) or verified.service_url != service_url:
            raise CallbackRejected("serviceurl claim does not match the activity")
        if verified.endorsements is not None and channel_id not in verified.endorsements:
            raise CallbackRejected("signing key is not endorsed for this channel")

    # -- the keys ------------------------------------------------------------------------------
    async def _key(self, kid: str) -> tuple[jwt.PyJWK, tuple[str, ...] | None]:
        async with self._lock:
            now = self.monotonic()
            if self._loaded_at is None or now - self._loaded_at > self.keys_ttl_s:
                await self._load()
            elif kid not in self._keys and (
                self._refetched_at is None or now - self._refetched_at >= self.refetch_interval_s
            ):
                self._refetched_at = now
                await self._load()
            found = self._keys.get(kid)
        if found is None:
            raise CallbackRejected("token signed with an unknown key")
        return found

    async def _load(self) -> None:
        metadata = await self._get_json(self.openid_metadata_url)
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise CallbackRejected("OpenID metadata names no jwks_uri", 503)
        document = await self._get_json(jwks_uri)
        keys: dict[str, tuple[jwt.PyJWK, tuple[str, ...] | None]] = {}
        for item in document.get("keys") or []:
            if not isinstance(item, dict) or item.get("kty") != "RSA":
                continue
            if item.get("use", "sig") != "sig" or not isinstance(item.get("kid"), str):
                continue
            try:
                key = jwt.PyJWK(item, "RS256")
            except jwt.PyJWTError:
                continue
            raw = item.get("endorsements")
            endorsements = tuple(str(e) for e in raw) if isinstance(raw, list) else None
            keys[item["kid"]] = (key, endorsements)
        self._keys = keys
        self._loaded_at = self.monotonic()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url)
        except httpx.HTTPError:
            raise CallbackRejected("could not fetch the Bot Framework signing keys", 503) from None
        if response.status_code != 200:
            raise CallbackRejected(
                f"Bot Framework key endpoint answered {response.status_code}", 503
            )
        try:
            data = response.json()
        except ValueError:
            raise CallbackRejected("Bot Framework key endpoint answered non-JSON", 503) from None
        if not isinstance(data, dict):
            raise CallbackRejected("Bot Framework key endpoint answered non-JSON", 503)
        return data


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
