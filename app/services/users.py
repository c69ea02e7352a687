"""Users: create, find, list, update and delete accounts, with the last-admin rule."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from app import identifiers
from app.errors import (
    Conflict,
    EmailTaken,
    Forbidden,
    LastAdmin,
    NotFound,
    UsernameReserved,
    UsernameTaken,
    ValidationFailed,
)
from app.extensions import db
from app.models import ADMIN, RevokedToken, Session, User
from app.services import audit, credentials, events, pages, passwords, recovery, revocation_view, sessions

SELF_EDITABLE = frozenset({"name", "email", "username"})


def username_key(username: str | None) -> str | None:
    """The uniqueness key of a username (RFC 8265 UsernameCaseMapped); None for none or an impossible one."""
    return identifiers.username_key(username)


@lru_cache(maxsize=4)
def _reserved_keys(names: tuple[str, ...]) -> frozenset[str]:
    """The keys of the RESERVED_USERNAMES entries, so `ＡＤＭＩＮ` and `Admin` are `admin` too."""
    return frozenset(key for key in map(username_key, names) if key is not None)


def ensure_not_reserved(username: str | None) -> None:
    """Raise UsernameReserved if the username's key is on RESERVED_USERNAMES.

    A name like `admin` or `support` on a plain account passes for the service's own voice
    (ASVS 5.1.x; NIST 800-63B 5.1.1.2's spirit for identifiers); admins may still assign one.
    """
    key = username_key(username)
    if key is not None and key in _reserved_keys(tuple(current_app.config["RESERVED_USERNAMES"])):
        raise UsernameReserved(errors={"username": ["This username is reserved."]})


def conflict_from(error: IntegrityError) -> Conflict:
    """Tell which unique constraint a failed write hit (email or username)."""
    text = str(error.orig).lower()
    if "username" in text:
        return UsernameTaken(errors={"username": ["This username is taken."]})
    if "email" in text:
        return EmailTaken(errors={"email": ["An account with this email already exists."]})
    return Conflict()


def ensure_available(*, email: str | None, username: str | None, exclude: uuid.UUID | None = None) -> None:
    """Raise EmailTaken or UsernameTaken if another account holds either; the constraint still decides races."""
    if email is not None:
        query = select(User.id).where(User.email == email)
        if exclude is not None:
            query = query.where(User.id != exclude)
        if db.session.execute(query).first() is not None:
            raise EmailTaken(errors={"email": ["An account with this email already exists."]})
    if username is not None:
        query = select(User.id).where(User.username_key == username_key(username))
        if exclude is not None:
            query = query.where(User.id != exclude)
        if db.session.execute(query).first() is not None:
            raise UsernameTaken(errors={"username": ["This username is taken."]})


def new_user(
    *,
    email: str,
    password: str,
    name: str,
    username: str | None = None,
    role: str = "user",
    is_active: bool = True,
    may_reserve: bool = False,
) -> User:
    """Build (not commit) a user after the password policy, availability and reserved-name checks.

    `may_reserve`: an admin is creating it, so a reserved username is allowed. Availability is
    checked first: a name already held answers 409 whether or not it is reserved.
    Raises ValidationFailed, UsernameReserved, EmailTaken, UsernameTaken.
    """
    passwords.check_policy(password, email=email, username=username)
    # Hashed before the first query, so no pooled connection waits on the hash (a burst of
    # signups would otherwise exhaust the pool: credentials.release_connection).
    password_hash = passwords.hash_password(password)
    ensure_available(email=email, username=username)
    if not may_reserve:
        ensure_not_reserved(username)
    user = User(
        id=uuid.uuid4(),
        email=email,
        username=username,
        username_key=username_key(username),
        name=name,
        password_hash=password_hash,
        role=role,
        is_active=is_active,
        email_verified=False,
    )
    db.session.add(user)
    return user


def commit_or_conflict(*, flush_only: bool = False) -> None:
    """Commit (or flush); a unique-constraint failure (a simultaneous twin) becomes EmailTaken/UsernameTaken."""
    try:
        db.session.flush() if flush_only else db.session.commit()
    except IntegrityError as error:
        db.session.rollback()
        raise conflict_from(error) from error


def create_user(*, actor: User, **changes: Any) -> User:
    """Create and commit a user (admin endpoint, so reserved usernames are allowed).

    Raises ValidationFailed, EmailTaken, UsernameTaken.
    """
    user = new_user(**changes, may_reserve=True)
    audit.record("user_created", actor_id=actor.id, target_id=user.id, role=user.role, is_active=user.is_active)
    events.user(events.CREATED, user)
    commit_or_conflict()
    return user


def get_user(user_id: str | uuid.UUID) -> User:
    """The user with this id. Raises NotFound (also for ids that are not UUIDs)."""
    try:
        key = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
    except ValueError:
        raise NotFound() from None
    user = db.session.get(User, key)
    if user is None:
        raise NotFound()
    return user


def _escape_like(text: str) -> str:
    """Escape LIKE wildcards so a search is a plain substring match."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_users(
    *,
    page: int,
    per_page: int,
    email: str | None = None,
    q: str | None = None,
    role: str | None = None,
    is_active: bool | None = None,
) -> pages.Page:
    """A page of users, oldest first, and the total matching the filters."""
    query = select(User)
    if email is not None:
        query = query.where(User.email == email)
    if q is not None:
        pattern = f"%{_escape_like(q.lower())}%"
        query = query.where(
            or_(
                func.lower(User.email).like(pattern, escape="\\"),
                func.lower(User.username).like(pattern, escape="\\"),
                func.lower(User.name).like(pattern, escape="\\"),
            )
        )
    if role is not None:
        query = query.where(User.role == role)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    return pages.page_of(query, User.created_at, User.id, page=page, per_page=per_page)


def ensure_not_last_admin(target: User) -> None:
    """Raise LastAdmin if `target` is the only active admin.

    The active admins' rows are locked (FOR UPDATE; SQLite serializes writers anyway), so two
    admins demoting each other at once cannot both succeed.
    """
    if target.role != ADMIN or not target.is_active:
        return
    admins = db.session.scalars(
        select(User.id).where(User.role == ADMIN, User.is_active.is_(True)).with_for_update()
    ).all()
    if not [admin for admin in admins if admin != target.id]:
        raise LastAdmin()


def apply_update(
    target: User, changes: dict[str, Any], *, actor_id: uuid.UUID | None, may_reserve: bool = False
) -> User:
    """Apply profile, role, status and password changes to `target`, audit them, then commit.

    `actor_id` is who made the change (None for the CLI); `may_reserve` whether that actor may
    give a reserved username (admins). Raises ValidationFailed, UsernameReserved, EmailTaken,
    UsernameTaken, LastAdmin.
    """
    profile = [field for field in ("name", "email", "username") if field in changes]
    before = {field: getattr(target, field) for field in ("name", "email", "username", "role")}
    if "email" in changes and changes["email"] != target.email:
        ensure_available(email=changes["email"], username=None, exclude=target.id)
        target.email = changes["email"]
        target.email_verified = False
        target.pending_email = None
    if "username" in changes and changes["username"] != target.username:
        if username_key(changes["username"]) != target.username_key:
            ensure_available(email=None, username=changes["username"], exclude=target.id)
            if not may_reserve:
                ensure_not_reserved(changes["username"])
        target.username = changes["username"]
        target.username_key = username_key(changes["username"])
    if "name" in changes:
        target.name = changes["name"]
    if profile:
        audit.record("profile_updated", actor_id=actor_id, target_id=target.id, fields=profile)
    demoting = changes.get("role", target.role) != ADMIN
    deactivating = changes.get("is_active", target.is_active) is False
    if demoting or deactivating:
        ensure_not_last_admin(target)
    if "role" in changes and changes["role"] != target.role:
        audit.record("role_changed", actor_id=actor_id, target_id=target.id, old=target.role, new=changes["role"])
        target.role = changes["role"]
    if "password" in changes:
        passwords.check_policy(changes["password"], email=target.email, username=target.username)
        new_hash = passwords.hash_password(changes["password"])
        credentials.lock(target)
        target.password_hash = new_hash
        sessions.void_all_tokens(target, reason="password_reset")  # an admin reset ends every session of the account
        events.user(events.PASSWORD_CHANGED, target)
        audit.record("password_reset", actor_id=actor_id, target_id=target.id)
        recovery.notify_password_changed(target, how="reset by an administrator")
    if "is_active" in changes and changes["is_active"] != target.is_active:
        if not changes["is_active"]:
            credentials.lock(target)
        target.is_active = changes["is_active"]
        if not target.is_active:
            # docs/CONTRACT.md: deactivated after issue voids the token
            sessions.void_all_tokens(target, reason="deactivated")
        events.user(events.REACTIVATED if target.is_active else events.DEACTIVATED, target)
        event = "user_activated" if target.is_active else "user_deactivated"
        audit.record(event, actor_id=actor_id, target_id=target.id)
    if any(getattr(target, field) != value for field, value in before.items()):
        events.user(events.UPDATED, target)
    commit_or_conflict()
    return target


def update_own(user: User, changes: dict[str, Any]) -> User:
    """A user changing their own profile (PATCH /me, or PATCH /users/{own id}).

    With mail, a new email is confirmed first (app/services/recovery.py); whichever path asks,
    the rule is the same. Raises EmailTaken, UsernameTaken, RateLimited.
    """
    if "email" in changes and recovery.request_email_change(user, changes["email"], actor_id=user.id):
        changes = {key: value for key, value in changes.items() if key != "email"}
    return apply_update(user, changes, actor_id=user.id, may_reserve=user.role == ADMIN)


def update_user(*, actor: User, target_id: str, changes: dict[str, Any]) -> User:
    """PATCH /users/{id}: admins any field; a user their own name, email and username.

    Raises NotFound, Forbidden, ValidationFailed, EmailTaken, UsernameTaken, LastAdmin.
    """
    target = visible_user(actor=actor, target_id=target_id)
    if actor.role != ADMIN and not SELF_EDITABLE.issuperset(changes):
        raise Forbidden("Only an admin may change role, is_active or password here.")
    if target.id == actor.id and "password" in changes:
        # POST /me/password asks for the current password; no path may skip that (ASVS 2.1.6).
        raise ValidationFailed(
            "Change your own password with POST /me/password.",
            errors={"password": ["Change your own password with POST /me/password (it needs the current one)."]},
        )
    if target.id == actor.id:
        return update_own(target, changes)
    return apply_update(target, changes, actor_id=actor.id, may_reserve=actor.role == ADMIN)


def visible_user(*, actor: User, target_id: str) -> User:
    """The target if the actor is an admin or the target; NotFound/Forbidden otherwise."""
    if actor.role == ADMIN:
        return get_user(target_id)
    if str(actor.id) != str(target_id).lower():
        raise Forbidden()
    return actor


def delete_account(target: User) -> None:
    """Delete a user with every session and revocation record; commits. Raises LastAdmin.

    Every live session's auth.session.revoked (`user_deleted`) goes out before auth.user.deleted.
    """
    ensure_not_last_admin(target)
    revocation_view.invalidate_user(db.session(), target.id)
    sessions.announce_deleted_sessions(target.id)  # the ids, before the rows go
    db.session.execute(delete(Session).where(Session.user_id == target.id))
    db.session.execute(delete(RevokedToken).where(RevokedToken.user_id == target.id))
    db.session.delete(target)
    events.deleted(target.id)
    db.session.commit()


def delete_user(*, actor: User, target_id: str, password: str | None = None) -> None:
    """DELETE /users/{id} by an admin, or by the user themself with their password.

    Deleting one's own account is the same act as DELETE /me whichever path asks, so it needs
    the password here too (ASVS 3.7.1: re-authentication before a sensitive change), admins
    included. Raises NotFound, Forbidden, ValidationFailed, InvalidCredentials, TooManyAttempts,
    LastAdmin.
    """
    target = visible_user(actor=actor, target_id=target_id)
    if target.id == actor.id:
        if not password:
            raise ValidationFailed(
                "Deleting your own account needs your password.",
                errors={"password": ["Required to delete your own account."]},
            )
        credentials.require_password(actor, password)
        audit.record("account_deleted", actor_id=actor.id, target_id=actor.id)
    else:
        audit.record("user_deleted", actor_id=actor.id, target_id=target.id)
    delete_account(target)


def create_or_promote_admin(*, email: str, password: str | None, name: str | None) -> tuple[User, bool]:
    """Create an admin, or promote (and reactivate) an existing user; return (user, created).

    Raises ValidationFailed, EmailTaken, UsernameTaken.
    """
    user = by_email(email)
    if user is None:
        if not password:
            raise ValueError("a password is required to create a new admin")
        user = new_user(email=email, password=password, name=name or email.split("@")[0], role=ADMIN)
        # The operator vouches for the address: EMAIL_VERIFICATION=required must not lock them out.
        user.email_verified = True
        audit.record("admin_created", target_id=user.id, via="cli")
        events.user(events.CREATED, user)
        commit_or_conflict()
        return user, True
    changes: dict[str, Any] = {"role": ADMIN, "is_active": True}
    if password:
        changes["password"] = password
    if name:
        changes["name"] = name
    audit.record("admin_promoted", target_id=user.id, via="cli")
    return apply_update(user, changes, actor_id=None), False


def by_email(email: str | None) -> User | None:
    """The account with this (normalized) email, if any: the one lookup by address."""
    if email is None:
        return None
    return db.session.scalars(select(User).where(User.email == email)).first()


def find_admin_candidate(email: str) -> User | None:
    """The existing account create-admin would promote, if any."""
    return by_email(email)
