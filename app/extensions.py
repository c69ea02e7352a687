"""Extension objects, created unbound; create_app() binds them to an app.

flask-smorest's Api is the exception: it holds one OpenAPI document per app, so
app.api.register_blueprints() makes one for each app.
"""

from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from app.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = JWTManager()
login_manager = LoginManager()
cors = CORS()
