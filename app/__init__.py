"""The application factory: config, extensions, blueprints, error handlers, commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from flask import Flask, request
from sqlalchemy import event

from app.proxy import TrustedProxyMiddleware, parse_networks
from config import BaseConfig, get_config


def create_app(config: BaseConfig | Mapping[str, Any] | None = None, *, migrations: bool | None = None) -> Flask:
    """Build the app from a config object, a mapping of environment-style overrides, or the environment.

    `migrations`: bind Flask-Migrate (the `flask db` commands); by default only when the app is
    built by the flask command line, so serving processes never load Alembic.
    """
    settings = _resolve_config(config)
    app = Flask(__name__, instance_path=str(settings.INSTANCE_DIR))
    app.config.from_mapping(settings.as_dict())
    app.config["MIGRATIONS_DIR"] = str(_migrations_dir())
    # RFC 8259 JSON is UTF-8; say so for clients that guess otherwise.
    app.json.mimetype = "application/json; charset=utf-8"  # type: ignore[attr-defined]  # DefaultJSONProvider has it
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_hooks(app)
    register_commands(app)
    register_middleware(app)
    register_outbox(app)
    if migrations if migrations is not None else click.get_current_context(silent=True) is not None:
        register_migrations(app)
    return app


def register_migrations(app: Flask) -> None:
    """Bind Flask-Migrate: `flask db ...`, and flask_migrate.upgrade() in this app's context."""
    from flask_migrate import Migrate

    from app.extensions import db

    Migrate().init_app(app, db, directory=app.config["MIGRATIONS_DIR"], render_as_batch=True, compare_type=True)


def register_outbox(app: Flask) -> None:
    """OUTBOX_IN_PROCESS (development's default): deliver the outbox on a thread, from the first request on.

    Production runs `flask outbox run` instead; the test suite never starts it unless asked.
    """
    if not app.config["OUTBOX_IN_PROCESS"]:
        return
    from app.services import outbox

    @app.before_request
    def _start_outbox() -> None:
        if "outbox_thread" not in app.extensions:
            outbox.start_in_process(app)


def register_middleware(app: Flask) -> None:
    """WSGI layers around Flask: the hot path inside, trusted-proxy rewriting outermost."""
    if app.config["HOT_PATH"]:
        from app.hotpath import HotPath

        app.wsgi_app = HotPath(app, app.wsgi_app)  # type: ignore[method-assign]  # Flask's documented way to add middleware
    if app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = TrustedProxyMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, parse_networks(app.config["TRUSTED_PROXIES"])
        )


def _resolve_config(config: BaseConfig | Mapping[str, Any] | None) -> BaseConfig:
    """A config object as given, or built from the environment (plus overrides, plus .env)."""
    if isinstance(config, BaseConfig):
        return config
    if config is None:
        from dotenv import load_dotenv

        load_dotenv(override=False)
        return get_config()
    import os

    return get_config({**os.environ, **config})


def register_extensions(app: Flask) -> None:
    """Bind every extension to the app."""
    from flask_cors.core import get_cors_options

    from app.api import access
    from app.extensions import cors, db, jwt, login_manager
    from app.http import ConsoleOnlySession, NoCookieSession, cors_settings
    from app.outage import init_outage
    from app.services import keys, revocation_view, secretbox, token_codec

    db.init_app(app)
    jwt.init_app(app)
    secretbox.init_app(app)
    app.extensions["jwt_keys"] = keys.load(app.config["JWT_ALGORITHM"], app.config["JWT_KEYS_DIR"])
    app.extensions["verified_tokens"] = token_codec.verified_token_cache(app)
    if app.extensions["jwt_keys"].problem:
        app.logger.error("signing keys unavailable: %s", app.extensions["jwt_keys"].problem)
    login_manager.init_app(app)
    login_manager.request_loader(access.load_user_from_request)
    login_manager.unauthorized_handler(access.unauthorized)
    # Flask-JWT-Extended signs with the current key and names it by its kid (app/services/keys.py).
    jwt.encode_key_loader(lambda _identity: keys.signing_key())
    jwt.additional_headers_loader(lambda _identity: keys.signing_headers())
    # Tokens travel as Bearer headers; Flask's cookie session is never read or written, but
    # for the admin console's pages (app/console/), which have their own.
    login_manager.session_protection = None
    app.session_interface = ConsoleOnlySession() if app.config["ADMIN_CONSOLE"] else NoCookieSession()
    settings = cors_settings(app.config["CORS_ORIGINS"])
    if settings["origins"]:
        # With no origin listed Flask-CORS adds nothing to any answer (no Origin matches, and Vary
        # goes only with a match), but its after_request hook was 6.5% of GET /me's CPU.
        cors.init_app(app, **settings)
    # The same options, resolved as Flask-CORS resolves them, for the fast path's answers (app/hotpath.py).
    app.extensions["cors_options"] = get_cors_options(app, settings)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        elif db.engine.dialect.name in ("mysql", "mariadb"):
            event.listen(db.engine, "connect", _mysql_timeouts(app.config["DATABASE_STATEMENT_TIMEOUT"]))
        dsn = revocation_view.libpq_dsn(db.engine.url) if app.config["REVOCATION_CACHE"] else None
        init_outage(app, db.engine)
    app.extensions["revocations"] = revocation_view.RevocationView(dsn=dsn)
    revocation_view.install_hooks()


def _migrations_dir():
    """The project's migrations folder, wherever the process was started from."""
    from config import BASE_DIR

    return BASE_DIR / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Enforce foreign keys, let readers proceed during writes, and lower-case beyond ASCII."""
    # SQLite's own lower() only folds ASCII; searches must match "Åström" with "åström" as
    # PostgreSQL and MariaDB do.
    dbapi_connection.create_function("lower", 1, lambda text: text.lower() if isinstance(text, str) else text)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _mysql_timeouts(seconds: int):
    """A connect hook bounding each statement and lock wait of a MariaDB/MySQL session to `seconds`."""

    def apply(dbapi_connection, _record) -> None:
        """Set the session limits under the names this server knows."""
        if "mariadb" in dbapi_connection.get_server_info().lower():
            limit = f"max_statement_time = {seconds}"
        else:  # MySQL: milliseconds, and it bounds SELECTs only; the lock waits bound the rest
            limit = f"max_execution_time = {seconds * 1000}"
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET SESSION {limit}, innodb_lock_wait_timeout = {seconds}, lock_wait_timeout = {seconds}")
        cursor.close()

    return apply


def register_blueprints(app: Flask) -> None:
    """Mount the controllers (the admin console's unless ADMIN_CONSOLE=false), then the rate limits."""
    from app.api import register_blueprints as register
    from app.ratelimit import init_rate_limits

    register(app)
    if app.config["ADMIN_CONSOLE"]:
        from app.console import init_console

        init_console(app)
    init_rate_limits(app)


def register_errorhandlers(app: Flask) -> None:
    """problem+json for every error."""
    from app.errors import register_errorhandlers as register

    register(app)


def register_hooks(app: Flask) -> None:
    """Body checks before each request; request id, caching and security headers after."""
    from app.api.checks import check_body, check_query, remember_origin
    from app.errors import request_id
    from app.http import envelope_headers
    from app.observability import init_observability

    init_observability(app)
    app.before_request(check_body)
    app.before_request(check_query)
    app.before_request(remember_origin)

    @app.after_request
    def _headers(response):
        """Every response: request id, security headers, and no caching unless a view allowed it."""
        for name, value in envelope_headers(response.headers, request_id(), https=request.is_secure):
            response.headers[name] = value
        if request.method == "OPTIONS" and response.mimetype == "text/html" and not response.get_data():
            del response.headers["Content-Type"]  # Flask's automatic answer: no body, so no HTML either
        return response


def register_commands(app: Flask) -> None:
    """The flask CLI commands."""
    from app.cli import register_commands as register

    register(app)
