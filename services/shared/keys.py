"""Key layout and deterministic ids for the mesh's own records.

Every key carries a hash tag that starts with the merchant, so records are merchant-scoped (an id of
another merchant names a different key and is simply not found), and every key one script touches
shares that one tag, so the scripts run unchanged on Redis Cluster. The merchant is percent-encoded
(as in common/idempotency.py) and ids cannot contain braces, so two (merchant, id) pairs never
share a key.

Ids are derived, not random: a request retried after a crash (same merchant, rpc, request_id) must
land on the same hold, transaction and provider reference_id, so that the provider's own
idempotency by reference_id makes the retry a replay instead of a second debit. They are keyed
hashes so that a vendor never sees the caller's request ids.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from urllib.parse import quote

from common.redis_scripts import hash_tag

# Pending intents and open checkouts are indexed per merchant in this many buckets (each bucket is
# one tag), so one big merchant's index does not pile onto one Cluster slot.
INDEX_BUCKETS = 8


def merchant_part(merchant: str) -> str:
    if not merchant:
        raise ValueError("merchant is required")
    return quote(merchant, safe="")


def record_key(kind: str, merchant: str, record_id: str) -> str:
    """``mesh:<kind>:{<kind>:<merchant>:<id>}``: one record, its own tag."""
    return f"mesh:{kind}:{hash_tag(kind, merchant_part(merchant), record_id)}"


def redemption_refunds_key(merchant: str, transaction_id: str) -> str:
    """The refunds of one redemption: same tag as its transaction record, so a void and a refund
    can check each other in one script."""
    return f"refund:{hash_tag('txn', merchant_part(merchant), transaction_id)}"


def bucket_of(record_id: str) -> int:
    return zlib.crc32(record_id.encode()) % INDEX_BUCKETS


def bucket_tag(kind: str, merchant: str, bucket: int) -> str:
    return hash_tag(kind, merchant_part(merchant), str(bucket))


class IdDeriver:
    """Deterministic ids: HMAC(secret, label, merchant, parts) truncated, with a readable prefix."""

    def __init__(self, secret: bytes) -> None:
        self._secret = hmac.new(secret, b"giftcard-mesh-ids-v1", hashlib.sha256).digest()

    def derive(self, prefix: str, merchant: str, *parts: object, length: int = 24) -> str:
        material = "\0".join([prefix, merchant, *(str(p) for p in parts)]).encode()
        return f"{prefix}_{hmac.new(self._secret, material, hashlib.sha256).hexdigest()[:length]}"
