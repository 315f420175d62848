"""Merchant authentication: a per-merchant API key in `authorization: Bearer <key>` metadata.

Keys are never stored: the config holds SHA-256 digests, and a presented key is hashed and looked up.
A lookup by digest leaks nothing useful through timing (the attacker does not control the digest),
and the final comparison is constant-time anyway.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from common.errors import unauthenticated

DEV_MERCHANT_ID = "demo"
DEV_API_KEY = "dev-demo-key"


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class ApiKeyAuthenticator:
    def __init__(self, digests_by_merchant: Mapping[str, Iterable[str]]) -> None:
        self._merchant_by_digest: dict[str, str] = {}
        for merchant_id, digests in digests_by_merchant.items():
            for digest in digests:
                self._merchant_by_digest[digest.lower()] = merchant_id

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
        """The merchant id owning the bearer key in `metadata`; UNAUTHENTICATED otherwise."""
        key = bearer_key(metadata)
        if key is None:
            raise unauthenticated("missing API key: send metadata 'authorization: Bearer <key>'")
        digest = key_digest(key)
        merchant_id = self._merchant_by_digest.get(digest)
        if merchant_id is None or not hmac.compare_digest(digest, key_digest(key)):
            raise unauthenticated("invalid API key")
        return merchant_id


def bearer_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for name, value in metadata or ():
        if name.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, key = text.strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    return None
