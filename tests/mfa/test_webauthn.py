"""WebAuthn's server side on bad input: challenges are single-use, expire, and belong to one
person and session; answers that do not verify are refused. (The whole ceremony with a real
browser is tests/browser/test_webauthn_browser.py.)"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clearance.audit.writer import WriteTx
from clearance.gateway import Gateway
from clearance.identity import mfa
from clearance.identity import webauthn as wa
from clearance.testing import FrozenClock

from .helpers import open_mfa_gateway


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def answer(challenge: str, kind: str = "webauthn.create") -> str:
    """A registration answer signing `challenge`, with an attestation that cannot verify."""
    client_data = json.dumps(
        {"type": kind, "challenge": challenge, "origin": "http://localhost:8750"}
    ).encode()
    return json.dumps(
        {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
         "response": {"clientDataJSON": b64(client_data), "attestationObject": b64(b"\xa0")}}
    )  # fmt: skip


@pytest.fixture
async def gw(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gateway = open_mfa_gateway(tmp_path, db_url, clock)
    yield gateway
    await gateway.aclose()


async def attempt(gw: Gateway, clock: FrozenClock, work: Any) -> str | None:
    """Run `work(conn, now, settings)` in a transaction that commits even when it fails."""
    settings = gw.approvals.mfa_settings()

    def run(tx: WriteTx) -> str | None:
        try:
            work(tx.conn, clock(), settings)
        except mfa.MfaError as exc:
            return exc.code
        return None

    return await gw.writer.run(run)


async def register_challenge(gw: Gateway, clock: FrozenClock, session: str = "s1") -> str:
    settings = gw.approvals.mfa_settings()
    options = await gw.writer.run(
        lambda tx: wa.registration_options(tx.conn, "alice", "Alice", session, clock(), settings)
    )
    parsed = json.loads(options)
    assert parsed["rp"]["id"] == "localhost"
    assert parsed["authenticatorSelection"]["userVerification"] == "required"
    return str(parsed["challenge"])


async def test_a_challenge_is_used_once_even_when_the_answer_fails(
    gw: Gateway, clock: FrozenClock
) -> None:
    """An answer that does not verify uses its challenge up: sending it again is refused as
    an unknown challenge."""
    challenge = await register_challenge(gw, clock)

    def finish(conn: Any, now: Any, settings: Any) -> None:
        wa.finish_registration(conn, "alice", "s1", answer(challenge), now, settings)

    assert await attempt(gw, clock, finish) == "webauthn_invalid"
    assert await attempt(gw, clock, finish) == "webauthn_challenge"


async def test_challenges_expire_and_belong_to_their_session(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Another session (or person) cannot use a challenge, nor anyone after 300 s."""
    challenge = await register_challenge(gw, clock)

    def other_session(conn: Any, now: Any, settings: Any) -> None:
        wa.finish_registration(conn, "alice", "s2", answer(challenge), now, settings)

    def other_person(conn: Any, now: Any, settings: Any) -> None:
        wa.finish_registration(conn, "bob", "s1", answer(challenge), now, settings)

    assert await attempt(gw, clock, other_session) == "webauthn_challenge"
    assert await attempt(gw, clock, other_person) == "webauthn_challenge"
    clock.advance(seconds=301)

    def late(conn: Any, now: Any, settings: Any) -> None:
        wa.finish_registration(conn, "alice", "s1", answer(challenge), now, settings)

    assert await attempt(gw, clock, late) == "webauthn_challenge"


async def test_malformed_answers_and_missing_keys(gw: Gateway, clock: FrozenClock) -> None:
    """Garbage is refused as invalid; asking to authenticate without a key is not_enrolled."""

    def garbage(conn: Any, now: Any, settings: Any) -> None:
        wa.finish_authentication(conn, "alice", "s1", "{not json", now, settings)

    def no_key(conn: Any, now: Any, settings: Any) -> None:
        wa.authentication_options(conn, "alice", "s1", now, settings)

    assert await attempt(gw, clock, garbage) == "webauthn_invalid"
    assert await attempt(gw, clock, no_key) == "mfa_not_enrolled"
