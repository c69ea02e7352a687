"""Encryption at rest of the secrets the service must read back (TOTP seeds): Fernet under ENCRYPTION_KEY.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) authenticates what it encrypts, so a
secret altered in the database fails to decrypt instead of yielding a wrong seed (ASVS 6.2.1:
vetted primitives only). ENCRYPTION_KEY lists one or more keys, comma-separated: the first
encrypts, every one decrypts (MultiFernet), so a new key is added in front, `flask mfa
reencrypt` moves every secret onto it, and the old key can then be dropped (docs/OPERATIONS.md).
The key is its own secret, never the JWT signing key (ASVS 6.4.1).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app

from app.errors import MfaUnavailable


def init_app(app: Flask) -> None:
    """Build the app's cipher once (None when no key is configured)."""
    keys = app.config["ENCRYPTION_KEY"]
    app.extensions["secretbox"] = MultiFernet([Fernet(key.encode()) for key in keys]) if keys else None


def available() -> bool:
    """Whether secrets can be encrypted and read on this server."""
    return current_app.extensions["secretbox"] is not None


def _cipher() -> MultiFernet:
    cipher: MultiFernet | None = current_app.extensions["secretbox"]
    if cipher is None:
        raise MfaUnavailable()
    return cipher


def encrypt(plaintext: str) -> str:
    """Encrypt with the first key. Raises MfaUnavailable without ENCRYPTION_KEY."""
    return _cipher().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt with whichever configured key made it.

    Raises MfaUnavailable without ENCRYPTION_KEY, or when no configured key opens it (a key was
    dropped before `flask mfa reencrypt` ran): the seed is unreadable, which is an outage of the
    second factor, not the user's wrong code.
    """
    try:
        return _cipher().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        current_app.logger.error("a stored secret cannot be decrypted with any ENCRYPTION_KEY key")
        raise MfaUnavailable() from None


def reencrypt(ciphertext: str) -> str:
    """The same secret under the first key (MultiFernet.rotate). Raises MfaUnavailable as decrypt()."""
    try:
        return _cipher().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise MfaUnavailable("A stored secret cannot be decrypted with any ENCRYPTION_KEY key.") from None
