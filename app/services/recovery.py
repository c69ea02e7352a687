"""Account recovery and email verification: the tokens mailed to users and what following them does.

Tokens (OWASP Forgot Password Cheat Sheet; ASVS 4.0.3 V2.5; NIST 800-63B 6.1.2.3):
- 256 bits from `secrets` (URL-safe), mailed once, stored only as their SHA-256 digest: a
  high-entropy token needs no slow hash, and a database leak yields no usable link.
- single purpose (password_reset, email_verify, email_change), single use (spent by a
  conditional UPDATE, so two simultaneous uses cannot both win), expiring
  (PASSWORD_RESET_TOKEN_EXPIRES, EMAIL_VERIFY_TOKEN_EXPIRES);
- bound to the password they were issued under (a digest of the password hash, as
  fastapi-users does) and to the address they were mailed to: a password change, a completed
  reset or a newer mail of the same purpose voids the older ones;
- never logged, never in an audit record; links are built from FRONTEND_URL / the link
  templates only, never from the request's Host header.

/password/forgot answers the same whatever the address (no enumeration, ASVS 2.5.x / OWASP):
the request only writes a task to the outbox, identical for every address; the delivery
worker looks the account up and mails an active one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from app.errors import AlreadyVerified, InvalidResetToken, InvalidVerificationToken, MailUnavailable
from app.extensions import db, execute_dml
from app.models import AccountToken, User, utcnow
from app.models.account_token import EMAIL_CHANGE, EMAIL_VERIFY, PASSWORD_RESET
from app.services import audit, credentials, events, mail, outbox, passwords, sessions, throttle, users

TOKEN_BYTES = 32  # 256 bits; OWASP asks for a long random token, ASVS 2.3.1 / 2.5.x for a CSPRNG
MAX_TOKEN_LENGTH = 512


def digest(token: str) -> str:
    """How a token is stored and looked up: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(password_hash: str) -> str:
    """A digest of the password hash: a token carrying it dies when the password changes."""
    return hashlib.sha256(b"account-token\x00" + password_hash.encode()).hexdigest()


def duration_text(seconds: int) -> str:
    """'1 hour', '24 hours', '30 minutes': how long a link works, for the mail."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size and not (unit == "day" and seconds < 2 * 86400):
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _lifetime(purpose: str) -> int:
    """The lifetime of a token of `purpose`, in seconds."""
    key = "PASSWORD_RESET_TOKEN_EXPIRES" if purpose == PASSWORD_RESET else "EMAIL_VERIFY_TOKEN_EXPIRES"
    return int(current_app.config[key])


def void_tokens(user_id: uuid.UUID, *purposes: str, now: datetime | None = None) -> None:
    """Spend every unspent token of the user (of these purposes, or all); the caller commits."""
    table = AccountToken.__table__
    query = update(table).where(table.c.user_id == user_id, table.c.used_at.is_(None))
    if purposes:
        query = query.where(table.c.purpose.in_(purposes))
    db.session.execute(query.values(used_at=now or utcnow()))


def issue(user: User, purpose: str, *, email: str, now: datetime | None = None) -> str:
    """Make a token of `purpose` for `user` at `email`, voiding their older ones of that purpose; the caller commits.

    Returns the token in clear: it goes into one mail and nowhere else.
    """
    now = now or utcnow()
    # A newer mail voids the older ones (OWASP: one outstanding reset link at a time).
    void_tokens(user.id, purpose, now=now)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    db.session.add(
        AccountToken(
            digest=digest(token),
            user_id=user.id,
            purpose=purpose,
            email=email,
            password_fingerprint=fingerprint(user.password_hash),
            created_at=now,
            expires_at=now + timedelta(seconds=_lifetime(purpose)),
        )
    )
    return token


def _find(token: str, purposes: tuple[str, ...], now: datetime) -> tuple[AccountToken, User] | None:
    """The token's row and its active user, if the token is live for one of `purposes`; else None."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    wanted = digest(token)
    row = db.session.get(AccountToken, wanted)
    # The primary-key lookup found the digest; compare again in constant time all the same.
    if row is None or not hmac.compare_digest(row.digest, wanted):
        return None
    if row.purpose not in purposes or row.used_at is not None or row.expires_at <= now:
        return None
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active or not _same_password(row, user):
        return None
    return row, user


def _same_password(row: AccountToken, user: User) -> bool:
    """Whether the password is still the one the token was issued under."""
    return hmac.compare_digest(row.password_fingerprint, fingerprint(user.password_hash))


def _spend(row: AccountToken, now: datetime) -> bool:
    """Mark the token used, if nobody did first (a conditional UPDATE decides between racers)."""
    table = AccountToken.__table__
    spent = execute_dml(
        update(table).where(table.c.digest == row.digest, table.c.used_at.is_(None)).values(used_at=now)
    )
    return spent == 1


# The link template each purpose's mail uses (an email change is confirmed like a verification).
LINK_TEMPLATES = {
    PASSWORD_RESET: "PASSWORD_RESET_URL",
    EMAIL_VERIFY: "EMAIL_VERIFY_URL",
    EMAIL_CHANGE: "EMAIL_VERIFY_URL",
}


def mail_link(user: User, purpose: str, template: str, *, to: str, **context: str) -> None:
    """Issue a `purpose` token for address `to` and queue mail `template` with its link; the caller commits.

    The link is marked secret: the outbox keeps it only until the mail is sent.
    """
    token = issue(user, purpose, email=to)
    outbox.enqueue_mail(
        template,
        to=to,
        context={
            "name": user.name,
            **context,
            "link": link(LINK_TEMPLATES[purpose], token),
            "expires_in": duration_text(_lifetime(purpose)),
        },
        user_id=user.id,
        secrets=("link",),
    )


def link(template_key: str, token: str) -> str:
    """A link into the frontend from PASSWORD_RESET_URL or EMAIL_VERIFY_URL."""
    return str(current_app.config[template_key]).replace("{token}", token)


def require_mail() -> None:
    """Raise MailUnavailable when no transport is configured (MAIL_URL unset)."""
    if not mail.available():
        raise MailUnavailable()


@contextmanager
def _mail_budget(key: str) -> Iterator[None]:
    """Spend one of the per-address (per-account) mails asked for, around the work that queues it.

    Raises RateLimited (429). When the work fails on the database (answered 503), the mail is
    given back: an outage does not use up anyone's budget.
    """
    hashed = _limit_mails(key)
    try:
        yield
    except SQLAlchemyError:
        current_app.extensions["mail_address_limit"].refund(hashed)
        raise


def _limit_mails(key: str) -> str:
    """Spend one of the per-address (per-account) mails asked for; raises RateLimited (429). The key as counted."""
    hashed = hashlib.sha256(key.encode()).hexdigest()
    current_app.extensions["mail_address_limit"].check(hashed)
    return hashed


# --- password reset -------------------------------------------------------------------------


def request_password_reset(
    *, email: str, ip: str | None = None, user_agent: str | None = None, actor_id: uuid.UUID | None = None
) -> None:
    """POST /password/forgot: queue the lookup for the delivery worker; the same work for every address.

    `actor_id`: the admin who asked for it (the admin console), recorded as the audit event's actor.
    Raises MailUnavailable, RateLimited (per address; per IP is app/ratelimit.py).
    """
    require_mail()
    payload = {"email": email, "ip": ip, "user_agent": user_agent}
    if actor_id is not None:
        payload["actor_id"] = str(actor_id)
    with _mail_budget(f"address:{email}"):
        outbox.enqueue(outbox.TASK, "password_forgot", payload)
        db.session.commit()


def run_password_forgot(payload: dict[str, Any]) -> None:
    """The worker's half of /password/forgot: an active account gets a reset mail; nobody else anything."""
    user = users.by_email(payload.get("email"))
    if user is None or not user.is_active:
        return
    audit.set_origin(ip=payload.get("ip"), user_agent=payload.get("user_agent"))
    mail_link(user, PASSWORD_RESET, "password_reset", to=user.email)
    actor = payload.get("actor_id")
    audit.record("password_reset_requested", actor_id=uuid.UUID(actor) if actor else None, target_id=user.id)


def reset_password(*, token: str, new_password: str, now: datetime | None = None) -> User:
    """POST /password/reset: set a new password with a reset token; every session and earlier token dies.

    Raises InvalidResetToken, ValidationFailed (the password policy; the token stays usable).
    """
    now = now or utcnow()
    found = _find(token, (PASSWORD_RESET,), now)
    if found is None:
        raise InvalidResetToken()
    row, user = found
    passwords.check_policy(new_password, field="new_password", email=user.email, username=user.username)
    new_hash = passwords.hash_password(new_password)
    credentials.lock(user)
    db.session.refresh(user)  # under the lock: a password change that committed meanwhile wins
    if not user.is_active or not _same_password(row, user) or not _spend(row, now):
        db.session.rollback()
        raise InvalidResetToken()
    user.password_hash = new_hash
    if row.email == user.email:
        # Following the link proved control of the address the mail went to.
        if not user.email_verified:
            events.user(events.EMAIL_VERIFIED, user)
        user.email_verified = True
    user.pending_email = None
    void_tokens(user.id, now=now)
    sessions.void_all_tokens(user, reason="password_reset")  # docs/CONTRACT.md: every session of the user is revoked
    events.user(events.PASSWORD_CHANGED, user)
    audit.record("password_reset_completed", actor_id=user.id, target_id=user.id)
    notify_password_changed(user, how="reset")
    db.session.commit()
    # The owner has proven themself; the throttle's delays were meant for guessers.
    throttle.clear(credentials.subject(user, ""))
    return user


def notify_password_changed(user: User, *, how: str) -> None:
    """Queue the 'your password was changed' notice (ASVS 2.5.5), when mail can be sent; the caller commits."""
    if mail.available():
        outbox.enqueue_mail("password_changed", to=user.email, context={"name": user.name, "how": how}, user_id=user.id)


# --- email verification and change -----------------------------------------------------------


def queue_verification(user: User) -> None:
    """Queue a verification mail to the user's address; the caller commits."""
    mail_link(user, EMAIL_VERIFY, "email_verify", to=user.email)
    audit.record("email_verification_sent", target_id=user.id)


def on_signup(user: User) -> None:
    """EMAIL_VERIFICATION optional or required: the new account gets a verification mail; the caller commits."""
    if current_app.config["EMAIL_VERIFICATION"] != "off" and mail.available():
        queue_verification(user)


def send_verification(user: User) -> None:
    """POST /me/email/verify: a new verification mail. Raises AlreadyVerified, MailUnavailable, RateLimited."""
    if user.email_verified:
        raise AlreadyVerified()
    require_mail()
    with _mail_budget(f"user:{user.id}"):
        queue_verification(user)
        db.session.commit()


def request_email_change(user: User, new_email: str, *, actor_id: uuid.UUID | None) -> bool:
    """A user changing their own address: with mail, keep it pending until the new address confirms.

    Returns False when the change must be made at once instead (no mail transport). The new
    address gets a confirmation link, the old one a notice (ASVS 2.5.5: the owner hears of it,
    and a stolen session cannot silently move the account). The caller commits. Raises
    EmailTaken, RateLimited.
    """
    if not mail.available():
        return False
    if new_email == user.email:
        user.pending_email = None
        void_tokens(user.id, EMAIL_CHANGE)
        return True
    users.ensure_available(email=new_email, username=None, exclude=user.id)
    _limit_mails(f"user:{user.id}")
    user.pending_email = new_email
    mail_link(user, EMAIL_CHANGE, "email_change_confirm", to=new_email, old_email=user.email)
    outbox.enqueue_mail(
        "email_change_requested", to=user.email, context={"name": user.name, "new_email": new_email}, user_id=user.id
    )
    audit.record("email_change_requested", actor_id=actor_id, target_id=user.id)
    return True


def verify_email(*, token: str, now: datetime | None = None) -> User:
    """POST /email/verify: confirm the address (or the new address) a token was mailed to.

    Raises InvalidVerificationToken, EmailTaken (the new address was taken meanwhile).
    """
    now = now or utcnow()
    found = _find(token, (EMAIL_VERIFY, EMAIL_CHANGE), now)
    if found is None:
        raise InvalidVerificationToken()
    row, user = found
    if row.purpose == EMAIL_VERIFY:
        if row.email != user.email or not _spend(row, now):
            db.session.rollback()
            raise InvalidVerificationToken()
        user.email_verified = True
        audit.record("email_verified", actor_id=user.id, target_id=user.id)
        events.user(events.EMAIL_VERIFIED, user)
        db.session.commit()
        return user
    if user.pending_email != row.email:
        raise InvalidVerificationToken()
    # 409 before the token is spent: the user may free the address and try the same link again.
    users.ensure_available(email=row.email, username=None, exclude=user.id)
    if not _spend(row, now):
        db.session.rollback()
        raise InvalidVerificationToken()
    old_email = user.email
    user.email, user.pending_email, user.email_verified = row.email, None, True
    void_tokens(user.id, EMAIL_VERIFY, now=now)  # links to the old address
    audit.record("email_changed", actor_id=user.id, target_id=user.id)
    events.user(events.UPDATED, user)
    events.user(events.EMAIL_VERIFIED, user)
    outbox.enqueue_mail(
        "email_changed", to=old_email, context={"name": user.name, "new_email": row.email}, user_id=user.id
    )
    users.commit_or_conflict()
    return user


def purge_expired(now: datetime | None = None) -> int:
    """Delete tokens that expired; commits; return how many."""
    table = AccountToken.__table__
    deleted = execute_dml(table.delete().where(table.c.expires_at < (now or utcnow())))
    db.session.commit()
    return deleted
