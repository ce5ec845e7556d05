"""WebAuthn second factors (security keys, passkeys) for the web inbox, via py_webauthn.

The ceremonies, in the inbox's own session:

1. `registration_options` / `authentication_options` make a random challenge, store it
   (single-use, expiring after `server.mfa.challenge_ttl`, default 300 s, bound to the person
   and the inbox session) and return the options as JSON for `navigator.credentials`.
2. `finish_registration` / `finish_authentication` take the browser's response, find the
   challenge it signed, use it up (a compare-and-set: a response is accepted once), and verify
   it with py_webauthn against the relying party id and origin of `server.public_url`
   (`server.mfa.rp_id` overrides the id). User verification is required.
   Enrolling does not make the session fresh (see `clearance.server.inbox_mfa`).
3. An authentication checks and stores the authenticator's signature counter (a cloned key
   shows up as a counter that did not grow) and marks the session as having proved
   `webauthn` now (`clearance.identity.mfa.mark_session`).

Every failure raises `MfaError` with a stable code: `webauthn_challenge` (unknown, used,
expired or someone else's challenge), `webauthn_invalid` (the response does not verify),
`mfa_not_enrolled`.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, and_, insert, select, update
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ..store.mfa_admin_tables import mfa_challenges, mfa_factors
from .mfa import MfaError, MfaSettings, mark_session, random_challenge

__all__ = [
    "authentication_options",
    "finish_authentication",
    "finish_registration",
    "origin",
    "registration_options",
    "rp_id",
]

MAX_RESPONSE_CHARS = 64_000


def origin(settings: MfaSettings) -> str:
    """The origin browsers report: scheme://host[:port] of `server.public_url`."""
    parts = urlsplit(settings.public_url)
    return f"{parts.scheme}://{parts.netloc}"


def rp_id(settings: MfaSettings) -> str:
    return settings.rp_id or (urlsplit(settings.public_url).hostname or "localhost")


def _store_challenge(
    conn: Connection, challenge: bytes, person_id: str, session_id: str, purpose: str,
    now: datetime, settings: MfaSettings,
) -> None:  # fmt: skip
    conn.execute(
        insert(mfa_challenges).values(
            challenge=bytes_to_base64url(challenge), person_id=person_id, purpose=purpose,
            session_id=session_id, created_at=now,
            expires_at=now + timedelta(seconds=settings.challenge_ttl_s),
        )
    )  # fmt: skip


def _use_challenge(
    conn: Connection, response: dict[str, Any], person_id: str, session_id: str, purpose: str,
    now: datetime,
) -> bytes:  # fmt: skip
    """The challenge the response signed, used up; MfaError when it is not one we can accept."""
    try:
        client_data = json.loads(base64url_to_bytes(response["response"]["clientDataJSON"]))
        challenge = str(client_data["challenge"])
    except (KeyError, TypeError, ValueError):
        raise MfaError("webauthn_invalid", "the browser's answer is malformed") from None
    t = mfa_challenges
    used = conn.execute(
        update(t)
        .where(
            and_(
                t.c.challenge == challenge[:128],
                t.c.person_id == person_id,
                t.c.session_id == session_id,
                t.c.purpose == purpose,
                t.c.used_at.is_(None),
                t.c.expires_at > now,
            )
        )
        .values(used_at=now)
    )
    if used.rowcount != 1:
        raise MfaError(
            "webauthn_challenge",
            "this security-key request is unknown, expired or already used; try again",
        )
    return base64url_to_bytes(challenge)


def _parse(credential_json: str) -> dict[str, Any]:
    if len(credential_json) > MAX_RESPONSE_CHARS:
        raise MfaError("webauthn_invalid", "the browser's answer is too large")
    try:
        data = json.loads(credential_json)
    except ValueError:
        raise MfaError("webauthn_invalid", "the browser's answer is not JSON") from None
    if not isinstance(data, dict):
        raise MfaError("webauthn_invalid", "the browser's answer is malformed")
    return data


def _did_not_verify(exc: Exception) -> str:
    return f"the security key's answer did not verify: {str(exc)[:200]}"


def _credentials(conn: Connection, person_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(mfa_factors).where(
            and_(
                mfa_factors.c.person_id == person_id,
                mfa_factors.c.kind == "webauthn",
                mfa_factors.c.confirmed_at.is_not(None),
            )
        )
    ).mappings()
    return [dict(r) for r in rows]


def registration_options(
    conn: Connection, person_id: str, display_name: str, session_id: str, now: datetime,
    settings: MfaSettings,
) -> str:  # fmt: skip
    """Options for `navigator.credentials.create()`, as JSON; the challenge is stored."""
    challenge = random_challenge()
    options = generate_registration_options(
        rp_id=rp_id(settings),
        rp_name=settings.issuer,
        user_name=person_id,
        user_id=person_id.encode(),
        user_display_name=display_name,
        challenge=challenge,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(c["credential_id"]))
            for c in _credentials(conn, person_id)
        ],
    )
    _store_challenge(conn, challenge, person_id, session_id, "register", now, settings)
    return options_to_json(options)


def finish_registration(
    conn: Connection, person_id: str, session_id: str, credential_json: str, now: datetime,
    settings: MfaSettings, *, label: str | None = None,
) -> str:  # fmt: skip
    """Verify the browser's new credential and store it; returns the factor id. Registering
    proves nothing for votes: the person then verifies with the key like any other time."""
    response = _parse(credential_json)
    challenge = _use_challenge(conn, response, person_id, session_id, "register", now)
    try:
        verified = verify_registration_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=rp_id(settings),
            expected_origin=origin(settings),
            require_user_verification=True,
        )
    except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
        raise MfaError(
            "webauthn_invalid", f"the security key's answer did not verify: {exc}"
        ) from None
    factor_id = "mfa_" + secrets.token_hex(10)
    conn.execute(
        insert(mfa_factors).values(
            id=factor_id, person_id=person_id, kind="webauthn", label=label or "security key",
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count, created_at=now, confirmed_at=now, last_used_at=now,
        )
    )  # fmt: skip
    return factor_id


def authentication_options(
    conn: Connection, person_id: str, session_id: str, now: datetime, settings: MfaSettings
) -> str:
    """Options for `navigator.credentials.get()` over the person's keys, as JSON."""
    creds = _credentials(conn, person_id)
    if not creds:
        raise MfaError("mfa_not_enrolled", f"{person_id} has no security key registered")
    challenge = random_challenge()
    options = generate_authentication_options(
        rp_id=rp_id(settings),
        challenge=challenge,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(c["credential_id"])) for c in creds
        ],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    _store_challenge(conn, challenge, person_id, session_id, "authenticate", now, settings)
    return options_to_json(options)


def finish_authentication(
    conn: Connection, person_id: str, session_id: str, credential_json: str, now: datetime,
    settings: MfaSettings,
) -> str:  # fmt: skip
    """Verify an assertion by one of the person's keys; store its new signature counter and
    mark the session fresh for webauthn. Returns the factor id."""
    response = _parse(credential_json)
    challenge = _use_challenge(conn, response, person_id, session_id, "authenticate", now)
    raw_id = str(response.get("rawId") or response.get("id") or "")
    creds = {c["credential_id"]: c for c in _credentials(conn, person_id)}
    cred = creds.get(raw_id)
    if cred is None:
        raise MfaError("webauthn_invalid", "this security key is not registered to you")
    try:
        verified = verify_authentication_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=rp_id(settings),
            expected_origin=origin(settings),
            credential_public_key=base64url_to_bytes(cred["public_key"]),
            credential_current_sign_count=int(cred["sign_count"]),
            require_user_verification=True,
        )
    except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
        raise MfaError(
            "webauthn_invalid", f"the security key's answer did not verify: {exc}"
        ) from None
    bumped = conn.execute(
        update(mfa_factors)
        .where(
            and_(
                mfa_factors.c.id == cred["id"], mfa_factors.c.sign_count == int(cred["sign_count"])
            )
        )
        .values(sign_count=verified.new_sign_count, last_used_at=now)
    )
    if bumped.rowcount != 1:  # another assertion with this key was accepted meanwhile
        raise MfaError("webauthn_invalid", "this security key was used concurrently; try again")
    mark_session(conn, session_id, person_id, "webauthn", now)
    return str(cred["id"])
