"""Tokens: issue a pair, verify one (the hot path), rotate refresh tokens, revoke.

`verify_token` is the one place that decides whether a token is valid (docs/CONTRACT.md, "2. Tokens");
/checkToken, /validate and every protected endpoint go through it.
"""

from __future__ import annotations

import functools
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import and_, bindparam, exists, select, update
from sqlalchemy.exc import IntegrityError

from app import observability
from app.errors import InvalidToken, KeysUnavailable, TokenReused
from app.extensions import db
from app.models import RevokedToken, Session, User, utcnow
from app.services import audit, clients, revocations
from app.services.keys import KeyRing

ACCESS = "access"
REFRESH = "refresh"
# RFC 8176 authentication method references: a password alone, or a password and a second factor
# (TOTP or a recovery code: both are one-time secrets, "otp"; app/services/mfa.py says why).
AMR_PASSWORD = ("pwd",)
AMR_SECOND_FACTOR = ("pwd", "otp")
# RFC 8725 3.9 / 3.11: every claim we rely on must be present; a token lacking one is invalid.
# A user's token must name its session (`sid`), a service client's its client (`client_id`): _check.
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "jti", "sub", "type", "iss"]


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token proves: who, which session, until when."""

    user_id: uuid.UUID
    email: str
    roles: list[str]
    jti: str
    sid: uuid.UUID
    type: str
    fresh: bool
    expires_at: datetime
    claims: Mapping[str, Any]
    amr: tuple[str, ...] = AMR_PASSWORD
    username: str | None = None


@dataclass(frozen=True, slots=True)
class TokenPair:
    """A freshly issued access and refresh token, and what the session must remember of them."""

    access_token: str
    refresh_token: str
    expires_in: int
    refresh_jti: str
    refresh_expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The token fields of a response body."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


def issue_pair(
    *,
    user_id: uuid.UUID,
    roles: list[str],
    sid: uuid.UUID,
    fresh: bool,
    session_started: datetime,
    amr: tuple[str, ...] = AMR_PASSWORD,
) -> TokenPair:
    """Sign an access and a refresh token for session `sid`; the access token says how the login proved itself (`amr`).

    The refresh token never outlives the session's absolute lifetime (SESSION_MAX_LIFETIME from
    the login), so rotating it forever does not keep a session alive forever.
    """
    config = current_app.config
    now = utcnow()
    session_end = session_started + config["SESSION_MAX_LIFETIME"]
    refresh_expires_at = min(now + config["JWT_REFRESH_TOKEN_EXPIRES"], session_end)
    if refresh_expires_at <= now:
        raise InvalidToken("expired")
    refresh_jti = str(uuid.uuid4())
    access = create_access_token(
        identity=str(user_id),
        fresh=fresh,
        additional_claims={"roles": roles, "sid": str(sid), "amr": list(amr)},
    )
    refresh = create_refresh_token(
        identity=str(user_id),
        additional_claims={"sid": str(sid), "jti": refresh_jti},
        expires_delta=refresh_expires_at - now,
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=int(config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
        refresh_jti=refresh_jti,
        refresh_expires_at=refresh_expires_at,
    )


@dataclass(frozen=True, slots=True)
class CheckedToken:
    """What verifying a token's signature and claims established, kept for its next presentations."""

    claims: Mapping[str, Any]  # read-only: one instance serves every presentation of the token
    iat: int
    nbf: int
    exp: int
    user_id: uuid.UUID | None  # sub and sid parsed, None when not UUIDs
    sid: uuid.UUID | None
    expires_at: datetime
    amr: tuple[str, ...]


def decode(token: str) -> Mapping[str, Any]:
    """The claims of a valid token (see checked())."""
    return checked(token).claims


def checked(token: str) -> CheckedToken:
    """Check signature, algorithm, time claims, issuer and required claims; return the claims.

    Raises InvalidToken("expired") or InvalidToken("invalid"). Touches no database.

    A token that passed once is remembered by this worker (TOKEN_CACHE_SIZE tokens, least
    recently used dropped first), keyed by its whole text, so presenting it again costs a
    lookup and the clock checks instead of a base64 and JSON parse and an HMAC or signature
    (about 80 µs, a third of /checkToken's CPU). Envoy's jwt_authn caches verified tokens the
    same way. Only successes are kept, so invalid tokens cannot fill the cache; the clock
    claims are checked again on every presentation, exactly as PyJWT checks them; revocation
    is not part of this and is asked on every call (verify_token). The keys are fixed for the
    life of the process (app/services/keys.py), so a remembered verdict cannot go stale.
    """
    app = current_app._get_current_object()
    remembered = app.extensions["verified_tokens"]
    if remembered is None:
        return _check(token)
    found = remembered(token)
    leeway = app.config["JWT_DECODE_LEEWAY"]
    now = time.time()
    # The same comparisons as PyJWT's _validate_exp, _validate_nbf and _validate_iat.
    if found.exp <= now - leeway:
        raise InvalidToken("expired")
    if found.nbf > now + leeway or found.iat > now + leeway:
        raise InvalidToken("invalid")  # only if the clock went back since the first check
    return found


def token_memory(app) -> Callable[[str], CheckedToken] | None:
    """The per-app memory of verified tokens for decode(), or None when TOKEN_CACHE_SIZE is 0.

    functools.lru_cache: thread-safe, in C, bounded, and it never keeps a call that raised.
    """
    size = app.config["TOKEN_CACHE_SIZE"]
    return functools.lru_cache(maxsize=size)(_check) if size else None


def _check(token: str) -> CheckedToken:
    """Full verification by PyJWT (RFC 8725): everything decode() promises, from scratch."""
    config = current_app.config
    try:
        # With one shared secret the header is not needed to pick the key, so the token is
        # parsed once (the header parse was 7% of /checkToken's CPU); with key files, the
        # header's kid names the key first.
        key = config["JWT_SECRET_KEY"] if key_ring().symmetric else verification_key(jwt.get_unverified_header(token))
        audience = config["JWT_DECODE_AUDIENCE"]
        decoded = jwt.decode_complete(
            token,
            key,
            algorithms=config["JWT_DECODE_ALGORITHMS"],
            issuer=config["JWT_DECODE_ISSUER"],
            audience=audience,
            leeway=config["JWT_DECODE_LEEWAY"],
            options={"require": REQUIRED_CLAIMS + (["aud"] if audience else []), "verify_aud": bool(audience)},
        )
        # RFC 7515 4.1.11: we understand no header extensions, so any `crit` is refused.
        if "crit" in decoded["header"]:
            raise InvalidToken("invalid")
        claims = decoded["payload"]
    except jwt.ExpiredSignatureError:
        raise InvalidToken("expired") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("invalid") from None
    if not all(isinstance(claims[name], str) for name in ("sub", "jti", "type")):
        raise InvalidToken("invalid")
    if not isinstance(claims.get("client_id" if clients.is_client_subject(claims["sub"]) else "sid"), str):
        raise InvalidToken("invalid")
    # Tokens signed before `amr` existed proved a password only; a malformed amr is no token of ours.
    amr = claims.get("amr", AMR_PASSWORD)
    if not isinstance(amr, list | tuple) or not all(isinstance(method, str) for method in amr):
        raise InvalidToken("invalid")
    # PyJWT has just checked that the times convert.
    exp = int(claims["exp"])
    return CheckedToken(
        claims=MappingProxyType(claims),
        iat=int(claims["iat"]),
        nbf=int(claims["nbf"]),
        exp=exp,
        user_id=_uuid_or_none(claims["sub"]),
        sid=_uuid_or_none(claims.get("sid", "")),  # a client token has none: verify_token refuses it
        expires_at=datetime.fromtimestamp(exp, UTC),
        amr=tuple(amr),
    )


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def key_ring() -> KeyRing:
    """The app's signing and verifying keys."""
    return current_app.extensions["jwt_keys"]


def verification_key(header: dict[str, Any]):
    """The key that must have signed a token with this header: the secret, or the public key its kid names.

    Only configured keys are candidates; jku, x5u and jwk headers are never followed (RFC 8725 3.10).
    Raises InvalidToken for an unknown kid, ServiceUnavailable when the keys could not be loaded.
    """
    ring = key_ring()
    if ring.symmetric:
        return current_app.config["JWT_SECRET_KEY"]
    if ring.problem:
        raise KeysUnavailable()
    key = ring.verifying.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
    if key is None:
        raise InvalidToken("invalid")
    return key


def signing_key():
    """FJE's encode key: the secret, or the current private key."""
    ring = key_ring()
    if ring.symmetric:
        return current_app.config["JWT_SECRET_KEY"]
    if ring.problem:
        raise KeysUnavailable()
    return ring.signing_key


def signing_headers() -> dict[str, str]:
    """FJE's extra headers: the kid of the signing key, when there are key files."""
    ring = key_ring()
    return {} if ring.symmetric else {"kid": ring.signing_kid}


_USERS, _SESSIONS, _REVOKED = User.__table__, Session.__table__, RevokedToken.__table__
# Built once: one round trip for the user's standing, the session's, and whether the jti is revoked.
STATE_QUERY = (
    select(
        _USERS.c.email,
        _USERS.c.username,
        _USERS.c.role,
        _USERS.c.is_active,
        _USERS.c.tokens_valid_after,
        _SESSIONS.c.id.label("session_id"),
        _SESSIONS.c.revoked_at,
        exists().where(_REVOKED.c.jti == bindparam("jti")).label("jti_revoked"),
    )
    .select_from(
        _USERS.outerjoin(_SESSIONS, and_(_SESSIONS.c.id == bindparam("sid"), _SESSIONS.c.user_id == _USERS.c.id))
    )
    .where(_USERS.c.id == bindparam("user_id"))
)


def token_state(user_id: uuid.UUID, sid: uuid.UUID, jti: str, *, use_cache: bool) -> revocations.TokenState:
    """What the database says about this token: from this worker's revocation view, or one query."""
    view: revocations.RevocationView = current_app.extensions["revocations"]
    key = (jti, user_id, sid)
    if use_cache:
        view.ensure_listening()
        cached = view.cache.get(key)
        if cached is not None:
            return cached
    epoch = view.cache.epoch
    row = db.session.execute(STATE_QUERY, {"user_id": user_id, "sid": sid, "jti": jti}).first()
    if row is None:
        state = revocations.TokenState(user_exists=False)
    else:
        state = revocations.TokenState(
            user_exists=True,
            email=row.email,
            username=row.username,
            role=row.role,
            is_active=row.is_active,
            tokens_valid_after=row.tokens_valid_after,
            session_live=row.session_id is not None and row.revoked_at is None,
            jti_revoked=bool(row.jti_revoked),
        )
    if use_cache:
        view.cache.put(key, state, epoch)
    return state


def verify_token(
    token: str, *, expected_type: str = ACCESS, clients_too: bool = False
) -> VerifiedToken | clients.VerifiedClientToken:
    """Decide whether `token` is valid for `expected_type` by every rule of docs/CONTRACT.md.

    A service client's token (app/services/clients.py) is judged only where `clients_too` is
    given (/checkToken, /introspect); every user endpoint finds it invalid.
    Raises InvalidToken with reason expired, invalid, wrong_type, revoked or user_inactive,
    and lets a database failure propagate (it becomes a 503: never "valid" when unsure).
    """
    found = checked(token)
    claims = found.claims
    if clients.is_client_subject(claims["sub"]):
        if not clients_too:
            raise InvalidToken("invalid")
        return clients.verify(claims, found.expires_at)
    if claims["type"] != expected_type:
        raise InvalidToken("wrong_type" if claims["type"] in (ACCESS, REFRESH) else "invalid")
    user_id, sid = found.user_id, found.sid
    if user_id is None or sid is None:
        raise InvalidToken("invalid")
    # Refresh tokens always ask the database: rotation must see the latest state.
    state = token_state(user_id, sid, claims["jti"], use_cache=expected_type == ACCESS)
    if not state.user_exists:
        raise InvalidToken("revoked")  # the user was deleted, and every token with them
    if not state.is_active:
        raise InvalidToken("user_inactive")  # before the session: deactivation revokes those too
    if state.jti_revoked or not state.session_live:
        raise InvalidToken("revoked")
    cutoff = state.tokens_valid_after
    if cutoff is not None and claims["iat"] < _as_utc(cutoff).timestamp():
        raise InvalidToken("revoked")  # password reset or deactivation after issue
    return VerifiedToken(
        user_id=user_id,
        email=state.email,
        roles=[state.role],
        jti=claims["jti"],
        sid=sid,
        type=claims["type"],
        fresh=bool(claims.get("fresh", False)),
        expires_at=found.expires_at,
        claims=claims,
        amr=found.amr,
        username=state.username,
    )


def _as_utc(value: datetime) -> datetime:
    """Aware UTC, for values read through Core (the column type already does this)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def whole_second_now() -> datetime:
    """Now, rounded down to the second: `iat` has whole seconds, so cut-offs must too."""
    now = utcnow()
    return datetime.fromtimestamp(math.floor(now.timestamp()), UTC)


def check_token(token: str) -> dict[str, Any]:
    """The /checkToken answer: validity plus who, or the reason it is not valid."""
    try:
        verified = verify_token(token, expected_type=ACCESS, clients_too=True)
    except InvalidToken as error:
        return {"success": True, "valid": False, "reason": error.reason}
    if isinstance(verified, clients.VerifiedClientToken):
        return {
            "success": True,
            "valid": True,
            "client_id": str(verified.client_id),
            "roles": verified.roles,
            "expires_at": verified.expires_at,
            "jti": verified.jti,
        }
    return {
        "success": True,
        "valid": True,
        "user_id": str(verified.user_id),
        "email": verified.email,
        "roles": verified.roles,
        "expires_at": verified.expires_at,
        "jti": verified.jti,
        "sid": str(verified.sid),
        "amr": list(verified.amr),
    }


def start_session(
    user: User, *, user_agent: str | None, ip: str | None, fresh: bool, amr: tuple[str, ...] = AMR_PASSWORD
) -> TokenPair:
    """Open a session for `user` and issue its first pair; the caller commits."""
    now = utcnow()
    sid = uuid.uuid4()
    pair = issue_pair(user_id=user.id, roles=user.roles, sid=sid, fresh=fresh, session_started=now, amr=amr)
    db.session.add(
        Session(
            id=sid,
            user_id=user.id,
            refresh_jti=pair.refresh_jti,
            created_at=now,
            last_used_at=now,
            expires_at=pair.refresh_expires_at,
            user_agent=(user_agent or "")[:255] or None,
            ip=(ip or "")[:45] or None,
            amr=",".join(amr),
        )
    )
    observability.count_issued_pair()  # before the caller commits: a failed commit overcounts by one
    return pair


def rotate(refresh_token: str) -> TokenPair:
    """Spend a refresh token for a new pair; a spent one revokes its whole session.

    Raises InvalidToken, or TokenReused when the token was already spent (docs/CONTRACT.md: theft).
    The swap is one conditional UPDATE, so of simultaneous uses at most one wins.
    """
    verified = verify_token(refresh_token, expected_type=REFRESH)
    session = db.session.execute(select(Session.created_at, Session.amr).where(Session.id == verified.sid)).first()
    if session is None:
        raise InvalidToken("revoked")
    # The session keeps the amr of its login: a refresh proves nothing new, and loses nothing.
    pair = issue_pair(
        user_id=verified.user_id,
        roles=verified.roles,
        sid=verified.sid,
        fresh=False,
        session_started=session.created_at,
        amr=tuple(session.amr.split(",")),
    )
    swapped = db.session.execute(
        update(Session)
        .where(Session.id == verified.sid, Session.refresh_jti == verified.jti, Session.revoked_at.is_(None))
        .values(refresh_jti=pair.refresh_jti, expires_at=pair.refresh_expires_at, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if swapped == 1:
        db.session.commit()
        observability.count_issued_pair()
        return pair
    db.session.rollback()
    revoke_sessions(verified.user_id, Session.id == verified.sid)
    audit.record("refresh_reuse_detected", target_id=verified.user_id, session_id=str(verified.sid))
    db.session.commit()
    raise TokenReused()


def revoke_sessions(user_id: uuid.UUID, *criteria) -> int:
    """Mark the user's live sessions matching `criteria` revoked; the caller commits."""
    revocations.invalidate_user(db.session(), user_id)  # a Core UPDATE: the ORM hooks do not see it
    result = db.session.execute(
        update(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None), *criteria)
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    observability.TOKENS_REVOKED.labels("session").inc(result.rowcount)
    return result.rowcount


def revoke_jti(jti: str, *, token_type: str, user_id: uuid.UUID | None, expires_at: datetime) -> None:
    """Record a revoked jti (idempotent: a concurrent twin is not an error); commits."""
    if db.session.get(RevokedToken, jti) is not None:
        return
    db.session.add(RevokedToken(jti=jti, token_type=token_type, user_id=user_id, expires_at=expires_at))
    try:
        db.session.commit()
        observability.TOKENS_REVOKED.labels(token_type).inc()
    except IntegrityError:
        db.session.rollback()  # the same jti was revoked by a simultaneous request


def logout(verified: VerifiedToken, *, refresh_token: str | None = None, everywhere: bool = False) -> None:
    """Revoke this access token and its session; also the given refresh token's; or every session."""
    if everywhere:
        revoke_sessions(verified.user_id)
    else:
        revoke_sessions(verified.user_id, Session.id == verified.sid)
    if refresh_token:
        try:
            other = decode(refresh_token)
        except InvalidToken:
            other = None
        # Only a refresh token of the same user can be revoked this way.
        if other is not None and other["type"] == REFRESH and other["sub"] == str(verified.user_id):
            try:
                revoke_sessions(verified.user_id, Session.id == uuid.UUID(other["sid"]))
            except ValueError:
                pass
    audit.record("logout", actor_id=verified.user_id, target_id=verified.user_id, all=everywhere)
    db.session.commit()
    revoke_jti(verified.jti, token_type=ACCESS, user_id=verified.user_id, expires_at=verified.expires_at)


def void_all_tokens(user: User) -> None:
    """Void every token the user holds now: a cut-off at this second and every session revoked.

    The caller commits.
    """
    user.tokens_valid_after = whole_second_now()
    revoke_sessions(user.id)


def purge_expired(now: datetime | None = None) -> tuple[int, int]:
    """Delete revocation records and sessions whose tokens have expired anyway; commits."""
    now = now or utcnow()
    revoked = db.session.execute(RevokedToken.__table__.delete().where(RevokedToken.expires_at < now)).rowcount
    sessions = db.session.execute(Session.__table__.delete().where(Session.expires_at < now)).rowcount
    db.session.commit()
    return revoked, sessions
