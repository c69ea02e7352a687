"""Extension objects, created unbound; create_app() binds them to an app.

flask-smorest's Api is the exception: it holds one OpenAPI document per app, so
app.api.register_blueprints() makes one for each app. Flask-Migrate is the other: it brings
Alembic (~10 MB per process), which only the `flask db` commands need, so
app.register_migrations() binds it where those run, never in a serving worker.
"""

from typing import Any, cast

from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import CursorResult, Executable

from app.models.base import Base

db = SQLAlchemy(model_class=Base)
jwt = JWTManager()
login_manager = LoginManager()
cors = CORS()
# The admin console's forms (app/console/); WTF_CSRF_CHECK_DEFAULT is off, so API views are untouched.
csrf = CSRFProtect()


def execute_dml(statement: Executable, params: dict[str, Any] | None = None) -> int:
    """Run an INSERT, UPDATE or DELETE in the request's session; the number of rows it touched."""
    return cast("CursorResult[Any]", db.session.execute(statement, params)).rowcount
