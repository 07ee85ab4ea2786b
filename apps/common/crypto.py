"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with key rotation.

`FIELD_ENCRYPTION_KEYS` is a comma-separated list of Fernet keys, newest first: new values are
encrypted with the first, old ones still decrypt with any, and `reencrypt` moves a value to the
newest key. Outside production a key is derived from SECRET_KEY so development needs no setup.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet() -> MultiFernet:
    keys = [key.strip() for key in settings.FIELD_ENCRYPTION_KEYS if key.strip()]
    if not keys:
        if settings.ENVIRONMENT == "production":
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set in production")
        derived = base64.urlsafe_b64encode(hashlib.sha256(f"fernet:{settings.SECRET_KEY}".encode()).digest())
        keys = [derived.decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS holds a malformed Fernet key: {exc}") from exc


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("encrypted value cannot be decrypted with any configured key") from exc


def reencrypt(token: str) -> str:
    return _fernet().rotate(token.encode()).decode()
