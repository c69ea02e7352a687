"""Configuration classes built from the environment (and `.env`, read by python-dotenv)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"

# Values that appear in examples and tutorials; a production secret equal to or built on one
# of these is refused (ASVS 13.3.1 / 6.4: no default or placeholder secrets).
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "example", "placeholder", "secret-key", "your-")
# MAIL_URL: console (development: mails written to the log), or an SMTP server (app/services/mail.py).
MAIL_SCHEMES = ("console", "smtp", "smtps", "smtp+plain")
MAX_LEEWAY_SECONDS = 60  # RFC 8725 3.10 / ASVS: clock skew tolerance stays small
# An origin as browsers send it (RFC 6454 6.1): scheme://host[:port], no path, query or wildcard.
ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[a-z0-9-]+(\.[a-z0-9-]+)*)(:[0-9]{1,5})?", re.IGNORECASE)
# Usernames only an admin may assign: they would pass for the service's own voice or trip up
# clients (null, undefined). Compared by their RFC 8265 key (app/schemas/fields.py).
DEFAULT_RESERVED_USERNAMES = (
    "admin administrator root system support security postmaster abuse webmaster hostmaster noc help "
    "info no-reply noreply api auth www mail null undefined"
).split()


class ConfigError(RuntimeError):
    """The environment does not describe a configuration the service can start with."""


def exit_on_config_error(error: ConfigError) -> NoReturn:
    """Stop a start-up (flask, gunicorn) with one clear line on stderr and exit status 1, no traceback."""
    print(f"auth-service: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def normalize_database_url(url: str) -> str:
    """Pin the driver of a bare database URL (SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3)."""
    url = url.strip()
    for bare, pinned in (
        ("postgres://", "postgresql+psycopg2://"),
        ("postgresql://", "postgresql+psycopg2://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mysql+pymysql://"),
        ("mariadb+pymysql://", "mysql+pymysql://"),
    ):
        if url.startswith(bare):
            return pinned + url[len(bare) :]
    return url


def _text(environ: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    """Read a string variable; empty counts as unset."""
    value = environ.get(name)
    if value is None or str(value).strip() == "":
        return default
    return str(value).strip()


def parse_networks(entries: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parse addresses and CIDR networks; raise ValueError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an IP address or network") from None
    return networks


def check_fernet_keys(keys: list[str]) -> None:
    """Raise ValueError (without the key's text) unless every key is a Fernet key."""
    from cryptography.fernet import Fernet

    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())  # cryptography's own check of the key's form
        except (ValueError, TypeError):
            raise ValueError(
                f"ENCRYPTION_KEY: key {position} is not a Fernet key (32 bytes, url-safe base64); "
                "make one with `flask mfa generate-key`"
            ) from None


def env_int(
    environ: Mapping[str, Any], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """Read an integer variable within bounds, or stop start-up with a clear message."""
    raw = _text(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _bool(environ: Mapping[str, Any], name: str, default: bool) -> bool:
    """Read a true/false variable, or stop start-up with a clear message."""
    raw = _text(environ, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(environ: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    """Read a variable that must be one of `allowed`."""
    value = _text(environ, name, default)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _absolute_url(name: str, url: str) -> str:
    """An absolute http(s) URL with a host, without a trailing slash; else ConfigError."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {url!r}")
    return url.rstrip("/")


def _public_url(url: str) -> str:
    """PUBLIC_URL: an absolute http(s) URL without query or fragment (RFC 8414 2: so is an issuer)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ConfigError(f"PUBLIC_URL must not have a query or fragment, got {url!r}")
    return _absolute_url("PUBLIC_URL", url)


def _list(environ: Mapping[str, Any], name: str) -> list[str]:
    """Read a comma-separated list variable."""
    raw = _text(environ, name) or ""
    return [item.strip() for item in raw.split(",") if item.strip()]


def _origins(environ: Mapping[str, Any]) -> list[str]:
    """CORS_ORIGINS: exact origins only; `*` would let every site's scripts read the answers."""
    origins = _list(environ, "CORS_ORIGINS")
    for origin in origins:
        if origin == "*":
            raise ConfigError("CORS_ORIGINS must list exact origins (https://app.example.com), never '*'")
        # flask-cors reads an entry with * ? [ ( as a regular expression: only literal origins here.
        # "null" is a literal too (sandboxed frames, file://); it matches only when listed (ASVS 14.5.3).
        if origin != "null" and not ORIGIN.fullmatch(origin):
            raise ConfigError(f"CORS_ORIGINS entries must be scheme://host[:port] without a path, got {origin!r}")
    return origins


def _url_prefix(environ: Mapping[str, Any]) -> str:
    """Normalize URL_PREFIX to '' or '/segment[/segment]' without a trailing slash."""
    raw = (_text(environ, "URL_PREFIX") or "").strip("/")
    return f"/{raw}" if raw else ""


def _persistent_dev_secret(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(48)) -> str:
    """Read, or create once with mode 0600, a random secret kept in instance/ for development."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def new_encryption_key() -> str:
    """A new Fernet key (32 random bytes, url-safe base64), as ENCRYPTION_KEY wants them."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@functools.cache
def _testing_encryption_key() -> str:
    """One key for every app a test process builds: apps on the same database read each other's secrets."""
    return new_encryption_key()


def is_placeholder(secret: str) -> bool:
    """Tell whether a secret looks like an example value rather than a generated one."""
    lowered = secret.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


class BaseConfig:
    """Settings shared by every environment, read once from the given environment mapping."""

    APP_ENV = "base"
    DEFAULT_LOG_FORMAT = "json"
    DEFAULT_METRICS_PUBLIC = True

    def __init__(self, environ: Mapping[str, Any] | None = None) -> None:
        """Read every setting from `environ` (default: os.environ)."""
        env = dict(os.environ if environ is None else environ)
        self.APP_ENV = type(self).APP_ENV
        self.INSTANCE_DIR = Path(_text(env, "INSTANCE_DIR") or INSTANCE_DIR)
        self.SQLALCHEMY_DATABASE_URI = self._database_url(env)
        # Every wait on the database is bounded, so a slow or locked database answers 503 in
        # seconds instead of holding every thread (docs/OPERATIONS.md, "When a dependency fails").
        self.DATABASE_STATEMENT_TIMEOUT = env_int(env, "DATABASE_STATEMENT_TIMEOUT", 5, minimum=1, maximum=600)
        self.DATABASE_CONNECT_TIMEOUT = env_int(env, "DATABASE_CONNECT_TIMEOUT", 3, minimum=1, maximum=60)
        self.DATABASE_POOL_TIMEOUT = env_int(env, "DATABASE_POOL_TIMEOUT", 3, minimum=1, maximum=60)
        # A request holds at most one connection, so one per gunicorn thread is enough.
        self.DATABASE_POOL_SIZE = env_int(
            env, "DATABASE_POOL_SIZE", env_int(env, "GUNICORN_THREADS", 4, minimum=1), minimum=1
        )
        self.DATABASE_MAX_OVERFLOW = env_int(env, "DATABASE_MAX_OVERFLOW", 0, minimum=0)
        self.SQLALCHEMY_ENGINE_OPTIONS = self._engine_options(self.SQLALCHEMY_DATABASE_URI)
        self.SQLALCHEMY_TRACK_MODIFICATIONS = False

        self.JWT_ALGORITHM = _choice(env, "JWT_ALGORITHM", "HS256", ("HS256", "ES256", "EdDSA", "RS256"))
        # RFC 8725 3.1: exactly one algorithm is accepted, the one we sign with.
        self.JWT_DECODE_ALGORITHMS = [self.JWT_ALGORITHM]
        self.JWT_KEYS_DIR = Path(_text(env, "JWT_KEYS_DIR") or self.INSTANCE_DIR / "jwt-keys")
        self.JWT_SECRET_KEY = self._jwt_secret(env)
        # RFC 8725 3.9: when set, tokens name their audience and tokens for another are refused.
        self.JWT_AUDIENCE = _text(env, "JWT_AUDIENCE")
        self.JWT_ENCODE_AUDIENCE = self.JWT_AUDIENCE
        self.JWT_DECODE_AUDIENCE = self.JWT_AUDIENCE
        self.JWT_ACCESS_TOKEN_EXPIRES = timedelta(
            seconds=env_int(env, "JWT_ACCESS_TOKEN_EXPIRES", 900, minimum=1, maximum=86400)
        )
        self.JWT_REFRESH_TOKEN_EXPIRES = timedelta(
            seconds=env_int(env, "JWT_REFRESH_TOKEN_EXPIRES", 2592000, minimum=60, maximum=31536000)
        )
        # A session (refresh family) ends this long after its login however often it is refreshed:
        # NIST 800-63B 4.1.3 / ASVS 3.3.2 want periodic re-authentication. Default: the refresh lifetime.
        self.SESSION_MAX_LIFETIME = timedelta(
            seconds=env_int(
                env,
                "SESSION_MAX_LIFETIME",
                int(self.JWT_REFRESH_TOKEN_EXPIRES.total_seconds()),
                minimum=60,
                maximum=31536000,
            )
        )
        # The service's own external base URL, URL_PREFIX included (https://api.example.com/auth): the
        # absolute URLs of the RFC 8414 metadata, and the tokens' issuer unless JWT_ISSUER says otherwise.
        public_url = _text(env, "PUBLIC_URL")
        self.PUBLIC_URL = _public_url(public_url) if public_url is not None else None
        issuer = _text(env, "JWT_ISSUER")
        self.JWT_ISSUER = issuer or self.PUBLIC_URL or "auth-service"
        # Second factor (app/services/mfa.py): the issuer an authenticator app shows beside the
        # account; TOTP secrets encrypted at rest with ENCRYPTION_KEY (comma-separated Fernet
        # keys: the first encrypts, every one decrypts, so a key can be rotated in).
        # An issuer taken from PUBLIC_URL is a URL, not a name to show beside an account: not used here.
        self.MFA_ISSUER = _text(env, "MFA_ISSUER", issuer or "auth-service")
        self.ENCRYPTION_KEY = self._encryption_keys(env)
        self.JWT_ENCODE_ISSUER = self.JWT_ISSUER
        self.JWT_DECODE_ISSUER = self.JWT_ISSUER
        self.JWT_LEEWAY = env_int(env, "JWT_LEEWAY", 10, minimum=0, maximum=MAX_LEEWAY_SECONDS)
        self.JWT_DECODE_LEEWAY = self.JWT_LEEWAY
        self.JWT_TOKEN_LOCATION = ["headers"]
        self.JWT_IDENTITY_CLAIM = "sub"
        self.JWT_COOKIE_CSRF_PROTECT = False  # tokens are never read from cookies

        self.CORS_ORIGINS = _origins(env)
        self.URL_PREFIX = _url_prefix(env)
        self.REDIS_URL = _text(env, "REDIS_URL")
        # Seconds a rate-limit call to Redis may take before that request counts in-process instead.
        self.REDIS_TIMEOUT = env_int(env, "REDIS_TIMEOUT", 1, minimum=1, maximum=60)
        self.TRUSTED_PROXIES = _list(env, "TRUSTED_PROXIES")
        # Set but empty turns the list off; unset keeps the default.
        self.RESERVED_USERNAMES = (
            _list(env, "RESERVED_USERNAMES") if "RESERVED_USERNAMES" in env else list(DEFAULT_RESERVED_USERNAMES)
        )
        # Per-IP limits (limits' notation, ';' between several); see app/ratelimit.py.
        self.RATELIMIT_ENABLED = _bool(env, "RATELIMIT_ENABLED", True)
        self.RATELIMIT_KEY_PREFIX = _text(env, "RATELIMIT_KEY_PREFIX", "auth")
        self.RATELIMIT_LOGIN = _text(env, "RATELIMIT_LOGIN", "300/minute")
        self.RATELIMIT_LOGIN_FAILURES = _text(env, "RATELIMIT_LOGIN_FAILURES", "30/minute;300/hour")
        self.RATELIMIT_SIGNUP = _text(env, "RATELIMIT_SIGNUP", "120/minute;2000/hour")
        self.RATELIMIT_SIGNUP_FAILURES = _text(env, "RATELIMIT_SIGNUP_FAILURES", "30/minute;300/hour")
        self.RATELIMIT_REFRESH = _text(env, "RATELIMIT_REFRESH", "300/minute")
        self.RATELIMIT_REFRESH_FAILURES = _text(env, "RATELIMIT_REFRESH_FAILURES", "60/minute")
        self.RATELIMIT_CHECKTOKEN = _text(env, "RATELIMIT_CHECKTOKEN", "100000/minute")
        # POST /oauth/token per IP; its failed client authentications spend RATELIMIT_LOGIN_FAILURES like /login's.
        self.RATELIMIT_OAUTH_TOKEN = _text(env, "RATELIMIT_OAUTH_TOKEN", "300/minute")
        # Per-account login throttling; see app/services/throttle.py.
        self.LOGIN_THROTTLE_ENABLED = _bool(env, "LOGIN_THROTTLE_ENABLED", True)
        self.LOGIN_FREE_FAILURES = env_int(env, "LOGIN_FREE_FAILURES", 10, minimum=1, maximum=50)
        self.LOGIN_MAX_DELAY = env_int(env, "LOGIN_MAX_DELAY", 900, minimum=1, maximum=86400)
        self.LOGIN_FAILURE_WINDOW = env_int(env, "LOGIN_FAILURE_WINDOW", 86400, minimum=60)
        self.MAX_CONTENT_LENGTH = env_int(env, "MAX_CONTENT_LENGTH", 64 * 1024, minimum=1024)
        self._mail_settings(env)

        self.PASSWORD_MIN_LENGTH = env_int(env, "PASSWORD_MIN_LENGTH", 8, minimum=8, maximum=64)
        # ASVS 2.1.2: at least 64 allowed, more than 128 refused; NIST 800-63B: at least 64.
        self.PASSWORD_MAX_LENGTH = env_int(env, "PASSWORD_MAX_LENGTH", 128, minimum=64, maximum=4096)
        # OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 at the least.
        self.ARGON2_TIME_COST = env_int(env, "ARGON2_TIME_COST", 2, minimum=1)
        self.ARGON2_MEMORY_COST = env_int(env, "ARGON2_MEMORY_COST", 19456, minimum=8)
        self.ARGON2_PARALLELISM = env_int(env, "ARGON2_PARALLELISM", 1, minimum=1)
        # argon2 computations at once per worker process (app/services/passwords.py).
        self.PASSWORD_HASH_CONCURRENCY = env_int(env, "PASSWORD_HASH_CONCURRENCY", 1, minimum=1, maximum=64)

        # In-process revocation view kept current by LISTEN/NOTIFY (PostgreSQL only; see
        # app/services/revocation_view.py). Off, every check reads the database.
        self.REVOCATION_CACHE = _bool(env, "REVOCATION_CACHE", True)
        # Verified tokens each worker remembers, so a token presented again skips the signature
        # and parse (app/services/token_codec.py, decode_verified); 0 turns it off.
        self.TOKEN_CACHE_SIZE = env_int(env, "TOKEN_CACHE_SIZE", 2048, minimum=0, maximum=1_000_000)
        # /checkToken and /validate answered before Flask's machinery (app/hotpath.py).
        self.HOT_PATH = _bool(env, "HOT_PATH", True)
        # A file whose existence makes /ready answer 503 (the instance is stopping): the
        # Kubernetes preStop hook creates it, so readiness fails before SIGTERM (deploy/k8s).
        self.DRAIN_FILE = _text(env, "DRAIN_FILE")
        self.LOG_FORMAT = _choice(env, "LOG_FORMAT", self.DEFAULT_LOG_FORMAT, ("json", "text"))
        self.LOG_LEVEL = _choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
        self.METRICS_ENABLED = _bool(env, "METRICS_ENABLED", True)
        # When set, /metrics wants `Authorization: Bearer <METRICS_TOKEN>` (scrapers can send it).
        self.METRICS_TOKEN = _text(env, "METRICS_TOKEN")
        # Without a token, /metrics is served to anyone only when this is true; production's
        # default is false (it answers 404): the metrics would tell anyone the traffic and the login
        # failures. METRICS_PUBLIC=true is for a scrape network nobody else reaches.
        self.METRICS_PUBLIC = _bool(env, "METRICS_PUBLIC", self.DEFAULT_METRICS_PUBLIC)
        # The admin console (app/console/): server-rendered pages with their own signed session
        # cookie, which ends after ADMIN_CONSOLE_IDLE_TIMEOUT seconds without a request and
        # ADMIN_CONSOLE_MAX_LIFETIME after the sign-in however busy (ASVS 3.3.2; NIST 800-63B
        # 4.2.3 asks 15 minutes idle for the stronger levels, 12 hours at most in all).
        self.ADMIN_CONSOLE = _bool(env, "ADMIN_CONSOLE", True)
        self.ADMIN_CONSOLE_IDLE_TIMEOUT = env_int(env, "ADMIN_CONSOLE_IDLE_TIMEOUT", 900, minimum=60, maximum=86400)
        self.ADMIN_CONSOLE_MAX_LIFETIME = env_int(
            env, "ADMIN_CONSOLE_MAX_LIFETIME", 28800, minimum=self.ADMIN_CONSOLE_IDLE_TIMEOUT, maximum=43200
        )
        # Flask's signed session is the console's alone (API requests never open it: app/http.py);
        # its idle timeout is the signature's age, checked by Flask on every request.
        self.PERMANENT_SESSION_LIFETIME = timedelta(seconds=self.ADMIN_CONSOLE_IDLE_TIMEOUT)
        self.SECRET_KEY = self._secret_key(env)
        # CSRF tokens (Flask-WTF) are checked by the console's own hook, never on API requests;
        # they live as long as the console session that holds them.
        self.WTF_CSRF_CHECK_DEFAULT = False
        self.WTF_CSRF_TIME_LIMIT = None
        self.JSON_SORT_KEYS = False
        self.API_TITLE = "Auth service"
        self.API_VERSION = "1.0.0"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = self.URL_PREFIX or "/"
        # A relative server URL: clients resolve it against where they fetched the document, so it
        # is right behind any host or gateway; the documented paths are relative to it.
        self.API_SPEC_OPTIONS = {"servers": [{"url": self.URL_PREFIX or "/"}]}
        self.OPENAPI_JSON_PATH = "openapi.json"
        # /docs is served by app/api/docs.py from the pinned swagger-ui-bundle package, not by
        # flask-smorest from a CDN: so OPENAPI_SWAGGER_UI_PATH stays unset.
        self.validate()

    # Mail (app/services/mail.py, app/services/outbox.py); docs/CONTRACT.md "Mail".
    DEFAULT_MAIL_URL: str | None = "console"
    DEFAULT_OUTBOX_IN_PROCESS = False

    def _mail_settings(self, env: Mapping[str, Any]) -> None:
        """Where mail goes, what its links point at, and how the outbox delivers it."""
        self.MAIL_URL = _text(env, "MAIL_URL", self.DEFAULT_MAIL_URL)
        if self.MAIL_URL == "none":  # no mail, as when unset in production
            self.MAIL_URL = None
        if self.MAIL_URL is not None and self.MAIL_URL.split("://", 1)[0] not in MAIL_SCHEMES:
            schemes = ", ".join(f"{scheme}://" for scheme in MAIL_SCHEMES[1:])
            raise ConfigError(f"MAIL_URL must be console or start with {schemes}")
        self.MAIL_FROM = _text(env, "MAIL_FROM", "no-reply@localhost")
        self.MAIL_TIMEOUT = env_int(env, "MAIL_TIMEOUT", 10, minimum=1, maximum=300)
        # A CA bundle for an SMTP server whose certificate a private CA signed.
        self.MAIL_TLS_CA_FILE = _text(env, "MAIL_TLS_CA_FILE")
        self.MAIL_TEMPLATES_DIR = _text(env, "MAIL_TEMPLATES_DIR")
        self.FRONTEND_URL = self._frontend_url(env)
        self.PASSWORD_RESET_URL = self._link_template(env, "PASSWORD_RESET_URL", "/reset-password?token={token}")
        self.EMAIL_VERIFY_URL = self._link_template(env, "EMAIL_VERIFY_URL", "/verify-email?token={token}")
        self.EMAIL_VERIFICATION = _choice(env, "EMAIL_VERIFICATION", "optional", ("off", "optional", "required"))
        # OWASP Forgot Password Cheat Sheet: reset links expire soon; NIST 800-63B 6.1.2.3 (recovery).
        self.PASSWORD_RESET_TOKEN_EXPIRES = env_int(
            env, "PASSWORD_RESET_TOKEN_EXPIRES", 3600, minimum=60, maximum=86400
        )
        self.EMAIL_VERIFY_TOKEN_EXPIRES = env_int(env, "EMAIL_VERIFY_TOKEN_EXPIRES", 86400, minimum=60, maximum=604800)
        # Per-IP limits of the mail endpoints, and the per-address (per-account) budget of mails asked for.
        self.RATELIMIT_PASSWORD_FORGOT = _text(env, "RATELIMIT_PASSWORD_FORGOT", "20/minute;200/hour")
        self.RATELIMIT_PASSWORD_RESET = _text(env, "RATELIMIT_PASSWORD_RESET", "30/minute;300/hour")
        self.RATELIMIT_EMAIL_VERIFY = _text(env, "RATELIMIT_EMAIL_VERIFY", "30/minute;300/hour")
        self.RATELIMIT_MAIL_PER_ADDRESS = _text(env, "RATELIMIT_MAIL_PER_ADDRESS", "5/hour;20/day")
        # The delivery worker (flask outbox run).
        self.OUTBOX_IN_PROCESS = _bool(env, "OUTBOX_IN_PROCESS", self.DEFAULT_OUTBOX_IN_PROCESS)
        self.OUTBOX_MAX_ATTEMPTS = env_int(env, "OUTBOX_MAX_ATTEMPTS", 10, minimum=1, maximum=100)
        self.OUTBOX_RETRY_DELAY = env_int(env, "OUTBOX_RETRY_DELAY", 30, minimum=1, maximum=3600)
        self.OUTBOX_RETRY_MAX_DELAY = env_int(env, "OUTBOX_RETRY_MAX_DELAY", 3600, minimum=1, maximum=86400)
        self.OUTBOX_LEASE = env_int(env, "OUTBOX_LEASE", 300, minimum=1, maximum=86400)
        self.OUTBOX_BATCH_SIZE = env_int(env, "OUTBOX_BATCH_SIZE", 10, minimum=1, maximum=1000)
        self.OUTBOX_POLL_INTERVAL = (
            float(env_int(env, "OUTBOX_POLL_INTERVAL_MS", 1000, minimum=10, maximum=60000)) / 1000
        )
        self._events_settings(env)

    def _events_settings(self, env: Mapping[str, Any]) -> None:
        """Events for other services (app/services/events.py, app/services/relay.py); unset: no events."""
        self.EVENTS_AMQP_URL = _text(env, "EVENTS_AMQP_URL")
        if self.EVENTS_AMQP_URL is not None and self.EVENTS_AMQP_URL.split("://", 1)[0] not in ("amqp", "amqps"):
            raise ConfigError("EVENTS_AMQP_URL must start with amqp:// or amqps://")
        self.EVENTS_EXCHANGE = _text(env, "EVENTS_EXCHANGE", "auth.events")
        # Events published per round trip of publisher confirms (the relay's batch).
        self.EVENTS_BATCH_SIZE = env_int(env, "EVENTS_BATCH_SIZE", 500, minimum=1, maximum=5000)

    def _frontend_url(self, env: Mapping[str, Any]) -> str | None:
        """The base of the links in mails: an absolute http(s) URL without a trailing slash."""
        url = _text(env, "FRONTEND_URL", "https://localhost:8443")
        return _absolute_url("FRONTEND_URL", url) if url is not None else None

    def _link_template(self, env: Mapping[str, Any], name: str, path: str) -> str | None:
        """A link template with {token}; {FRONTEND_URL} in it is filled in now."""
        default = f"{self.FRONTEND_URL}{path}" if self.FRONTEND_URL else None
        template = _text(env, name, default)
        if template is None:
            return None
        template = template.replace("{FRONTEND_URL}", self.FRONTEND_URL or "")
        if "{token}" not in template:
            raise ConfigError(f"{name} must contain {{token}}, got {template!r}")
        # Links come from configuration only, never from a request's Host header (OWASP Forgot
        # Password Cheat Sheet: host header injection poisons reset links).
        _absolute_url(name, template.replace("{token}", "t"))
        return template

    def _database_url(self, env: Mapping[str, Any]) -> str:
        """The database URL, normalized to a pinned driver."""
        url = _text(env, "DATABASE_URL")
        if url is None:
            url = f"sqlite:///{self.INSTANCE_DIR / 'auth.db'}"
        return normalize_database_url(url)

    def _engine_options(self, url: str) -> dict[str, Any]:
        """Pool and driver settings: bounded waits everywhere, and connections checked before use
        so a restarted database is survived. MariaDB/MySQL's session limits are set on connect
        (app/__init__.py, _mysql_timeouts): the variable names differ between the two servers."""
        statement = self.DATABASE_STATEMENT_TIMEOUT
        if url.startswith("sqlite"):
            return {"connect_args": {"timeout": statement}}  # how long to wait for a write lock
        options: dict[str, Any] = {
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "pool_size": self.DATABASE_POOL_SIZE,
            "max_overflow": self.DATABASE_MAX_OVERFLOW,
            "pool_timeout": self.DATABASE_POOL_TIMEOUT,
        }
        connect_args: dict[str, Any] = {"connect_timeout": self.DATABASE_CONNECT_TIMEOUT}
        if url.startswith("postgresql"):
            # Cancelled statements surface as OperationalError (QueryCanceled, LockNotAvailable): 503.
            millis = statement * 1000
            connect_args["options"] = f"-c statement_timeout={millis} -c lock_timeout={millis}"
        options["connect_args"] = connect_args
        return options

    def _jwt_secret(self, env: Mapping[str, Any]) -> str:
        """The HS256 secret from JWT_SECRET_KEY, or one generated and kept in instance/."""
        secret = _text(env, "JWT_SECRET_KEY")
        if secret is not None:
            return secret
        return _persistent_dev_secret(self.INSTANCE_DIR / "jwt-secret.key")

    def _secret_key(self, env: Mapping[str, Any]) -> str:
        """SECRET_KEY (signs the console's session cookie and CSRF tokens), or one derived from the JWT secret.

        Derived one-way (HMAC with a purpose label), so every worker and instance that shares the
        JWT secret signs console sessions alike, and a console key says nothing of the JWT secret.
        """
        given = _text(env, "SECRET_KEY")
        if given is not None:
            return given
        label = b"auth-service admin console session key"
        return hmac.new(self.JWT_SECRET_KEY.encode(), label, hashlib.sha256).hexdigest()

    def _encryption_keys(self, env: Mapping[str, Any]) -> list[str]:
        """ENCRYPTION_KEY as a list, or one generated and kept in instance/ (development)."""
        return _list(env, "ENCRYPTION_KEY") or [
            _persistent_dev_secret(self.INSTANCE_DIR / "encryption.key", new_encryption_key)
        ]

    def validate(self) -> None:
        """Refuse settings that cannot work in any environment."""
        try:
            parse_networks(self.TRUSTED_PROXIES)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if len(self.JWT_SECRET_KEY.encode()) < 32 and self.APP_ENV != "testing":
            # RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
            raise ConfigError("JWT_SECRET_KEY must be at least 32 bytes long")
        try:
            check_fernet_keys(self.ENCRYPTION_KEY)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.JWT_SECRET_KEY in self.ENCRYPTION_KEY:
            # One secret, one purpose: a leaked signing key must not also open the TOTP secrets.
            raise ConfigError("ENCRYPTION_KEY must not be the JWT secret")

    def as_dict(self) -> dict[str, Any]:
        """The settings as a mapping for app.config."""
        return {key: value for key, value in vars(self).items() if key.isupper()}


class DevelopmentConfig(BaseConfig):
    """Local development: SQLite in instance/ and a generated secret unless told otherwise."""

    APP_ENV = "development"
    DEFAULT_LOG_FORMAT = "text"
    # `make run` delivers mail in-process (app/services/outbox.py, start_in_process).
    DEFAULT_OUTBOX_IN_PROCESS = True


class TestingConfig(BaseConfig):
    """The test suite: a cheap password hash and a per-process secret."""

    APP_ENV = "testing"

    def __init__(self, environ: Mapping[str, Any] | None = None) -> None:
        """Testing defaults: an in-memory secret and fast argon2 parameters."""
        env = dict(os.environ if environ is None else environ)
        env.setdefault("JWT_SECRET_KEY", secrets.token_urlsafe(48))
        env.setdefault("ARGON2_TIME_COST", "1")
        env.setdefault("ARGON2_MEMORY_COST", "64")
        # The suite sends everything from one address; the throttling tests turn these back on.
        env.setdefault("RATELIMIT_ENABLED", "false")
        env.setdefault("LOGIN_THROTTLE_ENABLED", "false")
        # Each listener holds a database connection; the suite turns it on where it tests it.
        env.setdefault("REVOCATION_CACHE", "false")
        env.setdefault("ENCRYPTION_KEY", _testing_encryption_key())
        super().__init__(env)

    def _database_url(self, env: Mapping[str, Any]) -> str:
        """Tests name their own database; in-memory SQLite otherwise."""
        return normalize_database_url(_text(env, "DATABASE_URL") or "sqlite://")


class ProductionConfig(BaseConfig):
    """Production: every secret and the database must be given explicitly."""

    APP_ENV = "production"
    DEFAULT_METRICS_PUBLIC = False
    # Unset: the endpoints that must send mail answer 503 mail_unavailable (docs/CONTRACT.md).
    DEFAULT_MAIL_URL = None

    def _frontend_url(self, env: Mapping[str, Any]) -> str | None:
        """No default: links in real mails must point at the real frontend."""
        url = _text(env, "FRONTEND_URL")
        return _absolute_url("FRONTEND_URL", url) if url is not None else None

    def validate(self) -> None:
        """Refuse an example METRICS_TOKEN (ASVS 6.4), and mail settings that would leak tokens or lose links."""
        super().validate()
        if self.METRICS_TOKEN is not None and is_placeholder(self.METRICS_TOKEN):
            raise ConfigError("METRICS_TOKEN looks like a placeholder; generate one (make secret)")
        if self.MAIL_URL == "console":
            # ASVS 7.1.1 / 2.5.x: reset and verification links are credentials; never in the log.
            raise ConfigError("MAIL_URL=console writes reset links to the log; use an SMTP server in production")
        if self.MAIL_URL is not None and self.FRONTEND_URL is None:
            raise ConfigError("FRONTEND_URL is required when MAIL_URL is set (the links in mails point there)")
        if self.MAIL_URL is None and self.EMAIL_VERIFICATION == "required":
            raise ConfigError("EMAIL_VERIFICATION=required needs MAIL_URL: nobody could ever verify")

    def _database_url(self, env: Mapping[str, Any]) -> str:
        """DATABASE_URL is required: a production service never invents its own database."""
        url = _text(env, "DATABASE_URL")
        if url is None:
            raise ConfigError("DATABASE_URL is required when APP_ENV=production")
        return normalize_database_url(url)

    def _encryption_keys(self, env: Mapping[str, Any]) -> list[str]:
        """ENCRYPTION_KEY as given; none is invented in production (MFA then answers 503 mfa_unavailable)."""
        return _list(env, "ENCRYPTION_KEY")

    def _secret_key(self, env: Mapping[str, Any]) -> str:
        """SECRET_KEY when given (at least 32 bytes, no example value), else derived from JWT_SECRET_KEY.

        With key files and no JWT_SECRET_KEY there is nothing shared to derive from: a console
        signed with a per-process key would sign admins out at every other request.
        """
        given = _text(env, "SECRET_KEY")
        if given is not None:
            if len(given.encode()) < 32 or is_placeholder(given):
                raise ConfigError("SECRET_KEY must be at least 32 bytes and not a placeholder (make secret)")
            return given
        if _text(env, "JWT_SECRET_KEY") is None and self.ADMIN_CONSOLE:
            raise ConfigError("ADMIN_CONSOLE needs SECRET_KEY (or JWT_SECRET_KEY) when APP_ENV=production")
        return super()._secret_key(env)

    def _jwt_secret(self, env: Mapping[str, Any]) -> str:
        """JWT_SECRET_KEY is required for HS256, at least 32 bytes, and not an example value."""
        secret = _text(env, "JWT_SECRET_KEY")
        if secret is None and self.JWT_ALGORITHM != "HS256":
            return secrets.token_urlsafe(48)  # unused: tokens are signed with the key files
        if secret is None:
            raise ConfigError("JWT_SECRET_KEY is required when APP_ENV=production")
        if is_placeholder(secret):
            raise ConfigError("JWT_SECRET_KEY looks like a placeholder; generate one (make secret)")
        return secret


CONFIGS: dict[str, type[BaseConfig]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def check_serving(settings: BaseConfig, workers: int) -> None:
    """Refuse a production instance whose documented per-IP budgets would not hold.

    Without REDIS_URL each gunicorn worker counts the per-IP limits on its own, so N workers
    would allow N times RATELIMIT_LOGIN_FAILURES (ASVS 2.2.1: the budget must be the one stated).
    The account throttle is in the database and holds regardless. Raises ConfigError.
    """
    if settings.APP_ENV != "production" or workers <= 1:
        return
    if settings.RATELIMIT_ENABLED and not settings.REDIS_URL:
        raise ConfigError(
            f"{workers} workers without REDIS_URL would each count the per-IP rate limits on their own; "
            "set REDIS_URL (shared limits), GUNICORN_WORKERS=1, or RATELIMIT_ENABLED=false (limits enforced in front)"
        )


def get_config(environ: Mapping[str, Any] | None = None) -> BaseConfig:
    """Build the config class that APP_ENV names."""
    env = os.environ if environ is None else environ
    name = (_text(env, "APP_ENV") or "development").lower()
    if name not in CONFIGS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}, got {name!r}")
    return CONFIGS[name](env)
