"""The console's controllers: parse the form, call the API's services, render a page or redirect (POST, then GET).

Every action goes through the service the API's endpoint calls, so the API's rules (last admin,
self-access, the audit trail) hold here by construction. A refused action comes back to the
page it was asked from with the service's own message.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from marshmallow import ValidationError

from app.api.access import caller, client_info
from app.console import register_handlers
from app.console.forms import ActionForm, CodeForm, FilterForm, RoleForm, SessionForm, SignInForm
from app.errors import AppError, InvalidMfaToken, MfaRequired, NotFound, ValidationFailed
from app.http import CONSOLE_BLUEPRINT
from app.schemas.auth import LoginRequestSchema
from app.schemas.mfa import LoginMfaRequestSchema
from app.schemas.users import UserListQuerySchema
from app.services import accounts, audit, console, mfa, users

bp = Blueprint(
    CONSOLE_BLUEPRINT, __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)
PER_PAGE = 20
RECENT_EVENTS = 20


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Signed in to the console (an active admin, a live session), else to the sign-in page."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for(".sign_in"), 303)
        return view(*args, **kwargs)

    return wrapper


def _failed(template: str, error: AppError, **context: Any):
    """Render a refused sign-in with the service's status and message; the per-IP budgets count it."""
    g.problem_code = error.code  # app/ratelimit.py tells failures apart by status and code
    headers = {"Retry-After": error.headers["Retry-After"]} if "Retry-After" in error.headers else {}
    return render_template(template, error=error.detail, **context), error.status, headers


def _start(signed: console.SignIn) -> None:
    """A fresh console session for the admin (ASVS 3.2.1: nothing of the anonymous one survives)."""
    session.clear()
    login_user(signed.user, fresh=True)
    session["sid"] = str(signed.sid)
    session["at"] = signed.signed_in_at
    session.permanent = True  # the cookie carries Max-Age, and each request renews it (the idle timeout)


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """The sign-in page: the API's login, for admins only."""
    if current_user.is_authenticated:
        return redirect(url_for(".users_list"), 303)
    form = SignInForm()
    if not form.validate_on_submit():
        return render_template("console/sign_in.html", form=form), 400 if form.errors else 200
    identifier = form.identifier.data.strip()
    field = "email" if "@" in identifier else "username"
    try:
        credentials = LoginRequestSchema().load({field: identifier, "password": form.password.data})
        credentials.pop("cookie", None)  # the API's cookie mode; the console has its own session
        signed = console.sign_in(**credentials, **client_info())
    except ValidationError as error:
        return _failed("console/sign_in.html", ValidationFailed(errors=error.messages), form=form)
    except MfaRequired as challenge:
        session["mfa_token"] = challenge.extensions["mfa_token"]
        return redirect(url_for(".sign_in_code"), 303)
    except AppError as error:
        return _failed("console/sign_in.html", error, form=form)
    _start(signed)
    return redirect(url_for(".users_list"), 303)


@bp.route("/sign-in/code", methods=["GET", "POST"])
def sign_in_code():
    """The second step of an admin's sign-in: a TOTP code or a recovery code."""
    token = session.get("mfa_token")
    if token is None:
        return redirect(url_for(".sign_in"), 303)
    form = CodeForm()
    if not form.validate_on_submit():
        return render_template("console/sign_in_code.html", form=form), 400 if form.errors else 200
    factor = {name: value.strip() for name in ("code", "recovery_code") if (value := getattr(form, name).data or "")}
    try:
        args = LoginMfaRequestSchema().load({"mfa_token": token, **factor})
        args.pop("cookie", None)
        signed = console.complete_sign_in(**args, **client_info())
    except ValidationError as error:
        message = "Give either the 6-digit code or a recovery code."
        return _failed("console/sign_in_code.html", ValidationFailed(message, errors=error.messages), form=form)
    except InvalidMfaToken:
        session.pop("mfa_token", None)
        flash("That sign-in has expired; sign in again.", "error")
        return redirect(url_for(".sign_in"), 303)
    except AppError as error:
        return _failed("console/sign_in_code.html", error, form=form)
    _start(signed)
    return redirect(url_for(".users_list"), 303)


@bp.post("/sign-out")
@admin_required
def sign_out():
    """End the console's session (its sessions row too) and forget the cookie."""
    console.sign_out(caller(), signed_in_sid())
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for(".sign_in"), 303)


def signed_in_sid() -> uuid.UUID:
    """The session id of the current console sign-in."""
    return uuid.UUID(session["sid"])


@bp.get("")
@admin_required
def users_list():
    """Users, searched, filtered and paginated as GET /users does."""
    form = FilterForm(request.args)
    given = {key: value for key in ("q", "role", "is_active", "page") if (value := request.args.get(key, "").strip())}
    try:
        query = UserListQuerySchema().load({**given, "per_page": PER_PAGE})
    except ValidationError as error:
        raise ValidationFailed(errors=error.messages) from None
    found = users.list_users(**query)
    last_page = max(1, -(-found.total // found.per_page))
    filters = {key: value for key, value in given.items() if key != "page"}
    return render_template("console/users.html", form=form, found=found, last_page=last_page, filters=filters)


@bp.get("/users/<user_id>")
@admin_required
def user_page(user_id: str):
    """One user: profile, live sessions, recent audit events, and the actions."""
    target = users.visible_user(actor=caller(), target_id=user_id)
    sessions = accounts.list_sessions(target, current_sid=signed_in_sid())
    events = audit.list_events(page=1, per_page=RECENT_EVENTS, user_id=target.id).items
    return render_template(
        "console/user.html",
        user=target,
        sessions=sessions,
        events=events,
        action=ActionForm(),
        role_form=RoleForm(role=target.role),
        is_self=target.id == caller().id,
    )


def _act(user_id: str, run: Callable[[], Any], done: str, *, then: str | None = None):
    """Run one action; back to the user's page with what happened, or with the service's refusal."""
    try:
        run()
    except NotFound:
        raise
    except AppError as error:
        g.problem_code = error.code
        details = [message for messages in (error.errors or {}).values() for message in _flat(messages)]
        flash(" ".join([error.detail, *details]), "error")
        return redirect(url_for(".user_page", user_id=user_id), 303)
    flash(done, "success")
    return redirect(then or url_for(".user_page", user_id=user_id), 303)


def _update(user_id: str, changes: dict[str, Any], done: str):
    """An action that is PATCH /users/{id} with `changes`, by the signed-in admin (users.update_user)."""
    return _act(user_id, lambda: users.update_user(actor=caller(), target_id=user_id, changes=changes), done)


def _flat(messages: Any) -> list[str]:
    """Field messages as a flat list (marshmallow nests them by field)."""
    if isinstance(messages, dict):
        return [text for value in messages.values() for text in _flat(value)]
    return [str(text) for text in messages] if isinstance(messages, list) else [str(messages)]


@bp.post("/users/<user_id>/deactivate")
@admin_required
def deactivate(user_id: str):
    """Deactivate: PATCH /users/{id} with is_active false (the last admin stays)."""
    return _update(user_id, {"is_active": False}, "The account is deactivated and every one of its sessions has ended.")


@bp.post("/users/<user_id>/reactivate")
@admin_required
def reactivate(user_id: str):
    """Reactivate: PATCH /users/{id} with is_active true."""
    return _update(user_id, {"is_active": True}, "The account is active again.")


@bp.post("/users/<user_id>/role")
@admin_required
def change_role(user_id: str):
    """Change the role: PATCH /users/{id} with role (the last admin stays one)."""
    form = RoleForm()
    if not form.validate():
        flash("Choose a role: " + ", ".join(choice.value for choice in form.role.choices) + ".", "error")
        return redirect(url_for(".user_page", user_id=user_id), 303)
    return _update(user_id, {"role": form.role.data}, f"The role is now {form.role.data}.")


@bp.post("/users/<user_id>/reset-mail")
@admin_required
def send_reset_mail(user_id: str):
    """Mail the user a password reset link (as POST /password/forgot)."""
    return _act(user_id, lambda: console.send_reset_mail(actor=caller(), target_id=user_id, **client_info()),
                "A password reset mail is on its way to the user.")  # fmt: skip


@bp.post("/users/<user_id>/sessions/revoke")
@admin_required
def revoke_sessions(user_id: str):
    """End one session of the user (session_id), or all of them."""
    form = SessionForm()
    session_id = form.session_id.data or None
    done = "The session has ended." if session_id else "Every session of the user has ended."
    return _act(user_id, lambda: console.revoke_sessions(actor=caller(), target_id=user_id, session_id=session_id),
                done)  # fmt: skip


@bp.post("/users/<user_id>/mfa/remove")
@admin_required
def remove_mfa(user_id: str):
    """Remove the user's second factor (DELETE /users/{id}/mfa); the user is told by mail."""
    return _act(user_id, lambda: mfa.remove_by_admin(actor=caller(), target_id=user_id),
                "The second factor is removed; the user has been told.")  # fmt: skip


@bp.get("/users/<user_id>/delete")
@admin_required
def confirm_delete(user_id: str):
    """The confirmation step before a deletion."""
    target = users.visible_user(actor=caller(), target_id=user_id)
    return render_template("console/delete.html", user=target, action=ActionForm(), is_self=target.id == caller().id)


@bp.post("/users/<user_id>/delete")
@admin_required
def delete_user(user_id: str):
    """Delete the user and all their tokens (DELETE /users/{id}); one's own account needs DELETE /me."""
    return _act(user_id, lambda: users.delete_user(actor=caller(), target_id=user_id),
                "The user is deleted.", then=url_for(".users_list"))  # fmt: skip


register_handlers(bp)
