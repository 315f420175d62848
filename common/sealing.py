"""Encryption at rest for the little card data the mesh must keep (a hold's card reference needed
for a later capture, an e-gift's one-time credentials in a stored idempotent response).

AES-256-GCM with a key derived from the configured secret; each value gets a random nonce, and the
record key is bound as associated data so a sealed value cannot be moved to another record.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"


class Sealer:
    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(hmac.new(secret, b"giftcard-seal-v1", hashlib.sha256).digest())

    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def unseal(self, sealed: bytes, context: bytes = b"") -> bytes:
        if not sealed.startswith(_VERSION):
            raise ValueError("unknown sealed format")
        return self._aead.decrypt(sealed[1:13], sealed[13:], context)
