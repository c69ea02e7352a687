"""Configuration classes built from the environment (and `.env`, read by python-dotenv)."""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"

# Values that appear in examples and tutorials; a production secret equal to or built on one
# of these is refused (ASVS 13.3.1 / 6.4: no default or placeholder secrets).
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "example", "placeholder", "secret-key", "your-")
MAX_LEEWAY_SECONDS = 60  # RFC 8725 3.10 / ASVS: clock skew tolerance stays small


class ConfigError(RuntimeError):
    """The environment does not describe a configuration the service can start with."""


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


def _int(environ: Mapping[str, Any], name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
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


def _list(environ: Mapping[str, Any], name: str) -> list[str]:
    """Read a comma-separated list variable."""
    raw = _text(environ, name) or ""
    return [item.strip() for item in raw.split(",") if item.strip()]


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

    def __init__(self, environ: Mapping[str, Any] | None = None) -> None:
        """Read every setting from `environ` (default: os.environ)."""
        env = dict(os.environ if environ is None else environ)
        self.APP_ENV = type(self).APP_ENV
        self.INSTANCE_DIR = Path(_text(env, "INSTANCE_DIR") or INSTANCE_DIR)
        self.SQLALCHEMY_DATABASE_URI = self._database_url(env)
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
            seconds=_int(env, "JWT_ACCESS_TOKEN_EXPIRES", 900, minimum=1, maximum=86400)
        )
        self.JWT_REFRESH_TOKEN_EXPIRES = timedelta(
            seconds=_int(env, "JWT_REFRESH_TOKEN_EXPIRES", 2592000, minimum=60, maximum=31536000)
        )
        # A session (refresh family) ends this long after its login however often it is refreshed:
        # NIST 800-63B 4.1.3 / ASVS 3.3.2 want periodic re-authentication. Default: the refresh lifetime.
        self.SESSION_MAX_LIFETIME = timedelta(
            seconds=_int(
                env,
                "SESSION_MAX_LIFETIME",
                int(self.JWT_REFRESH_TOKEN_EXPIRES.total_seconds()),
                minimum=60,
                maximum=31536000,
            )
        )
        self.JWT_ISSUER = _text(env, "JWT_ISSUER", "auth-service")
        # Second factor (app/services/mfa.py): the issuer an authenticator app shows beside the
        # account; TOTP secrets encrypted at rest with ENCRYPTION_KEY (comma-separated Fernet
        # keys: the first encrypts, every one decrypts, so a key can be rotated in).
        self.MFA_ISSUER = _text(env, "MFA_ISSUER", self.JWT_ISSUER)
        self.ENCRYPTION_KEY = self._encryption_keys(env)
        self.JWT_ENCODE_ISSUER = self.JWT_ISSUER
        self.JWT_DECODE_ISSUER = self.JWT_ISSUER
        self.JWT_LEEWAY = _int(env, "JWT_LEEWAY", 10, minimum=0, maximum=MAX_LEEWAY_SECONDS)
        self.JWT_DECODE_LEEWAY = self.JWT_LEEWAY
        self.JWT_TOKEN_LOCATION = ["headers"]
        self.JWT_IDENTITY_CLAIM = "sub"
        self.JWT_COOKIE_CSRF_PROTECT = False  # tokens are never read from cookies

        self.CORS_ORIGINS = _list(env, "CORS_ORIGINS")
        self.URL_PREFIX = _url_prefix(env)
        self.REDIS_URL = _text(env, "REDIS_URL")
        self.TRUSTED_PROXIES = _list(env, "TRUSTED_PROXIES")
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
        # Per-account login throttling; see app/services/throttle.py.
        self.LOGIN_THROTTLE_ENABLED = _bool(env, "LOGIN_THROTTLE_ENABLED", True)
        self.LOGIN_FREE_FAILURES = _int(env, "LOGIN_FREE_FAILURES", 10, minimum=1, maximum=50)
        self.LOGIN_MAX_DELAY = _int(env, "LOGIN_MAX_DELAY", 900, minimum=1, maximum=86400)
        self.LOGIN_FAILURE_WINDOW = _int(env, "LOGIN_FAILURE_WINDOW", 86400, minimum=60)
        self.MAX_CONTENT_LENGTH = _int(env, "MAX_CONTENT_LENGTH", 64 * 1024, minimum=1024)

        self.PASSWORD_MIN_LENGTH = _int(env, "PASSWORD_MIN_LENGTH", 8, minimum=8, maximum=64)
        # ASVS 2.1.2: at least 64 allowed, more than 128 refused; NIST 800-63B: at least 64.
        self.PASSWORD_MAX_LENGTH = _int(env, "PASSWORD_MAX_LENGTH", 128, minimum=64, maximum=4096)
        # OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 at the least.
        self.ARGON2_TIME_COST = _int(env, "ARGON2_TIME_COST", 2, minimum=1)
        self.ARGON2_MEMORY_COST = _int(env, "ARGON2_MEMORY_COST", 19456, minimum=8)
        self.ARGON2_PARALLELISM = _int(env, "ARGON2_PARALLELISM", 1, minimum=1)
        # argon2 computations at once per worker process (app/services/passwords.py).
        self.PASSWORD_HASH_CONCURRENCY = _int(env, "PASSWORD_HASH_CONCURRENCY", 1, minimum=1, maximum=64)

        # In-process revocation view kept current by LISTEN/NOTIFY (PostgreSQL only; see
        # app/services/revocations.py). Off, every check reads the database.
        self.REVOCATION_CACHE = _bool(env, "REVOCATION_CACHE", True)
        # Verified tokens each worker remembers, so a token presented again skips the signature
        # and parse (app/services/tokens.py, decode); 0 turns it off.
        self.TOKEN_CACHE_SIZE = _int(env, "TOKEN_CACHE_SIZE", 2048, minimum=0, maximum=1_000_000)
        # /checkToken and /validate answered before Flask's machinery (app/hotpath.py).
        self.HOT_PATH = _bool(env, "HOT_PATH", True)
        self.LOG_FORMAT = _choice(env, "LOG_FORMAT", self.DEFAULT_LOG_FORMAT, ("json", "text"))
        self.LOG_LEVEL = _choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
        self.METRICS_ENABLED = _bool(env, "METRICS_ENABLED", True)
        # When set, /metrics wants `Authorization: Bearer <METRICS_TOKEN>` (scrapers can send it).
        self.METRICS_TOKEN = _text(env, "METRICS_TOKEN")
        # Flask's own session is not used (tokens travel as Bearer); a per-process random key
        # keeps Flask-Login from failing on a forged remember cookie, and is no fallback secret.
        self.SECRET_KEY = _text(env, "SECRET_KEY") or secrets.token_urlsafe(32)
        self.JSON_SORT_KEYS = False
        self.API_TITLE = "Auth service"
        self.API_VERSION = "1.0.0"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = self.URL_PREFIX or "/"
        self.OPENAPI_JSON_PATH = "openapi.json"
        self.OPENAPI_SWAGGER_UI_PATH = "docs"
        self.OPENAPI_SWAGGER_UI_URL = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/"
        self.validate()

    def _database_url(self, env: Mapping[str, Any]) -> str:
        """The database URL, normalized to a pinned driver."""
        url = _text(env, "DATABASE_URL")
        if url is None:
            url = f"sqlite:///{self.INSTANCE_DIR / 'auth.db'}"
        return normalize_database_url(url)

    @staticmethod
    def _engine_options(url: str) -> dict[str, Any]:
        """Pool settings: check connections before use so a restarted database is survived."""
        if url.startswith("sqlite"):
            return {"connect_args": {"timeout": 30}}
        return {"pool_pre_ping": True, "pool_recycle": 1800}

    def _jwt_secret(self, env: Mapping[str, Any]) -> str:
        """The HS256 secret from JWT_SECRET_KEY, or one generated and kept in instance/."""
        secret = _text(env, "JWT_SECRET_KEY")
        if secret is not None:
            return secret
        return _persistent_dev_secret(self.INSTANCE_DIR / "jwt-secret.key")

    def _encryption_keys(self, env: Mapping[str, Any]) -> list[str]:
        """ENCRYPTION_KEY as a list, or one generated and kept in instance/ (development)."""
        return _list(env, "ENCRYPTION_KEY") or [
            _persistent_dev_secret(self.INSTANCE_DIR / "encryption.key", new_encryption_key)
        ]

    def validate(self) -> None:
        """Refuse settings that cannot work in any environment."""
        from app.proxy import parse_networks
        from app.services.secretbox import check_keys

        try:
            parse_networks(self.TRUSTED_PROXIES)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if len(self.JWT_SECRET_KEY.encode()) < 32 and self.APP_ENV != "testing":
            # RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
            raise ConfigError("JWT_SECRET_KEY must be at least 32 bytes long")
        try:
            check_keys(self.ENCRYPTION_KEY)
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

    def _database_url(self, env: Mapping[str, Any]) -> str:
        """DATABASE_URL is required: a production service never invents its own database."""
        url = _text(env, "DATABASE_URL")
        if url is None:
            raise ConfigError("DATABASE_URL is required when APP_ENV=production")
        return normalize_database_url(url)

    def _encryption_keys(self, env: Mapping[str, Any]) -> list[str]:
        """ENCRYPTION_KEY as given; none is invented in production (MFA then answers 503 mfa_unavailable)."""
        return _list(env, "ENCRYPTION_KEY")

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


def get_config(environ: Mapping[str, Any] | None = None) -> BaseConfig:
    """Build the config class that APP_ENV names."""
    env = os.environ if environ is None else environ
    name = (_text(env, "APP_ENV") or "development").lower()
    if name not in CONFIGS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}, got {name!r}")
    return CONFIGS[name](env)
