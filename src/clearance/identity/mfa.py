"""Step-up second factors for approvers: TOTP enrolment and verification, session freshness.

A rule or stage that says `mfa: totp | webauthn | any` makes each vote on it count only with a
*fresh* second factor (see `establish`):

- a TOTP code submitted with the vote itself (API: the `totp` field of a decision; web inbox:
  the code field beside Approve/Deny), or
- a factor verified in *this* inbox session within `fresh_for` seconds (default 300): a TOTP
  code on the inbox's verify page, or a WebAuthn assertion (`clearance.identity.webauthn`).

TOTP (RFC 6238, via pyotp): 6 digits, 30-second steps, one step of clock drift either way.
Each code is single-use: the newest accepted time-step is kept per person (`last_step`) and a
code for that step or an earlier one is refused as a replay, also across approvals and
processes (the update is a compare-and-set in the vote's own transaction).

Secrets are encrypted with Fernet when `server.mfa.secret_key` (or the environment variable
`CLEARANCE_MFA_KEY`) holds a Fernet key — set one in production; without it they are stored
as they are, and a warning is logged at enrolment. Either way a secret is never logged,
exported or written to the audit trail, and no API returns it after enrolment.

`require_context: {approver_geo: [US, …]}` is checked against the approver's location, read
from a trusted header that the reverse proxy sets (`server.geo_header`, e.g. X-Client-Geo):
recorded on the inbox session at sign-in and read again on each vote; a vote whose location
is unknown, or differs from the one recorded at sign-in, is refused (fail closed).

Plain functions over a SQLAlchemy *sync* `Connection`, like the other identity modules.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
import structlog
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import ColumnElement, Connection, and_, delete, insert, or_, select, update

from ..policy.model import ResolvedStage
from ..store.mfa_admin_tables import mfa_challenges, mfa_factors, session_factors

__all__ = [
    "DEFAULT_FRESH_FOR_S",
    "Established",
    "FactorInfo",
    "MfaError",
    "MfaSettings",
    "SessionFactor",
    "TotpEnrolment",
    "VoteProof",
    "confirm_totp",
    "establish",
    "factors",
    "has_factor",
    "header_geo",
    "mark_session",
    "method_satisfies",
    "record_geo",
    "reset",
    "session_state",
    "settings_provider",
    "start_totp",
    "svg_qr",
    "terminal_qr",
    "verify_totp",
]

log = structlog.get_logger("clearance.mfa")

DEFAULT_FRESH_FOR_S = 300
TOTP_DIGITS = 6
TOTP_PERIOD_S = 30
TOTP_DRIFT_STEPS = 1  # one step either way: clocks of phones drift
MAX_FAILURES = 5  # wrong codes in a row before the factor locks…
LOCKOUT = timedelta(minutes=5)  # …for this long (a guess in a million, five per 5 minutes)
_PLAIN = "plain:"
_FERNET = "fernet:"


class MfaError(Exception):
    """A second factor that does not pass. `code` is stable (it becomes the vote's refusal
    code), `message` is for people and never contains a secret or the submitted code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class MfaSettings:
    """`server.mfa` and `server.geo_header` of the policy's settings."""

    fresh_for_s: int = DEFAULT_FRESH_FOR_S
    issuer: str = "Clearance"
    secret_key: str | None = None
    geo_header: str | None = None
    public_url: str = "http://127.0.0.1:8750"
    rp_id: str | None = None  # WebAuthn relying party id: the public URL's host by default
    challenge_ttl_s: int = 300

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MfaSettings:
        """Read the settings of a loaded policy (`Policy.settings`); raises ValueError."""
        server = settings.get("server") or {}
        conf = server.get("mfa") or {}
        if not isinstance(conf, Mapping):
            raise ValueError("server.mfa must be a mapping")
        unknown = set(conf) - {"fresh_for", "issuer", "secret_key", "rp_id", "challenge_ttl"}
        if unknown:
            raise ValueError(f"server.mfa: unknown keys {', '.join(sorted(unknown))}")
        from ..policy.schema import parse_duration

        key = conf.get("secret_key") or os.environ.get("CLEARANCE_MFA_KEY") or None
        if key is not None:
            try:
                Fernet(str(key).encode())
            except (ValueError, TypeError):
                raise ValueError(
                    "server.mfa.secret_key is not a Fernet key (32 url-safe base64 bytes; "
                    'make one with python -c "from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())")'
                ) from None
        geo = server.get("geo_header")
        return cls(
            fresh_for_s=parse_duration(conf.get("fresh_for", DEFAULT_FRESH_FOR_S)),
            issuer=str(conf.get("issuer") or "Clearance"),
            secret_key=str(key) if key else None,
            geo_header=str(geo) if geo else None,
            public_url=str(server.get("public_url") or "http://127.0.0.1:8750"),
            rp_id=str(conf["rp_id"]) if conf.get("rp_id") else None,
            challenge_ttl_s=parse_duration(conf.get("challenge_ttl", 300)),
        )

    @property
    def fresh_for(self) -> timedelta:
        return timedelta(seconds=self.fresh_for_s)


def settings_provider(settings: Callable[[], Mapping[str, Any]]) -> Callable[[], MfaSettings]:
    """`MfaSettings` of the current policy settings, read again only when they change (a
    reload). Settings that do not read raise MfaError(`mfa_unavailable`): votes that need a
    second factor are then refused, never let through."""
    cache: dict[str, Any] = {}

    def get() -> MfaSettings:
        current = settings()
        if cache.get("source") is not current:
            try:
                parsed = MfaSettings.from_settings(current)
            except ValueError as exc:
                raise MfaError(
                    "mfa_unavailable", f"second factors are misconfigured: {exc}"
                ) from None
            cache.update(source=current, parsed=parsed)
        value: MfaSettings = cache["parsed"]
        return value

    return get


def header_geo(headers: Mapping[str, str], settings: MfaSettings) -> str | None:
    """The approver's location from the trusted header (`server.geo_header`), if configured."""
    if not settings.geo_header:
        return None
    return normalise_geo(headers.get(settings.geo_header))


# ---------------------------------------------------------------------------------------------
# Secrets at rest


def seal(secret: str, settings: MfaSettings) -> str:
    """The stored form of a TOTP secret: encrypted with the configured key, if there is one."""
    if settings.secret_key:
        return _FERNET + Fernet(settings.secret_key.encode()).encrypt(secret.encode()).decode()
    log.warning("mfa_secret_unencrypted", hint="set server.mfa.secret_key (a Fernet key)")
    return _PLAIN + secret


def unseal(stored: str, settings: MfaSettings) -> str:
    if stored.startswith(_PLAIN):
        return stored[len(_PLAIN) :]
    if stored.startswith(_FERNET):
        if not settings.secret_key:
            raise MfaError(
                "mfa_unavailable",
                "second factors are encrypted but server.mfa.secret_key is not configured here",
            )
        try:
            return Fernet(settings.secret_key.encode()).decrypt(stored[len(_FERNET) :]).decode()
        except InvalidToken:
            raise MfaError(
                "mfa_unavailable", "the second factor cannot be read with this server's key"
            ) from None
    raise MfaError("mfa_unavailable", "the stored second factor is in an unknown format")


# ---------------------------------------------------------------------------------------------
# Factors


@dataclass(frozen=True, slots=True)
class FactorInfo:
    """A factor as people see it: never the secret."""

    id: str
    kind: str
    label: str | None
    created_at: datetime
    confirmed_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """A TOTP factor waiting for its first code: show `uri` (as a QR code) once."""

    factor_id: str
    secret: str
    uri: str


def _factor_id() -> str:
    return "mfa_" + secrets.token_hex(10)


def factors(conn: Connection, person_id: str) -> list[FactorInfo]:
    rows = conn.execute(
        select(mfa_factors)
        .where(mfa_factors.c.person_id == person_id)
        .order_by(mfa_factors.c.created_at)
    ).mappings()
    return [
        FactorInfo(
            r["id"], r["kind"], r["label"], r["created_at"], r["confirmed_at"], r["last_used_at"]
        )
        for r in rows
    ]


def has_factor(conn: Connection, person_id: str, kind: str | None = None) -> bool:
    """Whether `person_id` has a confirmed factor (of `kind`, when given)."""
    query = select(mfa_factors.c.id).where(
        and_(mfa_factors.c.person_id == person_id, mfa_factors.c.confirmed_at.is_not(None))
    )
    if kind is not None:
        query = query.where(mfa_factors.c.kind == kind)
    return conn.execute(query.limit(1)).first() is not None


def start_totp(
    conn: Connection,
    person_id: str,
    now: datetime,
    settings: MfaSettings,
    *,
    label: str | None = None,
) -> TotpEnrolment:
    """Begin enrolling a TOTP factor (a new secret, unconfirmed until `confirm_totp`).

    A person has at most one TOTP factor: with a confirmed one already, this raises
    `MfaError("mfa_already_enrolled")` (reset it first); an unconfirmed one is replaced."""
    if has_factor(conn, person_id, "totp"):
        raise MfaError(
            "mfa_already_enrolled",
            f"{person_id} already has an authenticator app; reset it first "
            "(clearance users mfa reset)",
        )
    conn.execute(delete(mfa_factors).where(_totp_of(person_id, confirmed=False)))
    secret = pyotp.random_base32()
    factor_id = _factor_id()
    conn.execute(
        insert(mfa_factors).values(
            id=factor_id, person_id=person_id, kind="totp", label=label or "authenticator app",
            secret=seal(secret, settings), created_at=now,
        )
    )  # fmt: skip
    uri = pyotp.TOTP(secret).provisioning_uri(name=person_id, issuer_name=settings.issuer)
    return TotpEnrolment(factor_id, secret, uri)


def confirm_totp(
    conn: Connection, person_id: str, code: str, now: datetime, settings: MfaSettings
) -> None:
    """Finish enrolment with a first code from the app (that code is used up)."""
    row = (
        conn.execute(select(mfa_factors).where(_totp_of(person_id, confirmed=False)))
        .mappings()
        .first()
    )
    if row is None:
        raise MfaError("mfa_not_enrolling", f"{person_id} has no authenticator app to confirm")
    step = _match(unseal(row["secret"], settings), code, now)
    conn.execute(
        update(mfa_factors)
        .where(mfa_factors.c.id == row["id"])
        .values(confirmed_at=now, last_step=step, last_used_at=now)
    )


def _totp_of(person_id: str, *, confirmed: bool) -> ColumnElement[bool]:
    """The person's authenticator-app factor: the confirmed one, or the one being enrolled."""
    confirmed_at = mfa_factors.c.confirmed_at
    return and_(
        mfa_factors.c.person_id == person_id,
        mfa_factors.c.kind == "totp",
        confirmed_at.is_not(None) if confirmed else confirmed_at.is_(None),
    )


def _match(secret: str, code: str, now: datetime) -> int:
    """The time-step whose code `code` is (within the allowed drift); MfaError otherwise."""
    code = (code or "").strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        raise MfaError("mfa_invalid", f"an authenticator code is {TOTP_DIGITS} digits")
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_S)
    current = totp.timecode(now)
    found: int | None = None
    for offset in range(-TOTP_DRIFT_STEPS, TOTP_DRIFT_STEPS + 1):
        step = current + offset
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode(), code.encode()):
            found = step  # keep looping: the comparison takes the same time for every code
    if found is None:
        raise MfaError("mfa_invalid", "the authenticator code is wrong or too old")
    return found


def verify_totp(
    conn: Connection, person_id: str, code: str, now: datetime, settings: MfaSettings
) -> int:
    """Check a code against the person's confirmed TOTP factor and use it up.

    Returns the accepted time-step. Raises MfaError: `mfa_not_enrolled`, `mfa_invalid`,
    `mfa_replayed` (this code, or a newer one, was already accepted: codes are single-use), or
    `mfa_locked` (`MAX_FAILURES` wrong codes in a row lock the factor for `LOCKOUT`).
    The use is recorded in the caller's transaction: if it rolls back, so does the use."""
    row = (
        conn.execute(select(mfa_factors).where(_totp_of(person_id, confirmed=True)))
        .mappings()
        .first()
    )
    if row is None:
        raise MfaError(
            "mfa_not_enrolled",
            f"{person_id} has no authenticator app enrolled; enrol one in the web inbox "
            "(Security) or with `clearance users mfa enroll`",
        )
    locked = row["locked_until"]
    if locked is not None and now < locked:
        raise MfaError(
            "mfa_locked",
            f"too many wrong authenticator codes; try again after {locked:%H:%M} UTC",
        )
    try:
        step = _match(unseal(row["secret"], settings), code, now)
    except MfaError as exc:
        if exc.code == "mfa_invalid":
            _count_failure(conn, row["id"], int(row["failures"]), now)
        raise
    last = row["last_step"]
    if last is not None and step <= last:
        raise MfaError(
            "mfa_replayed", "this authenticator code was already used; wait for the next one"
        )
    used = conn.execute(
        update(mfa_factors)
        .where(
            and_(
                mfa_factors.c.id == row["id"],
                or_(mfa_factors.c.last_step.is_(None), mfa_factors.c.last_step < step),
            )
        )
        .values(last_step=step, last_used_at=now, failures=0, locked_until=None)
    )
    if used.rowcount != 1:  # another vote used this code (or a newer one) at the same moment
        raise MfaError(
            "mfa_replayed", "this authenticator code was already used; wait for the next one"
        )
    return step


def _count_failure(conn: Connection, factor_id: str, failures: int, now: datetime) -> None:
    """One more wrong code; the `MAX_FAILURES`th locks the factor for `LOCKOUT`. (The caller
    commits this even though it refuses the vote: a refused vote's transaction commits.)"""
    failures += 1
    values: dict[str, Any] = {"failures": failures}
    if failures >= MAX_FAILURES:
        values = {"failures": 0, "locked_until": now + LOCKOUT}
        log.warning("mfa_locked", factor=factor_id)
    conn.execute(update(mfa_factors).where(mfa_factors.c.id == factor_id).values(**values))


def reset(conn: Connection, person_id: str) -> int:
    """Remove every factor of `person_id` and forget what their sessions proved."""
    removed = conn.execute(delete(mfa_factors).where(mfa_factors.c.person_id == person_id))
    conn.execute(
        update(session_factors)
        .where(session_factors.c.person_id == person_id)
        .values(method=None, verified_at=None)
    )
    conn.execute(delete(mfa_challenges).where(mfa_challenges.c.person_id == person_id))
    return int(removed.rowcount)


# ---------------------------------------------------------------------------------------------
# Sessions


@dataclass(frozen=True, slots=True)
class SessionFactor:
    """What an inbox session proved: a factor and when, and the location at sign-in."""

    method: str | None
    verified_at: datetime | None
    geo: str | None

    def fresh(self, now: datetime, settings: MfaSettings) -> str | None:
        """The method verified within `fresh_for` of `now`, else None."""
        if self.method is None or self.verified_at is None:
            return None
        age = now - self.verified_at
        if age < timedelta(0) or age > settings.fresh_for:
            return None
        return self.method


def session_state(conn: Connection, session_id: str) -> SessionFactor | None:
    row = (
        conn.execute(select(session_factors).where(session_factors.c.session_id == session_id))
        .mappings()
        .first()
    )
    if row is None:
        return None
    return SessionFactor(row["method"], row["verified_at"], row["geo"])


def _upsert(
    conn: Connection, session_id: str, person_id: str, now: datetime, **values: Any
) -> None:
    done = conn.execute(
        update(session_factors)
        .where(
            and_(
                session_factors.c.session_id == session_id,
                session_factors.c.person_id == person_id,
            )
        )
        .values(updated_at=now, **values)
    )
    if done.rowcount == 0:
        conn.execute(
            insert(session_factors).values(
                session_id=session_id, person_id=person_id, updated_at=now, **values
            )
        )


def mark_session(
    conn: Connection, session_id: str, person_id: str, method: str, now: datetime
) -> None:
    """The session just proved `method`: it is fresh for `fresh_for` from `now`."""
    _upsert(conn, session_id, person_id, now, method=method, verified_at=now)


def record_geo(
    conn: Connection, session_id: str, person_id: str, geo: str | None, now: datetime
) -> None:
    """Remember where the person signed in (the trusted header's value, or unknown)."""
    _upsert(conn, session_id, person_id, now, geo=normalise_geo(geo))


def normalise_geo(value: str | None) -> str | None:
    """A header value as a location: trimmed, upper-case, at most 64 characters; else None."""
    if value is None:
        return None
    value = value.strip().upper()
    return value[:64] if value else None


# ---------------------------------------------------------------------------------------------
# A vote's proof


@dataclass(frozen=True, slots=True)
class VoteProof:
    """What came with a vote: a code typed with it, the inbox session it came from, and the
    approver's location from the trusted header of this very request."""

    totp: str | None = None
    session_id: str | None = None
    geo: str | None = None


@dataclass(frozen=True, slots=True)
class Established:
    """The second factor and location a vote carries, once verified."""

    factor: str | None = None
    geo: str | None = None


def method_satisfies(required: str | None, method: str | None) -> bool:
    """Whether a verified `method` meets a stage's `mfa:` (`any` takes either)."""
    if required is None:
        return True
    if method is None:
        return False
    return required == "any" or required == method


def establish(
    conn: Connection,
    person_id: str,
    stage: ResolvedStage,
    proof: VoteProof | None,
    now: datetime,
    settings: MfaSettings,
) -> Established:
    """Verify what `proof` claims for a vote on `stage`, inside the vote's transaction.

    A TOTP code is checked and used up here (MfaError on a wrong or replayed code); a session
    contributes its fresh factor and its sign-in location. What is missing stays None, and
    the workflow refuses the vote (`mfa_required`, `context_required`)."""
    proof = proof or VoteProof()
    factor: str | None = None
    state: SessionFactor | None = None
    if proof.session_id:
        state = session_state(conn, proof.session_id)
    if stage.mfa is not None:
        if proof.totp:
            if not method_satisfies(stage.mfa, "totp"):
                raise MfaError(
                    "mfa_method",
                    f"this stage needs a {stage.mfa} second factor; an authenticator code "
                    "does not satisfy it",
                )
            verify_totp(conn, person_id, proof.totp, now, settings)
            factor = "totp"
        elif state is not None:
            fresh = state.fresh(now, settings)
            factor = fresh if method_satisfies(stage.mfa, fresh) else None
    geo = normalise_geo(proof.geo)
    if state is not None and state.geo is not None and geo is not None and state.geo != geo:
        geo = None  # the session moved since sign-in: location unknown (fail closed)
    if state is not None and state.geo is None and proof.session_id:
        geo = None  # an inbox session signed in without a location: unknown
    return Established(factor, geo)


# ---------------------------------------------------------------------------------------------
# QR codes


def svg_qr(uri: str) -> str:
    """An inline SVG image of `uri` (for the web inbox; no script, no external request)."""
    import io

    import qrcode  # type: ignore[import-untyped]
    import qrcode.image.svg  # type: ignore[import-untyped]

    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    out = io.BytesIO()
    image.save(out)
    text = out.getvalue().decode()
    return text[text.index("<svg") :] if "<svg" in text else text


def terminal_qr(uri: str, write: Callable[[str], Any]) -> None:
    """Print `uri` as a QR code in a terminal (two rows of modules per line)."""
    import io

    import qrcode

    qr = qrcode.QRCode(border=2)
    qr.add_data(uri)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    write(out.getvalue())


def random_challenge() -> bytes:
    return secrets.token_bytes(32)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
