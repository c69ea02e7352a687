"""The console's forms (Flask-WTF): each carries the session's CSRF token; input rules are the API's schemas'."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import InputRequired, Length, Optional

from app.models import ROLES


class SignInForm(FlaskForm):
    """Email (or username) and password; normalized and checked by LoginRequestSchema."""

    identifier = StringField("Email or username", validators=[InputRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=4096)])


class CodeForm(FlaskForm):
    """The second step: a code from the authenticator app, or a recovery code."""

    code = StringField("Code from your authenticator app", validators=[Optional(), Length(max=16)])
    recovery_code = StringField("Or a recovery code", validators=[Optional(), Length(max=64)])


class ActionForm(FlaskForm):
    """A button that changes something: nothing but the CSRF token."""


class SessionForm(FlaskForm):
    """Revoke one session (its id), or every session (no id)."""

    session_id = HiddenField(validators=[Optional(), Length(max=36)])


class RoleForm(FlaskForm):
    """Change the role."""

    role = SelectField("Role", choices=[SelectChoice(role) for role in ROLES], validators=[InputRequired()])


class FilterForm(FlaskForm):
    """The users list's search and filters (a GET form: no CSRF token, it changes nothing)."""

    class Meta:
        csrf = False

    q = StringField("Search", validators=[Optional(), Length(max=100)])
    role = SelectField(
        "Role", choices=[SelectChoice("", "Any role"), *[SelectChoice(role) for role in ROLES]], validators=[Optional()]
    )
    is_active = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status"), SelectChoice("true", "Active"), SelectChoice("false", "Deactivated")],
        validators=[Optional()],
    )
