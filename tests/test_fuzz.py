"""Property-based fuzzing of the whole HTTP API with schemathesis, driven by the served /openapi.json.

Issue 3, item 7: no 5xx and no response that breaks the documented schema.

* `test_fuzz_without_credentials`: every operation, with no token or only the Authorization values
  schemathesis makes up itself.
* `test_fuzz_as_admin`: every operation that takes a Bearer token, as an admin (signed up through the
  API, promoted in the database, logged in). Every case that could end, change or spend its caller
  (logout, refresh, account deletion, password change, session revocation, demotion, deactivation)
  gets an admin of its own, so no fuzzed request can sign the run out; reads share one admin.

The document does not describe which strings are acceptable (email, username pattern, password
length), so nearly everything generated from it alone is a 400. Generation hooks therefore sometimes
swap a fuzzed value for a plausible or real one (an email, a username, the right password, a real
token, the caller's own id), so the success paths get fuzzed too; and now and then they append a NUL
or a lone surrogate to one string field, text the generators never make (surrogates) or rarely place
where it matters (NUL), which must be a 400 and never a 500.

Runs on one backend only: PostgreSQL when it is reachable (the strictest about text), else SQLite.
"""

from __future__ import annotations

import itertools
import uuid

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks

from app.extensions import db
from app.models import User
from tests.databases import selected_backends
from tests.helpers import PASSWORD, Auth, bearer

MAX_EXAMPLES = 30
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# "No 5xx and conforms to the documented schema": a documented status, a documented media type
# (problem+json for errors, application/json for successes), the documented headers, and a body that
# validates against the documented schema. status_code_conformance stays on, but every operation
# documents a problem+json `default` response, so any status passes it; what `default` covers then
# still has to be a valid problem document with the right media type.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]

# Placeholders the generation hooks put in place of a fuzzed value; the test swaps in the real value
# just before the call (the ids and tokens only exist once the case's account is made). Only
# characters that URL quoting leaves alone, since path parameters arrive quoted.
OWN_ID = "fuzz-own-id"
OTHER_ID = "fuzz-other-id"
OWN_SESSION = "fuzz-own-session"
OWN_EMAIL = "fuzz-own-email"
ACCESS_TOKEN = "fuzz-access-token"
REFRESH_TOKEN = "fuzz-refresh-token"
PLACEHOLDERS = frozenset({OWN_ID, OTHER_ID, OWN_SESSION, OWN_EMAIL, ACCESS_TOKEN, REFRESH_TOKEN})

# Usernames of the ASCII alphabet, so most are accepted (app/schemas/fields.py allows more).
USERNAME_ASCII = r"[A-Za-z0-9][A-Za-z0-9_.-]{2,31}"
PASSWORDS = st.sampled_from([PASSWORD]) | st.text(min_size=8, max_size=40)
TOKENS = st.sampled_from([ACCESS_TOKEN, REFRESH_TOKEN])
BODY_ALTERNATIVES = {
    "email": st.emails() | st.just(OWN_EMAIL),
    "username": st.from_regex(USERNAME_ASCII, fullmatch=True),
    "password": PASSWORDS,
    "password_confirm": PASSWORDS,
    "new_password": PASSWORDS,
    "current_password": st.just(PASSWORD),
    "token": TOKENS,
    "refresh_token": TOKENS,
}
# PostgreSQL refuses NUL in text; a lone surrogate is a legal JSON escape ("\ud800") that no UTF-8 encoder accepts.
UNSTORABLE = st.sampled_from(["\x00", "\ud800"])
FORM_PATHS = ("/oauth/token", "/introspect")
PATH_ALTERNATIVES = {
    "user_id": st.sampled_from([OWN_ID, OTHER_ID]),
    "session_id": st.just(OWN_SESSION),
}
_emails = itertools.count(1)


def fuzz_backend(config: pytest.Config) -> str | None:
    """The one backend the fuzzer runs on: PostgreSQL (the strictest about text) when reachable, else SQLite."""
    available = [name for name in selected_backends() if name not in config.backend_problems]
    return next((name for name in ("postgresql", "sqlite", "mysql") if name in available), None)


@pytest.fixture
def fuzz_app(request, make_app, backend):
    """A dedicated app (its tables are emptied after the test); rate limits and login throttling off."""
    chosen = fuzz_backend(request.config)
    if backend != chosen:
        pytest.skip(f"the API fuzzer runs on one backend only ({chosen}) to keep CI time bounded; this is {backend}")
    return make_app(RATELIMIT_ENABLED="false", LOGIN_THROTTLE_ENABLED="false")


def _alternatives(value, choices: dict) -> st.SearchStrategy:
    """Keep each fuzzed string, or swap it for one of its alternatives."""
    if not isinstance(value, dict):
        return st.just(value)
    swappable = {key: st.just(item) | choices[key] for key, item in value.items() if key in choices}
    if not swappable or not all(isinstance(value[key], str) or value[key] is None for key in swappable):
        return st.just(value)
    return st.fixed_dictionaries(swappable).map(lambda swapped: {**value, **swapped})


def _sometimes_unstorable(body, unstorable: st.SearchStrategy = UNSTORABLE) -> st.SearchStrategy:
    """One time in four, one string field of the body with a NUL or a lone surrogate appended."""
    fields = sorted(key for key, value in body.items() if isinstance(value, str)) if isinstance(body, dict) else []
    if not fields:
        return st.just(body)
    spoiled = st.tuples(st.sampled_from(fields), unstorable).map(
        lambda choice: {**body, choice[0]: body[choice[0]] + choice[1]}
    )
    return st.integers(0, 3).flatmap(lambda roll: spoiled if roll == 0 else st.just(body))


def load_schema(app, *, steer_paths: bool):
    """The OpenAPI document exactly as the app serves it, with the steering hooks."""
    # A fixed seed here and derandomize in FUZZ_SETTINGS: the same code gets the same requests every run.
    # Every credential is a throwaway of this test, so failure reports show tokens and passwords as sent
    # (sanitized, a request that fails on its `password` or `token` could not be reproduced).
    config = schemathesis.Config(
        seed=20240607,
        output=schemathesis.config.OutputConfig(sanitization=schemathesis.config.SanitizationConfig(enabled=False)),
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)

    @schema.hook
    def flatmap_body(context, body):
        """Sometimes a plausible email, username or password, the right password, a real token, bad text."""
        # A form body (the OAuth endpoints) is bytes on the wire: it can carry a NUL, never a lone surrogate.
        operation = getattr(context, "operation", None)
        if getattr(operation, "path", "").endswith(FORM_PATHS):
            return _alternatives(body, BODY_ALTERNATIVES).flatmap(lambda b: _sometimes_unstorable(b, st.just("\x00")))
        return _alternatives(body, BODY_ALTERNATIVES).flatmap(_sometimes_unstorable)

    if steer_paths:

        @schema.hook
        def flatmap_path_parameters(context, path_parameters):
            """Sometimes the caller's own id or session, or another real user."""
            return _alternatives(path_parameters, PATH_ALTERNATIVES)

    return schema


@pytest.fixture
def anonymous_schema(fuzz_app):
    """The served schema, for the calls without credentials."""
    return load_schema(fuzz_app, steer_paths=False)


@pytest.fixture
def admin_schema(fuzz_app):
    """The served schema, for the calls as an admin."""
    return load_schema(fuzz_app, steer_paths=True)


class Account:
    """One account made through the API for one generated case, and what the placeholders stand for."""

    def __init__(self, app, *, admin: bool) -> None:
        """Sign up (a first session), promote in the database if asked, log in (a second session)."""
        self.auth = Auth(app.test_client(), app)
        signup = self.auth.signup(f"fuzz{next(_emails)}@example.com")
        if admin:
            with app.app_context():
                db.session.get(User, uuid.UUID(signup["user_id"])).role = "admin"
                db.session.commit()
        login = self.auth.login(signup["user"]["email"])
        self.values = {
            OWN_ID: signup["user_id"],
            OWN_EMAIL: signup["user"]["email"],
            OWN_SESSION: jwt.decode(signup["access_token"], options={"verify_signature": False})["sid"],
            ACCESS_TOKEN: login["access_token"],
            REFRESH_TOKEN: login["refresh_token"],
        }

    def resolve(self, value):
        """The real value behind a placeholder (another user is made on demand)."""
        if value == OTHER_ID:
            return self.auth.signup(f"fuzz{next(_emails)}@example.com")["user_id"]
        return self.values[value] if isinstance(value, str) and value in self.values else value


def uses_placeholders(case) -> bool:
    """Whether any path parameter or top-level body field is a placeholder."""
    body = case.body if isinstance(case.body, dict) else {}
    values = [*(case.path_parameters or {}).values(), *body.values()]
    return any(isinstance(value, str) and value in PLACEHOLDERS for value in values)


def fill_in(case, account: Account) -> None:
    """Swap the placeholders in the case for the account's real values."""
    for name, value in list((case.path_parameters or {}).items()):
        case.path_parameters[name] = account.resolve(value)
    if isinstance(case.body, dict):
        for name, value in list(case.body.items()):
            case.body[name] = account.resolve(value)


def takes_bearer_token(ctx) -> bool:
    """Operations whose documented security includes the Bearer scheme."""
    return any("bearerAuth" in requirement for requirement in ctx.operation.definition.raw.get("security", []))


anonymous = schemathesis.pytest.from_fixture("anonymous_schema")
as_admin = schemathesis.pytest.from_fixture("admin_schema").include(takes_bearer_token)


@pytest.fixture(autouse=True)
def _schemathesis_nodeid_shim(request):
    """schemathesis 4.32.5's `from_fixture` reads and renames `Node._nodeid`, which pytest 9.2 no longer has."""
    request.node._nodeid = request.node.nodeid


@FUZZ_SETTINGS
@anonymous.parametrize()
def test_fuzz_without_credentials(case, fuzz_app):
    """Every operation without a real credential: never a 5xx, always the documented shape."""
    if uses_placeholders(case):
        fill_in(case, Account(fuzz_app, admin=False))
    case.call_and_validate(checks=CHECKS)


def leaves_the_caller_alone(case) -> bool:
    """Operations that cannot end, change or spend anything of the calling admin: reads, and creating a user."""
    return case.operation.method.upper() == "GET" or case.operation.label == "POST /users"


@pytest.fixture
def admins(fuzz_app):
    """A fresh admin for each case that may harm its caller; one shared admin for the cases that cannot."""
    shared = []

    def for_case(case) -> Account:
        if not leaves_the_caller_alone(case):
            return Account(fuzz_app, admin=True)
        if not shared:
            shared.append(Account(fuzz_app, admin=True))
        return shared[0]

    return for_case


@FUZZ_SETTINGS
@as_admin.parametrize()
def test_fuzz_as_admin(case, admins):
    """Every operation that takes a Bearer token, as an admin: never a 5xx, always the documented shape."""
    account = admins(case)
    fill_in(case, account)
    case.call_and_validate(headers=bearer(account.values[ACCESS_TOKEN]), checks=CHECKS)
