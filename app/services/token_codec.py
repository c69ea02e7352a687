"""The token format: its types and claims, and verifying a token's signature and claims (PyJWT).

`decode_verified` checks everything a token proves by itself, touching no database; whether the
token is still honoured (revocation, the user's standing) is app/services/verification.py's job.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt
from flask import Flask, current_app

from app.errors import InvalidToken
from app.services.keys import key_ring, verification_key

ACCESS = "access"
REFRESH = "refresh"
# RFC 8176 authentication method references: a password alone, or a password and a second factor
# (TOTP or a recovery code: both are one-time secrets, "otp"; app/services/mfa.py says why).
AMR_PASSWORD = ("pwd",)
AMR_SECOND_FACTOR = ("pwd", "otp")
# A service client's token (app/services/clients.py) has `sub: "client:<client_id>"`.
CLIENT_SUBJECT_PREFIX = "client:"
# RFC 8725 3.9 / 3.11: every claim we rely on must be present; a token lacking one is invalid.
# A user's token must name its session (`sid`), a service client's its client (`client_id`): _check.
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "jti", "sub", "type", "iss"]


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


def decode_verified(token: str) -> CheckedToken:
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
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    remembered: Callable[[str], CheckedToken] | None = app.extensions["verified_tokens"]
    if remembered is None:
        return _decode_from_scratch(token)
    found = remembered(token)
    leeway: float = app.config["JWT_DECODE_LEEWAY"]
    now = time.time()
    # The same comparisons as PyJWT's _validate_exp, _validate_nbf and _validate_iat.
    if found.exp <= now - leeway:
        raise InvalidToken("expired")
    if found.nbf > now + leeway or found.iat > now + leeway:
        raise InvalidToken("invalid")  # only if the clock went back since the first check
    return found


def verified_token_cache(app: Flask) -> Callable[[str], CheckedToken] | None:
    """The per-app memory of verified tokens for decode_verified(), or None when TOKEN_CACHE_SIZE is 0.

    functools.lru_cache: thread-safe, in C, bounded, and it never keeps a call that raised.
    """
    size = app.config["TOKEN_CACHE_SIZE"]
    return functools.lru_cache(maxsize=size)(_decode_from_scratch) if size else None


def _decode_from_scratch(token: str) -> CheckedToken:
    """Full verification by PyJWT (RFC 8725): everything decode_verified() promises, from scratch."""
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
    # RFC 7519 2: a NumericDate is a JSON number; PyJWT also takes "1796302468" (it converts with int()).
    if not all(type(claims[name]) in (int, float) for name in ("exp", "iat", "nbf")):
        raise InvalidToken("invalid")
    if not isinstance(claims.get("client_id" if is_client_subject(claims["sub"]) else "sid"), str):
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
        sid=_uuid_or_none(claims.get("sid", "")),  # a client token has none: verify_token judges it apart
        expires_at=datetime.fromtimestamp(exp, UTC),
        amr=tuple(amr),
    )


def is_client_subject(subject: str) -> bool:
    """Whether a token's `sub` names a service client rather than a user."""
    return subject.startswith(CLIENT_SUBJECT_PREFIX)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
