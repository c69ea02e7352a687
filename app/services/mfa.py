"""The second factor: TOTP (RFC 6238) with single-use recovery codes, and the two-step login.

- TOTP: SHA-1, 6 digits, 30 s steps, one step either side (pyotp). A code is accepted at most
  once: the last accepted step is stored per user and only a later one is taken, by one
  conditional UPDATE, so a replay is refused across workers and instances (RFC 6238 5.2).
- Recovery codes (NIST 800-63B 5.1.2 look-up secrets): 10, shown once. Each is a 4-character
  lookup id kept in clear plus a 12-character secret part (60 bits) kept as argon2id, so
  checking one costs one hash; a used code is spent by a conditional UPDATE too.
- Every code check counts against the account's throttle, like a password (ASVS 2.2.1): the
  attempt is counted before the code is compared, and settled only when every secret the
  request needed was right.
- The seed is encrypted at rest (app/services/secretbox.py). Without ENCRYPTION_KEY, TOTP
  cannot be set up or checked (503 mfa_unavailable); recovery codes still work.
- amr: a login finished with TOTP or with a recovery code is ["pwd", "otp"]. RFC 8176 has no
  value for look-up secrets; "otp" is the closest (a recovery code is a one-time secret that
  the user holds), and "kba" would be wrong (nothing is known about the user). Relying parties
  that ask for a second factor get one either way; which one is in the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pyotp
import segno
from flask import current_app
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import (
    Conflict,
    Forbidden,
    InvalidMfaCode,
    InvalidMfaToken,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    MfaNotPending,
    MfaRequired,
    MfaUnavailable,
)
from app.extensions import db, execute_dml
from app.models import MfaChallenge, RecoveryCode, TotpCredential, User, utcnow
from app.services import audit, credentials, issuing, passwords, secretbox, sessions, throttle, token_codec, users

METHODS = ["totp", "recovery_code"]
CHALLENGE_LIFETIME = timedelta(minutes=5)
RECOVERY_CODE_COUNT = 10
LOOKUP_LENGTH = 4
VALID_WINDOW = 1  # RFC 6238 5.2: one step of clock drift either side


def clock() -> float:
    """Now, in seconds since the epoch: the time TOTP codes are judged at (tests set it)."""
    return time.time()


# --- TOTP ------------------------------------------------------------------------------------


def _totp(secret: str) -> pyotp.TOTP:
    """RFC 6238 defaults: SHA-1, 6 digits, 30 seconds."""
    return pyotp.TOTP(secret)


def matching_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step within the window whose code is `code`, or None.

    Every candidate is compared, in constant time each (hmac.compare_digest, as pyotp's own
    verify does), so the timing tells neither whether nor where a code matched.
    """
    totp = _totp(secret)
    current = totp.timecode(clock() if now is None else now)
    found = None
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            found = step
    return found


def _claim_step(user_id: uuid.UUID, step: int) -> bool:
    """Record `step` as the user's last accepted one if it is later than the last: at most one request wins."""
    claimed = execute_dml(
        update(TotpCredential)
        .where(
            TotpCredential.user_id == user_id,
            or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
        )
        .values(last_step=step)
        .execution_options(synchronize_session=False)
    )
    return claimed == 1


def _secret_of(user: User, *, confirmed: bool = True) -> str | None:
    """The user's TOTP seed in clear (confirmed or pending), or None. Raises MfaUnavailable."""
    row = db.session.get(TotpCredential, user.id)
    if row is None or (row.confirmed_at is not None) != confirmed:
        return None
    return secretbox.decrypt(row.secret)


# --- recovery codes --------------------------------------------------------------------------


def _normalize_recovery_code(text: str) -> str:
    """Lower case, without the dashes and spaces people type."""
    return "".join(text.split()).replace("-", "").lower()


def _replace_recovery_codes(user: User) -> list[str]:
    """Void the user's recovery codes and make RECOVERY_CODE_COUNT new ones; return them, once."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes: list[str] = []
    lookups: set[str] = set()
    while len(codes) < RECOVERY_CODE_COUNT:
        # 80 bits from the CSPRNG as 16 base32 characters (no 0/1/8/9: nothing to mistype).
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        lookup, secret = raw[:LOOKUP_LENGTH], raw[LOOKUP_LENGTH:]
        if lookup in lookups:
            continue
        lookups.add(lookup)
        db.session.add(
            RecoveryCode(
                user_id=user.id, lookup=lookup, secret_hash=passwords.hash_password(secret), created_at=utcnow()
            )
        )
        codes.append("-".join(raw[i : i + 4] for i in range(0, len(raw), 4)))
    return codes


def _spend_recovery_code(user: User, text: str) -> bool:
    """Spend one of the user's unused recovery codes if `text` is one; the caller commits."""
    raw = _normalize_recovery_code(text)
    lookup, secret = raw[:LOOKUP_LENGTH], raw[LOOKUP_LENGTH:]
    row = db.session.execute(
        select(RecoveryCode.id, RecoveryCode.secret_hash).where(
            RecoveryCode.user_id == user.id, RecoveryCode.lookup == lookup, RecoveryCode.used_at.is_(None)
        )
    ).first()
    if row is None:
        passwords.burn_verification(secret)  # the same cost whether or not the lookup id exists
        return False
    matches, _ = passwords.verify_password(row.secret_hash, secret)
    if not matches:
        return False
    spent = execute_dml(
        update(RecoveryCode)
        .where(RecoveryCode.id == row.id, RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return spent == 1


def remaining_recovery_codes(user: User) -> int:
    """How many unused recovery codes the user has."""
    return len(
        db.session.scalars(
            select(RecoveryCode.id).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        ).all()
    )


# --- checking a second factor ----------------------------------------------------------------


def _check_factor(user: User, *, secret: str | None, code: str | None, recovery_code: str | None) -> str:
    """Check and spend a TOTP code (against `secret`) or a recovery code; return the method used.

    The caller has counted the attempt (throttle.begin_attempt) and settles it after commit
    preparations; the spend is in the current transaction. Raises InvalidMfaCode.
    """
    if code is not None:
        step = matching_step(secret, code) if secret is not None else None
        if step is not None and _claim_step(user.id, step):
            return "totp"
        reason = "wrong_code" if step is None else "replayed_code"
        method = "totp"
    else:
        if _spend_recovery_code(user, recovery_code or ""):
            return "recovery_code"
        reason, method = "wrong_recovery_code", "recovery_code"
    # What was typed is never recorded: a code near the right one tells an attacker something.
    audit.record_now("mfa_failed", actor_id=user.id, target_id=user.id, method=method, reason=reason)
    raise InvalidMfaCode()


def _settle(user: User) -> None:
    """Every secret of the request was right: forget the account's failures and commit the change."""
    throttle.record_success(credentials.subject(user, ""))
    db.session.commit()  # record_success commits only while the throttle is on


def _factor_used(user: User, method: str) -> None:
    """Audit the use of a recovery code (a user running out of them should make new ones)."""
    if method == "recovery_code":
        audit.record("recovery_code_used", actor_id=user.id, target_id=user.id)


# --- enrolment and management ----------------------------------------------------------------


def start_enrolment(user: User, *, password: str) -> dict[str, Any]:
    """Make a new TOTP seed, pending until confirmed; return it with its otpauth URI and QR code.

    Any earlier pending enrolment is replaced. Raises MfaAlreadyEnabled, MfaUnavailable,
    InvalidCredentials, TooManyAttempts.
    """
    if user.mfa_enabled:
        raise MfaAlreadyEnabled()
    if not secretbox.available():
        raise MfaUnavailable()
    credentials.require_password(user, password)
    secret = pyotp.random_base32()  # 32 characters = 160 bits, RFC 4226 4 R6's recommended length
    db.session.execute(delete(TotpCredential).where(TotpCredential.user_id == user.id))
    db.session.add(TotpCredential(user_id=user.id, secret=secretbox.encrypt(secret), created_at=utcnow()))
    audit.record("mfa_enrolment_started", actor_id=user.id, target_id=user.id)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("Another enrolment started at the same moment; try again.") from None
    uri = _totp(secret).provisioning_uri(name=user.email, issuer_name=current_app.config["MFA_ISSUER"])
    return {"secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)}


def qr_svg(text: str) -> str:
    """A QR code of `text` as a standalone SVG document (segno: no image libraries)."""
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="svg", xmldecl=False, scale=4, border=4, nl=False)
    return buffer.getvalue().decode()


def confirm_enrolment(user: User, *, code: str) -> list[str]:
    """Turn the pending enrolment on with its first code; return the recovery codes (shown only now).

    Raises MfaAlreadyEnabled, MfaNotPending, InvalidMfaCode, MfaUnavailable, TooManyAttempts.
    """
    if user.mfa_enabled:
        raise MfaAlreadyEnabled()
    secret = _secret_of(user, confirmed=False)
    if secret is None:
        raise MfaNotPending()
    throttle.begin_attempt(credentials.subject(user, ""))
    _check_factor(user, secret=secret, code=code, recovery_code=None)
    db.session.execute(update(TotpCredential).where(TotpCredential.user_id == user.id).values(confirmed_at=utcnow()))
    user.mfa_enabled = True
    codes = _replace_recovery_codes(user)
    notify(user, "mfa_enabled", actor_id=user.id)
    _settle(user)
    return codes


def disable(user: User, *, password: str, code: str | None = None, recovery_code: str | None = None) -> None:
    """Turn the second factor off with the password and a code (or a recovery code).

    Raises MfaNotEnabled, InvalidCredentials, InvalidMfaCode, MfaUnavailable, TooManyAttempts.
    """
    if not user.mfa_enabled:
        raise MfaNotEnabled()
    secret = _secret_of(user) if code is not None else None
    credentials.require_password(user, password, settle=False)
    method = _check_factor(user, secret=secret, code=code, recovery_code=recovery_code)
    _factor_used(user, method)
    _remove(user)
    notify(user, "mfa_disabled", actor_id=user.id, method=method)
    _settle(user)


def regenerate_recovery_codes(user: User, *, password: str, code: str) -> list[str]:
    """New recovery codes for the password and a TOTP code; the old ones are void.

    Raises MfaNotEnabled, InvalidCredentials, InvalidMfaCode, MfaUnavailable, TooManyAttempts.
    """
    if not user.mfa_enabled:
        raise MfaNotEnabled()
    secret = _secret_of(user)
    credentials.require_password(user, password, settle=False)
    _check_factor(user, secret=secret, code=code, recovery_code=None)
    codes = _replace_recovery_codes(user)
    notify(user, "recovery_codes_regenerated", actor_id=user.id)
    _settle(user)
    return codes


def remove_by_admin(*, actor: User, target_id: str) -> None:
    """An admin takes a user's second factor away (the user lost it); audited, and the user is told.

    Not for the admin's own account: that is DELETE /me/mfa, with the password and a code, so a
    stolen admin token cannot strip its own account's second factor. Raises NotFound,
    Forbidden, MfaNotEnabled.
    """
    target = users.get_user(target_id)
    if target.id == actor.id:
        raise Forbidden("Remove your own second factor with DELETE /me/mfa.")
    if not target.mfa_enabled and db.session.get(TotpCredential, target.id) is None:
        raise MfaNotEnabled()
    _remove(target)
    notify(target, "mfa_removed_by_admin", actor_id=actor.id)
    db.session.commit()


def _remove(user: User) -> None:
    """Delete the seed, the recovery codes and any pending two-step login; the caller commits."""
    for model in (TotpCredential, RecoveryCode, MfaChallenge):
        db.session.execute(delete(model).where(model.user_id == user.id))
    user.mfa_enabled = False


# What each notice says happened (the mfa_changed mail template).
NOTICES = {
    "mfa_enabled": "Two-step sign-in (an authenticator app) was turned on",
    "mfa_disabled": "Two-step sign-in was turned off",
    "recovery_codes_regenerated": "New recovery codes were made for two-step sign-in; the old ones no longer work",
    "mfa_removed_by_admin": "An administrator removed two-step sign-in",
}


def notify(user: User, kind: str, **details: Any) -> None:
    """Tell the user about a change to their second factor: audited, and mailed through the outbox
    when mail can be sent, in the current transaction (the caller commits)."""
    from app.services import mail, outbox

    audit.record(kind, target_id=user.id, **details)
    if mail.available():
        outbox.enqueue_mail(
            "mfa_changed", to=user.email, context={"name": user.name, "what": NOTICES[kind]}, user_id=user.id
        )


# --- the two-step login ----------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def challenge(user: User) -> None:
    """The password of an account with a second factor was right: open a challenge and raise MfaRequired.

    The mfa_token is 256 bits from the CSPRNG, stored only as its SHA-256, bound to the user
    and to the password hash that was verified, good for 5 minutes and one completed login.
    Commits (the challenge must exist when the client comes back).
    """
    token = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(
        MfaChallenge(
            token_hash=_digest(token),
            user_id=user.id,
            password_fingerprint=_digest(user.password_hash),
            created_at=now,
            expires_at=now + CHALLENGE_LIFETIME,
        )
    )
    audit.record("mfa_challenge_issued", actor_id=user.id, target_id=user.id)
    db.session.commit()
    raise MfaRequired(extensions={"mfa_token": token, "mfa_methods": list(METHODS)})


def complete_login(
    *,
    mfa_token: str,
    code: str | None = None,
    recovery_code: str | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> tuple[User, issuing.TokenPair]:
    """Finish a two-step login with a TOTP code or a recovery code; open the session (amr pwd+otp).

    A wrong code leaves the challenge usable until it expires (the account throttle bounds the
    guesses); a completed login spends it. Raises InvalidMfaToken, InvalidMfaCode,
    MfaUnavailable, TooManyAttempts.
    """
    token_hash = _digest(mfa_token)
    found = db.session.get(MfaChallenge, token_hash)
    if found is None or found.expires_at <= utcnow():
        raise InvalidMfaToken()
    user = db.session.get(User, found.user_id)
    # A password change (or reset) since the challenge, a deactivation, or MFA removed: sign in again.
    if (
        user is None
        or not user.is_active
        or not user.mfa_enabled
        or not hmac.compare_digest(found.password_fingerprint, _digest(user.password_hash))
    ):
        raise InvalidMfaToken()
    verified_hash = user.password_hash
    secret = _secret_of(user) if code is not None else None  # 503 before an attempt is counted
    throttle.begin_attempt(credentials.subject(user, ""))
    method = _check_factor(user, secret=secret, code=code, recovery_code=recovery_code)
    spent = execute_dml(
        delete(MfaChallenge).where(MfaChallenge.token_hash == token_hash, MfaChallenge.expires_at > utcnow())
    )
    if spent != 1:
        db.session.rollback()  # a simultaneous completion won; the code this one spent is given back
        raise InvalidMfaToken()
    if not credentials.hold_verified(user, verified_hash):
        raise InvalidMfaToken()
    _factor_used(user, method)
    pair = sessions.open_session(user, user_agent=user_agent, ip=ip, fresh=True, amr=token_codec.AMR_SECOND_FACTOR)
    audit.record("login_succeeded", actor_id=user.id, target_id=user.id, second_factor=method)
    _settle(user)
    return user, pair


# --- operations ------------------------------------------------------------------------------


def reencrypt_all() -> int:
    """Re-encrypt every stored seed with the first ENCRYPTION_KEY key; commits; return how many.

    All or nothing: a seed no configured key opens stops it (MfaUnavailable) before any change.
    """
    rows = db.session.scalars(select(TotpCredential)).all()
    for row in rows:
        row.secret = secretbox.reencrypt(row.secret)
    db.session.commit()
    return len(rows)


def purge_expired(now: datetime | None = None) -> int:
    """Delete expired two-step login challenges; commits; return how many."""
    deleted = execute_dml(delete(MfaChallenge).where(MfaChallenge.expires_at < (now or utcnow())))
    db.session.commit()
    return deleted
