"""API keys: their format, how they are hashed and checked, and the scopes they carry.

A key is ``ak_`` + a 16-character key id + ``_`` + a 43-character secret: the id
(80 random bits, base32) names the key in listings and in the audit log, and the secret
(256 random bits, base64url) is shown once, when the key is created, and never stored.
The store keeps HMAC-SHA256(key id, secret) and compares it in constant time.

Why a fast hash and not argon2: a slow, salted hash protects *low-entropy* secrets
(passwords people choose) against guessing, by making each guess expensive. A 256-bit
random secret cannot be guessed at any hash speed (2^256 tries), so a slow hash would
add nothing but ~50 ms of CPU to every request; SHA-256 keeps the stolen-database case
safe (the digest does not give the key back) at a microsecond per check. Keying the
HMAC with the key id ties each digest to its record. argon2 remains the choice for the
console's human passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = ["SCOPES", "KeyToken", "digest", "new_token", "parse_token"]

#: scope -> what it allows: the one table of scopes (routes, the CLI and the docs use it).
SCOPES: Final[dict[str, str]] = {
    "bindings:read": "read bindings (they hold real numbers: every read is audited)",
    "bindings:write": "create, change and delete bindings",
    "pools:read": "read pools and their numbers",
    "pools:write": "create, change and delete pools; add and remove their numbers",
    "records:read": "search and export call and SMS records (real numbers: audited)",
    "stats:read": "read daily, monthly and yearly statistics",
    "webhooks:write": "configure webhooks: receivers, events, secrets; read dead letters",
    "metrics:read": "read the Prometheus metrics at /metrics",
    "admin": "manage tenants and keys of every tenant; read the audit log; statistics of all",
}

_PREFIX: Final = "ak_"
_ID_LEN: Final = 16
_SECRET_LEN: Final = 43
_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_SECRET_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class KeyToken:
    """A key as presented: its id and secret."""

    key_id: str
    secret: str

    def __str__(self) -> str:
        return f"{_PREFIX}{self.key_id}_{self.secret}"


def new_token() -> KeyToken:
    """A fresh random key."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return KeyToken(key_id, secret)


def parse_token(text: str) -> KeyToken | None:
    """The key in ``text``, or None when it is not one (checked by shape only)."""
    if len(text) != len(_PREFIX) + _ID_LEN + 1 + _SECRET_LEN or not text.startswith(_PREFIX):
        return None
    key_id = text[len(_PREFIX) : len(_PREFIX) + _ID_LEN]
    if text[len(_PREFIX) + _ID_LEN] != "_":
        return None
    secret = text[len(_PREFIX) + _ID_LEN + 1 :]
    if not (set(key_id) <= _ID_CHARS and set(secret) <= _SECRET_CHARS):
        return None
    return KeyToken(key_id, secret)


def digest(token: KeyToken) -> bytes:
    """What the store keeps of a key (see the module docstring)."""
    return hmac.new(token.key_id.encode(), token.secret.encode(), hashlib.sha256).digest()


def matches(token: KeyToken, stored: bytes) -> bool:
    """Whether ``token`` is the key whose digest is ``stored`` (constant time)."""
    return hmac.compare_digest(digest(token), stored)
