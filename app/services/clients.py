"""Service clients: create, list, rotate, delete; authenticate one; issue and judge its tokens.

A client is another service acting as itself (RFC 6749 4.4, client credentials). Its secret is
shown once and stored as an HMAC-SHA256. ASVS 4.0 2.4 asks a slow, salted hash of *passwords*
because people choose guessable ones; a client secret here is 256 bits from the CSPRNG, which no
guessing reaches, so one keyed hash is as safe and costs a microsecond instead of argon2's 20 ms
on every token request (ASVS 4.0 V2.9 / V6.2: approved primitives for machine secrets; NIST
SP 800-63B 5.1.1.2 wants the slow hash only for memorized secrets). The key is the client's own id,
so a hash copied onto another row verifies nothing. Secrets are compared with hmac.compare_digest.

Its tokens carry `sub: "client:<client_id>"`, `client_id`, `roles: ["service"]`, no `sid`, and
`cv`, the secret version they were issued under. Rotating or deleting a client changes or removes
its row and announces it through the revocation view (app/services/revocation_view.py: the same
cache, the same NOTIFY, keyed by the client's id), so every worker and instance stops honouring
its tokens within the view's bound.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select

from app.errors import InvalidToken
from app.extensions import db
from app.models import Client, utcnow
from app.oauth import invalid_client
from app.services import audit, revocation_view
from app.services.issuing import sign_client_token
from app.services.token_codec import CLIENT_SUBJECT_PREFIX

SUBJECT_PREFIX = CLIENT_SUBJECT_PREFIX
ROLES = ("service",)
NAME_MAX_LENGTH = 100
_CLIENTS = Client.__table__
_STATE_QUERY = select(_CLIENTS.c.name, _CLIENTS.c.secret_hash, _CLIENTS.c.secret_version).where(
    _CLIENTS.c.id == bindparam("client_id")
)


class ClientError(Exception):
    """A client command cannot be carried out (unknown name, name taken, bad name)."""


@dataclass(frozen=True, slots=True)
class ClientState:
    """What the database says about a client (kept in the revocation view like a token's state)."""

    exists: bool
    name: str | None = None
    secret_hash: str | None = None
    secret_version: int = 0


@dataclass(frozen=True, slots=True)
class VerifiedClientToken:
    """What a valid client token proves: which client, until when."""

    client_id: uuid.UUID
    name: str
    roles: list[str]
    jti: str
    expires_at: datetime
    claims: Any


def secret_hash(client_id: uuid.UUID, secret: str) -> str:
    """HMAC-SHA256 of the secret keyed by the client id (the module docstring says why this is enough)."""
    return hmac.new(client_id.bytes, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def _new_secret() -> str:
    """256 bits from the CSPRNG, url-safe (it survives Basic's form-urlencoding unchanged)."""
    return secrets.token_urlsafe(32)


def _clean_name(name: str) -> str:
    """A client's name: 1-100 printable characters."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX_LENGTH or not name.isprintable():
        raise ClientError(f"A client name is 1 to {NAME_MAX_LENGTH} printable characters.")
    return name


def _by_name(name: str) -> Client:
    """The client called `name`; ClientError when there is none."""
    client = db.session.execute(select(Client).where(Client.name == name)).scalar_one_or_none()
    if client is None:
        raise ClientError(f"No client is called {name!r}.")
    return client


def create(*, name: str) -> tuple[Client, str]:
    """Register a client; return it and its secret (shown once, never stored). Commits.

    Raises ClientError for a bad or taken name.
    """
    name = _clean_name(name)
    if db.session.execute(select(Client.id).where(Client.name == name)).first() is not None:
        raise ClientError(f"A client called {name!r} exists already.")
    client_id = uuid.uuid4()
    secret = _new_secret()
    client = Client(id=client_id, name=name, secret_hash=secret_hash(client_id, secret), secret_version=1,
                    created_at=utcnow())  # fmt: skip
    db.session.add(client)
    audit.record("client_created", target_id=client_id, name=name)
    db.session.commit()
    return client, secret


def list_clients() -> list[Client]:
    """Every client, by name."""
    return list(db.session.execute(select(Client).order_by(Client.name)).scalars())


def rotate(*, name: str) -> tuple[Client, str]:
    """Give a client a new secret; the old one and every token issued under it stop working now. Commits."""
    client = _by_name(name)
    secret = _new_secret()
    client.secret_hash = secret_hash(client.id, secret)
    client.secret_version += 1
    client.rotated_at = utcnow()
    revocation_view.invalidate_user(db.session(), client.id)  # the view is keyed by the client's id
    audit.record("client_rotated", target_id=client.id, name=client.name, secret_version=client.secret_version)
    db.session.commit()
    return client, secret


def delete(*, name: str) -> Client:
    """Remove a client; its tokens stop working now. Commits."""
    client = _by_name(name)
    revocation_view.invalidate_user(db.session(), client.id)
    audit.record("client_deleted", target_id=client.id, name=client.name)
    db.session.delete(client)
    db.session.commit()
    return client


def state(client_id: uuid.UUID) -> ClientState:
    """The client's row as the revocation view remembers it, or one query (the view's rules: token_state)."""
    view: revocation_view.RevocationView = current_app.extensions["revocations"]
    key = ("client", client_id, client_id)
    view.ensure_listening()
    cached = view.cache.get(key)
    if isinstance(cached, ClientState):
        return cached
    epoch = view.cache.epoch
    row = db.session.execute(_STATE_QUERY, {"client_id": client_id}).first()
    found = (
        ClientState(exists=True, name=row.name, secret_hash=row.secret_hash, secret_version=row.secret_version)
        if row is not None
        else ClientState(exists=False)
    )
    view.cache.put(key, found, epoch)
    return found


def _parse_id(text: str) -> uuid.UUID | None:
    """A client_id as sent: a UUID, or None."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def authenticate(client_id: str, secret: str) -> tuple[uuid.UUID, ClientState]:
    """The client these credentials prove; OAuthError invalid_client otherwise (the same for every failure).

    A database failure propagates (the caller answers 503: never "authenticated" when unsure).
    """
    parsed = _parse_id(client_id)
    found = state(parsed) if parsed is not None else ClientState(exists=False)
    # The digest is computed for unknown clients too, so the time does not tell which ids exist.
    expected = found.secret_hash or "0" * 64
    given = secret_hash(parsed or uuid.UUID(int=0), secret)
    if not (hmac.compare_digest(given, expected) and found.exists) or parsed is None:
        raise invalid_client()
    return parsed, found


def issue_token(client_id: uuid.UUID, found: ClientState) -> dict[str, Any]:
    """Sign an access token for the client (RFC 6749 4.4.3); audit it; commit. The token response's fields."""
    token, expires_in = sign_client_token(client_id=client_id, roles=list(ROLES), secret_version=found.secret_version)
    audit.record("client_token_issued", target_id=client_id, name=found.name)
    db.session.commit()
    return {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}


def record_failure(client_id: str | None, endpoint: str) -> None:
    """Audit a failed client authentication (the id as sent when it is one, never the secret); commits."""
    parsed = _parse_id(client_id) if client_id else None
    audit.record_now("client_auth_failed", target_id=parsed, endpoint=endpoint)


def verify(claims: Any, expires_at: datetime) -> VerifiedClientToken:
    """Judge a client token whose signature and times were checked (token_codec): does its client still stand?

    Raises InvalidToken("revoked") when the client was deleted or rotated since, "invalid" for
    a token that is not a well-formed client token.
    """
    subject, named = claims["sub"], claims.get("client_id")
    version = claims.get("cv")
    client_id = _parse_id(named) if isinstance(named, str) else None
    if client_id is None or subject != f"{SUBJECT_PREFIX}{named}" or type(version) is not int:
        raise InvalidToken("invalid")
    if claims["type"] != "access":
        raise InvalidToken("wrong_type")
    found = state(client_id)
    if not found.exists or found.secret_version != version:
        raise InvalidToken("revoked")
    return VerifiedClientToken(
        client_id=client_id,
        name=found.name or "",
        roles=list(ROLES),
        jti=claims["jti"],
        expires_at=expires_at,
        claims=claims,
    )
