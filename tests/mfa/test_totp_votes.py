"""TOTP step-up through the approval service: on SQLite and PostgreSQL, with a frozen clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from clearance.approvals.service import VoteRefused
from clearance.gateway import Gateway
from clearance.identity import mfa
from clearance.identity.mfa import VoteProof
from clearance.store.mfa_admin_tables import mfa_factors
from clearance.store.reads import read
from clearance.store.schema import audit_entries
from clearance.testing import FrozenClock

from .helpers import HUGE, enrol_totp, open_mfa_gateway


@pytest.fixture
async def gw(tmp_path: Path, db_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    gateway = open_mfa_gateway(tmp_path, db_url, clock)
    yield gateway
    await gateway.aclose()


async def at_finance_stage(gw: Gateway) -> str:
    """A $60,000 transfer, approved by its manager: waiting on the TOTP stage."""
    result = await gw.check(HUGE)
    assert result.approval is not None
    approval_id = result.approval.approval.id
    await gw.approvals.decide(approval_id, person="alice", decision="approve")
    return approval_id


async def audit_rows(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    def fetch(conn: Any) -> list[dict[str, Any]]:
        rows = conn.execute(select(audit_entries).where(audit_entries.c.kind == kind))
        return [dict(r) for r in rows.mappings()]

    return await read(gw.db, fetch)


async def test_a_fresh_code_with_the_vote_counts(gw: Gateway, clock: FrozenClock) -> None:
    """A finance director's approval with a valid, unused code approves the request."""
    approval_id = await at_finance_stage(gw)
    totp = await enrol_totp(gw, "dana", clock)
    clock.advance(seconds=30)
    stored = await gw.approvals.decide(
        approval_id, person="dana", decision="approve", proof=VoteProof(totp=totp.at(clock()))
    )
    assert stored.approval.state.value == "approved"
    assert stored.approval.votes[-1].factor == "totp"
    votes = [r for r in await audit_rows(gw, "vote") if r["approver"] == "dana"]
    assert votes[0]["data"]["factor"] == "totp"
    assert totp.at(clock()) not in str(votes[0]["data"])


async def test_a_vote_without_the_factor_is_refused_and_audited(
    gw: Gateway, clock: FrozenClock
) -> None:
    """Without a code or a fresh session factor the vote is refused with mfa_required."""
    approval_id = await at_finance_stage(gw)
    await enrol_totp(gw, "dana", clock)
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(approval_id, person="dana", decision="approve")
    assert refused.value.code == "mfa_required"
    assert (await gw.approvals.get(approval_id)).approval.state.value == "pending"
    rejected = await audit_rows(gw, "vote.rejected")
    assert [r["data"]["code"] for r in rejected] == ["mfa_required"]


async def test_a_deny_needs_the_factor_too(gw: Gateway, clock: FrozenClock) -> None:
    """A denial on an MFA stage without proof does not count either."""
    approval_id = await at_finance_stage(gw)
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(approval_id, person="dana", decision="deny", comment="no")
    assert refused.value.code == "mfa_required"


async def test_a_wrong_code_is_refused_and_audited(gw: Gateway, clock: FrozenClock) -> None:
    """A code that is not the current one is refused (mfa_invalid) and the refusal audited."""
    approval_id = await at_finance_stage(gw)
    totp = await enrol_totp(gw, "dana", clock)
    clock.advance(seconds=30)
    right = totp.at(clock())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for code in (wrong, "12ab56", "1234567"):
        with pytest.raises(VoteRefused) as refused:
            await gw.approvals.decide(
                approval_id, person="dana", decision="approve", proof=VoteProof(totp=code)
            )
        assert refused.value.code == "mfa_invalid"
    rejected = await audit_rows(gw, "vote.rejected")
    assert [r["data"]["code"] for r in rejected] == ["mfa_invalid"] * 3
    assert all(wrong not in str(r["data"]) for r in rejected)
    assert (await gw.approvals.get(approval_id)).approval.state.value == "pending"


async def test_a_replayed_code_is_refused(gw: Gateway, clock: FrozenClock) -> None:
    """A code already accepted (here on another request) cannot be used again, even within
    its 30 seconds; an older step is refused too; the next step's code works."""
    first = await at_finance_stage(gw)
    second = await at_finance_stage(gw)
    totp = await enrol_totp(gw, "dana", clock)
    clock.advance(seconds=30)
    code = totp.at(clock())
    await gw.approvals.decide(first, person="dana", decision="approve", proof=VoteProof(totp=code))
    clock.advance(seconds=5)
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(
            second, person="dana", decision="approve", proof=VoteProof(totp=code)
        )
    assert refused.value.code == "mfa_replayed"
    older = totp.at(clock(), counter_offset=-1)  # inside the drift window, but already past
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(
            second, person="dana", decision="approve", proof=VoteProof(totp=older)
        )
    assert refused.value.code == "mfa_replayed"
    clock.advance(seconds=30)
    stored = await gw.approvals.decide(
        second, person="dana", decision="approve", proof=VoteProof(totp=totp.at(clock()))
    )
    assert stored.approval.state.value == "approved"
    rejected = await audit_rows(gw, "vote.rejected")
    assert [r["data"]["code"] for r in rejected] == ["mfa_replayed", "mfa_replayed"]


async def test_a_person_without_a_factor_is_told_to_enrol(gw: Gateway) -> None:
    """A code from someone with no authenticator enrolled is refused with mfa_not_enrolled."""
    approval_id = await at_finance_stage(gw)
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(
            approval_id, person="erin", decision="approve", proof=VoteProof(totp="123456")
        )
    assert refused.value.code == "mfa_not_enrolled"


async def test_a_fresh_session_factor_counts_and_a_stale_one_does_not(
    gw: Gateway, clock: FrozenClock
) -> None:
    """A factor verified in the session counts for `fresh_for` seconds (300), then no more."""
    approval_id = await at_finance_stage(gw)
    await enrol_totp(gw, "dana", clock)
    await gw.writer.run(lambda tx: mfa.mark_session(tx.conn, "sess1", "dana", "totp", clock()))
    await gw.writer.run(lambda tx: mfa.record_geo(tx.conn, "sess1", "dana", "US", clock()))
    clock.advance(seconds=301)
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(
            approval_id, person="dana", decision="approve", proof=VoteProof(session_id="sess1")
        )
    assert refused.value.code == "mfa_required"
    await gw.writer.run(lambda tx: mfa.mark_session(tx.conn, "sess1", "dana", "totp", clock()))
    clock.advance(seconds=299)
    stored = await gw.approvals.decide(
        approval_id, person="dana", decision="approve", proof=VoteProof(session_id="sess1")
    )
    assert stored.approval.state.value == "approved"


async def test_secrets_are_encrypted_with_a_configured_key(
    tmp_path: Path, db_url: str, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CLEARANCE_MFA_KEY set the stored secret is ciphertext, and codes still verify."""
    from cryptography.fernet import Fernet

    monkeypatch.setenv("CLEARANCE_MFA_KEY", Fernet.generate_key().decode())
    gateway = open_mfa_gateway(tmp_path, db_url, clock)
    try:
        totp = await enrol_totp(gateway, "dana", clock)
        stored = await read(
            gateway.db, lambda c: c.execute(select(mfa_factors.c.secret)).scalar_one()
        )
        assert stored.startswith("fernet:") and totp.secret not in stored
        approval_id = await at_finance_stage(gateway)
        clock.advance(seconds=30)
        done = await gateway.approvals.decide(
            approval_id, person="dana", decision="approve", proof=VoteProof(totp=totp.at(clock()))
        )
        assert done.approval.state.value == "approved"
        monkeypatch.delenv("CLEARANCE_MFA_KEY")
        other = await at_finance_stage(gateway)
        gateway.approvals.mfa_settings = mfa.MfaSettings  # a server without the key
        clock.advance(seconds=30)
        with pytest.raises(VoteRefused) as refused:
            await gateway.approvals.decide(
                other, person="dana", decision="approve", proof=VoteProof(totp=totp.at(clock()))
            )
        assert refused.value.code == "mfa_unavailable"
    finally:
        await gateway.aclose()


async def test_enrolment_needs_a_right_first_code(gw: Gateway, clock: FrozenClock) -> None:
    """A wrong first code leaves the factor unconfirmed; a confirmed one blocks re-enrolment
    until it is reset."""
    settings = gw.approvals.mfa_settings()
    started = await gw.writer.run(lambda tx: mfa.start_totp(tx.conn, "erin", clock(), settings))
    right = pyotp.TOTP(started.secret).at(clock())
    wrong = f"{(int(right) + 7) % 1_000_000:06d}"

    def confirm(code: str) -> Any:
        def work(tx: Any) -> str | None:
            try:
                mfa.confirm_totp(tx.conn, "erin", code, clock(), settings)
            except mfa.MfaError as exc:
                return exc.code
            return None

        return gw.writer.run(work)

    assert await confirm(wrong) == "mfa_invalid"
    assert not await read(gw.db, lambda c: mfa.has_factor(c, "erin", "totp"))
    assert await confirm(right) is None
    assert await read(gw.db, lambda c: mfa.has_factor(c, "erin", "totp"))
    assert started.uri.startswith("otpauth://totp/") and "issuer=Clearance" in started.uri
    with pytest.raises(mfa.MfaError) as again:
        await gw.writer.run(lambda tx: mfa.start_totp(tx.conn, "erin", clock(), settings))
    assert again.value.code == "mfa_already_enrolled"
    assert await gw.writer.run(lambda tx: mfa.reset(tx.conn, "erin")) == 1
    assert not await read(gw.db, lambda c: mfa.has_factor(c, "erin"))


async def test_a_code_does_not_satisfy_a_security_key_stage(
    gw: Gateway, clock: FrozenClock
) -> None:
    """On an `mfa: webauthn` stage an authenticator code is refused (mfa_method)."""
    from .helpers import ROTATE

    result = await gw.check(ROTATE)
    assert result.approval is not None
    totp = await enrol_totp(gw, "alice", clock)
    clock.advance(seconds=30)
    code = totp.at(clock())
    with pytest.raises(VoteRefused) as refused:
        await gw.approvals.decide(
            result.approval.approval.id, person="alice", decision="approve",
            proof=VoteProof(totp=code),
        )  # fmt: skip
    assert refused.value.code == "mfa_method"


async def test_wrong_codes_lock_the_factor_for_a_while(gw: Gateway, clock: FrozenClock) -> None:
    """Five wrong codes in a row lock the authenticator for five minutes: even the right code
    is refused (mfa_locked) until then, and accepted after."""
    approval_id = await at_finance_stage(gw)
    totp = await enrol_totp(gw, "dana", clock)
    clock.advance(seconds=30)
    wrong = f"{(int(totp.at(clock())) + 3) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(VoteRefused) as refused:
            await gw.approvals.decide(
                approval_id, person="dana", decision="approve", proof=VoteProof(totp=wrong)
            )
        assert refused.value.code == "mfa_invalid"
    with pytest.raises(VoteRefused) as locked:
        await gw.approvals.decide(
            approval_id, person="dana", decision="approve", proof=VoteProof(totp=totp.at(clock()))
        )
    assert locked.value.code == "mfa_locked"
    clock.advance(minutes=5)
    done = await gw.approvals.decide(
        approval_id, person="dana", decision="approve", proof=VoteProof(totp=totp.at(clock()))
    )
    assert done.approval.state.value == "approved"


async def test_one_code_sent_twice_at_once_counts_once(gw: Gateway, clock: FrozenClock) -> None:
    """Two votes racing with the same code (on two requests) — exactly one is accepted."""
    first, second = await at_finance_stage(gw), await at_finance_stage(gw)
    totp = await enrol_totp(gw, "dana", clock)
    clock.advance(seconds=30)
    code = totp.at(clock())
    outcomes = await asyncio.gather(
        *(
            gw.approvals.decide(a, person="dana", decision="approve", proof=VoteProof(totp=code))
            for a in (first, second)
        ),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, VoteRefused)]
    assert len(refused) == 1 and refused[0].code == "mfa_replayed"
    states = {(await gw.approvals.get(a)).approval.state.value for a in (first, second)}
    assert states == {"approved", "pending"}
