"""Extension objects, created unbound; create_app() binds them to an app.

flask-smorest's Api is the exception: it holds one OpenAPI document per app, so
app.api.register_blueprints() makes one for each app. Flask-Migrate is the other: it brings
Alembic (~10 MB per process), which only the `flask db` commands need, so
app.register_migrations() binds it where those run, never in a serving worker.
"""

from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from app.models.base import Base

db = SQLAlchemy(model_class=Base)
jwt = JWTManager()
login_manager = LoginManager()
cors = CORS()
# The admin console's forms (app/console/); WTF_CSRF_CHECK_DEFAULT is off, so API views are untouched.
csrf = CSRFProtect()
