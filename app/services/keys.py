"""Signing keys: HS256 with a shared secret, or ES256 / EdDSA / RS256 key pairs with a `kid` each.

Asymmetric keys live in JWT_KEYS_DIR: one PEM private key per kid and a manifest, keys.json,
naming the current key and when each older key was retired. Tokens are signed with the current
key; every key still in the manifest verifies (a retired key until it is pruned, which `prune`
does once no token it signed can be alive) and is published in the JWK set, so other services
can verify locally. Keys are chosen by configuration and `kid` only: jku, x5u and jwk headers
are never followed (RFC 8725 3.10).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import current_app
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.errors import InvalidToken, KeysUnavailable
from app.models import utcnow

SYMMETRIC = frozenset({"HS256"})
ASYMMETRIC = {"ES256": ECAlgorithm, "EdDSA": OKPAlgorithm, "RS256": RSAAlgorithm}
ALGORITHMS = SYMMETRIC | set(ASYMMETRIC)
MANIFEST = "keys.json"
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class KeyError_(Exception):
    """The key directory is missing, broken, or does not fit the configured algorithm."""


@dataclass
class KeyRing:
    """The keys the app signs and verifies with."""

    algorithm: str
    signing_kid: str | None = None
    signing_key: Any = None
    verifying: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def symmetric(self) -> bool:
        """Whether tokens are HMAC-signed with the shared secret."""
        return self.algorithm in SYMMETRIC

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The RFC 7517 JWK set of every verifying public key; empty for HS256 (the secret stays secret)."""
        if self.symmetric:
            return {"keys": []}
        converter: Any = ASYMMETRIC[self.algorithm]  # to_jwk is a static method of each algorithm class
        keys = []
        for kid, public_key in self.verifying.items():
            jwk = converter.to_jwk(public_key, as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": self.algorithm, "use": "sig"})
        return {"keys": keys}


def _new_private_key(algorithm: str) -> PrivateKey:
    """A fresh private key for the algorithm (P-256, Ed25519, or RSA-3072)."""
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise KeyError_(f"{algorithm} does not use key files")


def _read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, or KeyError_ saying what is wrong."""
    path = directory / MANIFEST
    if not path.exists():
        raise KeyError_(f"no {MANIFEST} in {directory}; run `flask keys generate`")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        manifest["current"], manifest["keys"], manifest["algorithm"]  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError) as error:
        raise KeyError_(f"{path} is not a valid key manifest: {error}") from None
    return manifest


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically."""
    temporary = directory / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, directory / MANIFEST)


def _write_private_key(directory: Path, kid: str, key: PrivateKey) -> str:
    """Write a PEM private key with mode 0600; return its file name."""
    name = f"{kid}.pem"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return name


def _new_kid() -> str:
    """A key id: the date and some randomness, readable in logs."""
    return f"{utcnow():%Y%m%d}-{secrets.token_hex(4)}"


def generate(directory: Path, algorithm: str, *, force: bool = False) -> str:
    """Start a key directory with one current key; return its kid."""
    if algorithm not in ASYMMETRIC:
        raise KeyError_(f"key files are for {', '.join(ASYMMETRIC)}; {algorithm} needs none")
    if (directory / MANIFEST).exists() and not force:
        raise KeyError_(f"{directory} already has keys; use `flask keys rotate`, or --force to start over")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    kid = _new_kid()
    name = _write_private_key(directory, kid, _new_private_key(algorithm))
    entry = {"kid": kid, "file": name, "created_at": utcnow().isoformat(), "retired_at": None}
    _write_manifest(directory, {"algorithm": algorithm, "current": kid, "keys": [entry]})
    return kid


def rotate(directory: Path, *, algorithm: str) -> tuple[str, str]:
    """Make a new current key; the old one is retired but still verifies. Return (old kid, new kid)."""
    manifest = _read_manifest(directory)
    if manifest["algorithm"] != algorithm:
        raise KeyError_(f"{directory} holds {manifest['algorithm']} keys but JWT_ALGORITHM is {algorithm}")
    old = manifest["current"]
    kid = _new_kid()
    name = _write_private_key(directory, kid, _new_private_key(manifest["algorithm"]))
    for entry in manifest["keys"]:
        if entry["kid"] == old:
            entry["retired_at"] = utcnow().isoformat()
    manifest["keys"].append({"kid": kid, "file": name, "created_at": utcnow().isoformat(), "retired_at": None})
    manifest["current"] = kid
    _write_manifest(directory, manifest)
    return old, kid


def prune(directory: Path, *, max_token_lifetime: timedelta, now: datetime | None = None) -> list[str]:
    """Remove retired keys no live token can have been signed with; return their kids."""
    manifest = _read_manifest(directory)
    now = now or utcnow()
    kept, removed = [], []
    for entry in manifest["keys"]:
        retired = entry.get("retired_at")
        if retired and datetime.fromisoformat(retired) + max_token_lifetime < now:
            removed.append(entry)
        else:
            kept.append(entry)
    manifest["keys"] = kept
    _write_manifest(directory, manifest)
    for entry in removed:
        (directory / entry["file"]).unlink(missing_ok=True)
    return [entry["kid"] for entry in removed]


def describe(directory: Path) -> list[dict[str, Any]]:
    """The manifest's keys, marking the current one."""
    manifest = _read_manifest(directory)
    return [{**entry, "current": entry["kid"] == manifest["current"]} for entry in manifest["keys"]]


def load(algorithm: str, directory: Path) -> KeyRing:
    """The key ring for the configuration; a problem is recorded, not raised, so the app can say so."""
    ring = KeyRing(algorithm=algorithm)
    if ring.symmetric:
        return ring
    try:
        manifest = _read_manifest(directory)
        if manifest["algorithm"] != algorithm:
            raise KeyError_(f"{directory} holds {manifest['algorithm']} keys but JWT_ALGORITHM is {algorithm}")
        for entry in manifest["keys"]:
            private_key = serialization.load_pem_private_key((directory / entry["file"]).read_bytes(), password=None)
            ring.verifying[entry["kid"]] = private_key.public_key()
            if entry["kid"] == manifest["current"]:
                ring.signing_kid, ring.signing_key = entry["kid"], private_key
        if ring.signing_key is None:
            raise KeyError_(f"the current key {manifest['current']} is not in {directory / MANIFEST}")
    except (KeyError_, OSError, ValueError) as error:
        return KeyRing(algorithm=algorithm, problem=str(error))
    return ring


def key_ring() -> KeyRing:
    """The app's signing and verifying keys."""
    ring: KeyRing = current_app.extensions["jwt_keys"]
    return ring


def verification_key(header: dict[str, Any]) -> Any:
    """The key that must have signed a token with this header: the secret, or the public key its kid names.

    Only configured keys are candidates; jku, x5u and jwk headers are never followed (RFC 8725 3.10).
    Raises InvalidToken for an unknown kid, ServiceUnavailable when the keys could not be loaded.
    """
    ring = key_ring()
    if ring.symmetric:
        return current_app.config["JWT_SECRET_KEY"]
    if ring.problem:
        raise KeysUnavailable()
    kid = header.get("kid")
    key = ring.verifying.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken("invalid")
    return key


def signing_key() -> Any:
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
    return {"kid": ring.signing_kid} if ring.signing_kid is not None else {}
