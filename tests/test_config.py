"""config.py: URL normalization, refusals at start-up, the development secret, parsing of values."""

from __future__ import annotations

import os
import secrets
import stat

import pytest

import config
from app import create_app
from config import ConfigError, get_config, normalize_database_url

STRONG_SECRET = secrets.token_urlsafe(48)


def production_env(**overrides) -> dict[str, str]:
    """An environment production accepts, with overrides (None removes a variable)."""
    env = {"APP_ENV": "production", "DATABASE_URL": "postgresql://u:p@db/auth", "JWT_SECRET_KEY": STRONG_SECRET}
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


@pytest.fixture
def dev_env(tmp_path):
    """A development environment whose instance folder is a temporary directory."""
    return {"APP_ENV": "development", "INSTANCE_DIR": str(tmp_path)}


# --- normalize_database_url ------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("mysql://u:p@h/db", "mysql+pymysql://u:p@h/db"),
        ("mariadb://u:p@h/db", "mysql+pymysql://u:p@h/db"),
        ("mariadb+pymysql://u:p@h/db", "mysql+pymysql://u:p@h/db"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql+psycopg2://u:p@h/db"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("mysql+pymysql://u:p@h/db", "mysql+pymysql://u:p@h/db"),
        ("sqlite:///instance/auth.db", "sqlite:///instance/auth.db"),
        ("sqlite://", "sqlite://"),
        ("  postgres://u@h/db \n", "postgresql+psycopg2://u@h/db"),
    ],
)
def test_normalize_database_url_pins_driver(given, expected):
    assert normalize_database_url(given) == expected


def test_production_database_url_is_normalized():
    assert get_config(production_env(DATABASE_URL="postgres://u@h/db")).SQLALCHEMY_DATABASE_URI == (
        "postgresql+psycopg2://u@h/db"
    )


# --- production refuses to start ---------------------------------------------------------------


def test_production_with_good_settings_starts():
    settings = get_config(production_env())
    assert isinstance(settings, config.ProductionConfig)
    assert settings.JWT_SECRET_KEY == STRONG_SECRET


@pytest.mark.parametrize(
    "overrides",
    [
        {"DATABASE_URL": None},
        {"DATABASE_URL": "  "},
        {"JWT_SECRET_KEY": None},
        {"JWT_SECRET_KEY": ""},
        {"JWT_SECRET_KEY": "x" * 31},
        {"JWT_SECRET_KEY": "é" * 15},  # 30 bytes, though 15 characters
        {"JWT_SECRET_KEY": "change-me-" + "a" * 40},
        {"JWT_SECRET_KEY": "CHANGEME" + "b" * 40},
        {"JWT_SECRET_KEY": "your-secret-key-goes-here-0123456789"},
        {"JWT_SECRET_KEY": "this-is-an-example-value-of-a-jwt-key"},
    ],
    ids=[
        "no-database",
        "blank-database",
        "no-secret",
        "empty-secret",
        "31-bytes",
        "30-bytes-multibyte",
        "change-me",
        "changeme-upper",
        "your-",
        "example",
    ],
)
def test_production_refuses_to_start(overrides):
    with pytest.raises(ConfigError):
        get_config(production_env(**overrides))


def test_production_accepts_exactly_32_bytes():
    assert get_config(production_env(JWT_SECRET_KEY="k" * 32)).JWT_SECRET_KEY == "k" * 32


def test_production_missing_secret_message_names_variable():
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        get_config(production_env(JWT_SECRET_KEY=None))


def test_production_missing_database_message_names_variable():
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        get_config(production_env(DATABASE_URL=None))


def test_create_app_in_production_without_secret_raises(monkeypatch):
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError):
        create_app({"APP_ENV": "production", "DATABASE_URL": "sqlite://"})


def test_create_app_in_production_with_placeholder_raises(monkeypatch):
    with pytest.raises(ConfigError):
        create_app({"APP_ENV": "production", "DATABASE_URL": "sqlite://", "JWT_SECRET_KEY": "change-me-" * 5})


# --- development secret ------------------------------------------------------------------------


def test_development_generates_secret_in_instance_dir(tmp_path, dev_env):
    settings = get_config(dev_env)
    key_files = list(tmp_path.iterdir())
    secret_files = [path for path in key_files if path.read_text().strip() == settings.JWT_SECRET_KEY]
    assert len(secret_files) == 1
    assert stat.S_IMODE(os.stat(secret_files[0]).st_mode) == 0o600
    assert len(settings.JWT_SECRET_KEY.encode()) >= 32
    assert not config.is_placeholder(settings.JWT_SECRET_KEY)


def test_development_reuses_generated_secret(dev_env):
    assert get_config(dev_env).JWT_SECRET_KEY == get_config(dev_env).JWT_SECRET_KEY


def test_development_secrets_differ_between_instance_dirs(tmp_path):
    first = get_config({"APP_ENV": "development", "INSTANCE_DIR": str(tmp_path / "a")}).JWT_SECRET_KEY
    second = get_config({"APP_ENV": "development", "INSTANCE_DIR": str(tmp_path / "b")}).JWT_SECRET_KEY
    assert first != second


def test_development_given_secret_is_used_and_not_written(tmp_path, dev_env):
    settings = get_config({**dev_env, "JWT_SECRET_KEY": STRONG_SECRET})
    assert settings.JWT_SECRET_KEY == STRONG_SECRET
    assert not any(path.is_file() and STRONG_SECRET in path.read_text() for path in tmp_path.iterdir())


def test_development_default_database_is_sqlite_in_instance_dir(tmp_path, dev_env):
    url = get_config(dev_env).SQLALCHEMY_DATABASE_URI
    assert url.startswith("sqlite:///")
    assert str(tmp_path) in url


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("leeway", ["61", "3600", "-1"])
def test_leeway_out_of_bounds_is_refused(dev_env, leeway):
    with pytest.raises(ConfigError, match="JWT_LEEWAY"):
        get_config({**dev_env, "JWT_LEEWAY": leeway})


@pytest.mark.parametrize("leeway", ["0", "60"])
def test_leeway_within_bounds_is_used(dev_env, leeway):
    settings = get_config({**dev_env, "JWT_LEEWAY": leeway})
    assert settings.JWT_LEEWAY == settings.JWT_DECODE_LEEWAY == int(leeway)


@pytest.mark.parametrize("variable", ["JWT_ACCESS_TOKEN_EXPIRES", "JWT_REFRESH_TOKEN_EXPIRES"])
@pytest.mark.parametrize("value", ["15m", "1.5", "abc", "0x10"])
def test_lifetime_not_a_whole_number_is_refused(dev_env, variable, value):
    with pytest.raises(ConfigError, match=variable):
        get_config({**dev_env, variable: value})


@pytest.mark.parametrize(
    "variable, value",
    [("JWT_ACCESS_TOKEN_EXPIRES", "0"), ("JWT_ACCESS_TOKEN_EXPIRES", "-5"), ("JWT_REFRESH_TOKEN_EXPIRES", "0")],
)
def test_lifetime_out_of_bounds_is_refused(dev_env, variable, value):
    with pytest.raises(ConfigError, match=variable):
        get_config({**dev_env, variable: value})


def test_lifetimes_default_and_parse(dev_env):
    defaults = get_config(dev_env)
    assert defaults.JWT_ACCESS_TOKEN_EXPIRES.total_seconds() == 900
    assert defaults.JWT_REFRESH_TOKEN_EXPIRES.total_seconds() == 2592000
    given = get_config({**dev_env, "JWT_ACCESS_TOKEN_EXPIRES": " 60 ", "JWT_REFRESH_TOKEN_EXPIRES": "3600"})
    assert given.JWT_ACCESS_TOKEN_EXPIRES.total_seconds() == 60
    assert given.JWT_REFRESH_TOKEN_EXPIRES.total_seconds() == 3600


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("auth", "/auth"),
        ("/auth", "/auth"),
        ("/auth/", "/auth"),
        ("auth/", "/auth"),
        ("/api/auth/", "/api/auth"),
        ("", ""),
        ("/", ""),
        ("  ", ""),
    ],
)
def test_url_prefix_is_normalized(dev_env, raw, expected):
    assert get_config({**dev_env, "URL_PREFIX": raw}).URL_PREFIX == expected


def test_url_prefix_unset_is_empty(dev_env):
    assert get_config(dev_env).URL_PREFIX == ""


@pytest.mark.parametrize("name", ["staging", "prod", "test", "dev"])
def test_unknown_app_env_is_refused(dev_env, name):
    with pytest.raises(ConfigError, match="APP_ENV"):
        get_config({**dev_env, "APP_ENV": name})


@pytest.mark.parametrize(
    "name, cls",
    [
        ("development", config.DevelopmentConfig),
        ("Development", config.DevelopmentConfig),
        ("testing", config.TestingConfig),
        ("", config.DevelopmentConfig),
    ],
)
def test_app_env_selects_config_class(dev_env, name, cls):
    assert type(get_config({**dev_env, "APP_ENV": name})) is cls


def test_only_hs256_is_accepted(dev_env):
    settings = get_config(dev_env)
    assert settings.JWT_ALGORITHM == "HS256"
    assert settings.JWT_DECODE_ALGORITHMS == ["HS256"]


def test_cors_origins_are_split_and_trimmed(dev_env):
    settings = get_config({**dev_env, "CORS_ORIGINS": " https://a.example , https://b.example,, "})
    assert settings.CORS_ORIGINS == ["https://a.example", "https://b.example"]


def test_development_short_given_secret_is_refused(dev_env):
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        get_config({**dev_env, "JWT_SECRET_KEY": "too-short"})


@pytest.mark.parametrize("origins", ["*", "https://app.example.com,*"])
def test_cors_wildcard_is_refused(dev_env, origins):
    with pytest.raises(ConfigError, match=r"CORS_ORIGINS must list exact origins .*never '\*'"):
        get_config({**dev_env, "CORS_ORIGINS": origins})


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com/",
        "https://app.example.com/path",
        "app.example.com",
        "https://*.example.com",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "https://app.example.com:port",
        "//app.example.com",
    ],
)
def test_cors_origin_must_be_scheme_host_and_port_only(dev_env, origin):
    with pytest.raises(ConfigError, match="CORS_ORIGINS entries must be scheme://host\\[:port\\] without a path"):
        get_config({**dev_env, "CORS_ORIGINS": origin})


def test_cors_exact_origins_are_accepted(dev_env):
    origins = "https://app.example.com,http://localhost:3000,https://[::1]:8443,capacitor://localhost,null"
    assert get_config({**dev_env, "CORS_ORIGINS": origins}).CORS_ORIGINS == origins.split(",")


def test_metrics_are_public_by_default_only_outside_production(dev_env):
    assert get_config(dev_env).METRICS_PUBLIC is True
    production = {"APP_ENV": "production", "DATABASE_URL": "sqlite://", "JWT_SECRET_KEY": secrets.token_urlsafe(48)}
    assert get_config(production).METRICS_PUBLIC is False
    assert get_config({**production, "METRICS_PUBLIC": "true"}).METRICS_PUBLIC is True
    with pytest.raises(ConfigError, match="METRICS_TOKEN looks like a placeholder"):
        get_config({**production, "METRICS_TOKEN": "change-me-metrics"})


# --- RESERVED_USERNAMES ---------------------------------------------------------------------


def test_reserved_usernames_default_list():
    reserved = get_config({"APP_ENV": "testing"}).RESERVED_USERNAMES
    assert {"admin", "root", "support", "no-reply", "noreply", "null", "undefined"} <= set(reserved)


@pytest.mark.parametrize(("raw", "expected"), [("staff, boss ,", ["staff", "boss"]), ("", [])])
def test_reserved_usernames_parsed_as_a_list(raw, expected):
    assert get_config({"APP_ENV": "testing", "RESERVED_USERNAMES": raw}).RESERVED_USERNAMES == expected


def _production(**extra):
    from config import get_config

    return get_config({"APP_ENV": "production", "DATABASE_URL": "sqlite://", "JWT_SECRET_KEY": "k" * 48, **extra})


def test_production_without_mail_url_has_no_mail():
    config = _production()
    assert config.MAIL_URL is None and config.FRONTEND_URL is None


def test_production_with_mail_needs_frontend_url():
    import pytest

    from config import ConfigError

    with pytest.raises(ConfigError, match="FRONTEND_URL"):
        _production(MAIL_URL="smtp://u:p@mail.example.com:587")
    config = _production(MAIL_URL="smtp://u:p@mail.example.com:587", FRONTEND_URL="https://app.example.com/")
    assert config.EMAIL_VERIFY_URL == "https://app.example.com/verify-email?token={token}"


def test_production_refuses_console_mail_and_required_verification_without_mail():
    import pytest

    from config import ConfigError

    with pytest.raises(ConfigError, match="console"):
        _production(MAIL_URL="console", FRONTEND_URL="https://app.example.com")
    with pytest.raises(ConfigError, match="EMAIL_VERIFICATION"):
        _production(EMAIL_VERIFICATION="required")


def test_mail_settings_are_checked():
    import pytest

    from config import ConfigError, get_config

    for bad in ({"MAIL_URL": "ftp://x"}, {"PASSWORD_RESET_URL": "https://x/reset"}, {"FRONTEND_URL": "localhost"}):
        with pytest.raises(ConfigError):
            get_config({"APP_ENV": "testing", **bad})
    config = get_config({"APP_ENV": "development", "INSTANCE_DIR": "/tmp/auth-config-test"})
    assert (config.MAIL_URL, config.OUTBOX_IN_PROCESS, config.EMAIL_VERIFICATION) == ("console", True, "optional")
    assert get_config({"APP_ENV": "testing"}).OUTBOX_IN_PROCESS is False


def test_events_are_off_without_a_broker_and_the_url_is_checked():
    settings = get_config({"APP_ENV": "testing"})
    assert (settings.EVENTS_AMQP_URL, settings.EVENTS_EXCHANGE, settings.EVENTS_BATCH_SIZE) == (
        None,
        "auth.events",
        500,
    )
    for bad in (
        {"EVENTS_AMQP_URL": "http://rabbit:5672"},
        {"EVENTS_AMQP_URL": "rabbit:5672"},
        {"EVENTS_BATCH_SIZE": "0"},
    ):
        with pytest.raises(ConfigError):
            get_config({"APP_ENV": "testing", **bad})
    chosen = get_config({"APP_ENV": "testing", "EVENTS_AMQP_URL": "amqps://u:p@mq:5671/%2F", "EVENTS_EXCHANGE": "x"})
    assert (chosen.EVENTS_AMQP_URL, chosen.EVENTS_EXCHANGE) == ("amqps://u:p@mq:5671/%2F", "x")


# --- the admin console -------------------------------------------------------------------------


def test_console_is_on_with_a_short_idle_timeout_by_default(dev_env):
    settings = get_config(dev_env)
    assert settings.ADMIN_CONSOLE is True
    assert settings.ADMIN_CONSOLE_IDLE_TIMEOUT == 900 and settings.ADMIN_CONSOLE_MAX_LIFETIME == 28800
    assert settings.PERMANENT_SESSION_LIFETIME.total_seconds() == 900
    assert settings.WTF_CSRF_CHECK_DEFAULT is False  # the console's hook checks; API views are untouched


def test_the_console_key_is_derived_alike_on_every_instance_and_is_not_the_jwt_secret():
    one, two = get_config(production_env()), get_config(production_env())
    assert one.SECRET_KEY == two.SECRET_KEY and len(one.SECRET_KEY) >= 32
    assert STRONG_SECRET not in one.SECRET_KEY
    assert get_config(production_env(JWT_SECRET_KEY=secrets.token_urlsafe(48))).SECRET_KEY != one.SECRET_KEY
    given = secrets.token_urlsafe(40)
    assert get_config(production_env(SECRET_KEY=given)).SECRET_KEY == given


@pytest.mark.parametrize("secret", ["x" * 31, "change-me-" + "a" * 40])
def test_production_refuses_a_weak_secret_key(secret):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        get_config(production_env(SECRET_KEY=secret))


def test_production_with_key_files_needs_a_secret_key_while_the_console_is_on():
    env = production_env(JWT_SECRET_KEY=None, JWT_ALGORITHM="ES256")
    with pytest.raises(ConfigError, match="ADMIN_CONSOLE needs SECRET_KEY"):
        get_config(env)
    assert get_config({**env, "ADMIN_CONSOLE": "false"}).ADMIN_CONSOLE is False
    assert get_config({**env, "SECRET_KEY": secrets.token_urlsafe(40)}).ADMIN_CONSOLE is True


@pytest.mark.parametrize(
    "overrides",
    [
        {"ADMIN_CONSOLE": "maybe"},
        {"ADMIN_CONSOLE_IDLE_TIMEOUT": "59"},
        {"ADMIN_CONSOLE_IDLE_TIMEOUT": "15m"},
        {"ADMIN_CONSOLE_IDLE_TIMEOUT": "900", "ADMIN_CONSOLE_MAX_LIFETIME": "899"},
        {"ADMIN_CONSOLE_MAX_LIFETIME": "43201"},
    ],
)
def test_console_settings_are_checked(dev_env, overrides):
    with pytest.raises(ConfigError):
        get_config({**dev_env, **overrides})
