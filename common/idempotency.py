"""AIP-155 request idempotency for every mutating RPC (DESIGN.md section 5).

One Redis hash per (merchant, rpc, request_id) holds a fingerprint of the request, a state
(`in_progress` / `done`), the claimer's fencing token and lease, and, once done, the stored outcome.
It lives `ttl_seconds` (24 h by default; the clock restarts at completion).

    same request_id + same request, done         -> the stored outcome again (response or error)
    same request_id + different request          -> FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED
    same request_id + same request, in progress  -> ABORTED REQUEST_IN_PROGRESS (retryable)
    ... in progress but the claimer's lease ran out (it died) -> taken over by the new attempt

Every transition is one Lua script (`idempotency_*.lua` next to this module); each script touches
one key, so they run unchanged on Redis Cluster.

Key layout: ``idem:{m:<merchant>:<request_id>}:<rpc>``. The hash tag carries merchant and
request_id (not the merchant alone) so one large merchant's records spread over all cluster slots.
The merchant is percent-encoded (``:``, ``{``, ``}``, ``%`` and non-ASCII become ``%XX``) and a
request_id can hold neither ``{`` nor ``}``, so two different (merchant, request_id, rpc) triples
never share a key (merchant ``a:b`` + request ``c`` vs merchant ``a`` + request ``b:c``).

What is stored, and what is not:

- Requests are never stored, only their fingerprint: SHA-256 over the rpc name, the message type
  and the deterministic serialization of the request with its ``request_id`` field cleared. A
  request carries card numbers and PINs, and an unkeyed hash of a message with a guessable shape is
  open to brute force (PCI DSS 3.5.1.1 wants keyed hashes), so pass ``fingerprint_key`` (a secret)
  in production and the fingerprint becomes HMAC-SHA-256.
- Successful responses are stored as serialized protobuf. Responses carry masked numbers only,
  EXCEPT responses that hand out a one-time secret (an e-gift card's PIN or CVV2): such an RPC must
  pass ``seal``/``unseal`` (encrypt before storing and decrypt on replay, or strip the secret and
  accept that a replay does not repeat it). Nothing else in this module looks inside responses.
- Final errors are stored as JSON of the MeshError (code, reason, message, field, metadata); error
  messages never carry card data (common/errors.py).

Which errors are stored and which release the record (see `IdempotencyStore.is_final`):

- Stored (replayed as the same error): a MeshError with ``retryable=False`` and a code outside
  `TRANSIENT_CODES`, i.e. a deterministic answer to this request (INSUFFICIENT_FUNDS, CARD_INACTIVE,
  INVALID_ARGUMENT, ...). Retrying the same request would get the same answer, and storing it keeps
  a later retry from succeeding after, say, a reload, which the client never asked for.
- Released (the record is deleted, the client's retry runs the handler again): a MeshError with
  ``retryable=True`` or a code in `TRANSIENT_CODES` (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
  INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED, CANCELLED), and any other exception (a bug or a Redis
  error). Releasing does not make a half-done money movement safe to repeat: a handler that may
  have moved money before failing (a vendor timeout) must write its intent down first and find it
  on the retry (DESIGN.md section 5, unknown outcomes). This layer only guarantees one stored
  answer per request_id.

Leases and fencing: `run` renews its lease every third of ``lease_seconds`` while the handler
runs, so a slow but live worker is not taken over; only a worker that died (or lost Redis for a
whole lease) is. A taken-over worker's late `complete`/`release` are refused by token, and `run`
then answers ABORTED so the client retries and receives the one stored outcome. The fence covers
this record only: money scripts the handler calls must be idempotent by request themselves.

A client that cancels (or hits its deadline) does not cancel the work: `run` shields the handler,
which finishes and stores its outcome for the client's retry to replay, so a money movement is
never abandoned half-way because the caller stopped waiting. `drain` awaits such detached work
on shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import grpc
from google.protobuf.message import Message
from redis.asyncio import Redis

from common.errors import (
    GRPC_CODE_BY_NUMBER,
    IDEMPOTENCY_KEY_REUSED,
    REQUEST_IN_PROGRESS,
    MeshError,
    invalid_argument,
)
from common.redis_scripts import ScriptSet, hash_tag

log = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT", bound=Message)

DEFAULT_TTL_SECONDS = 24 * 60 * 60
DEFAULT_LEASE_SECONDS = 30.0
REQUEST_ID_FIELD = "request_id"
REQUEST_ID_MAX_LENGTH = 128
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Codes that say "this attempt failed, the request itself may well succeed": never stored.
TRANSIENT_CODES: frozenset[grpc.StatusCode] = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
})

# A stored outcome: the (sealed) serialized response, or the final error.
Outcome = bytes | MeshError
Seal = Callable[[bytes], bytes]


class BeginStatus(StrEnum):
    NEW = "NEW"  # the caller owns the record and must complete or release it
    REPLAY = "REPLAY"  # the request was already answered: `outcome` holds the answer


class IdempotencyEvent(StrEnum):
    """What happened to one request, for telemetry (`IdempotencyStore.counters` / `on_event`)."""

    NEW = "new"
    TAKEOVER = "takeover"  # NEW after a dead claimer's lease expired
    REPLAY = "replay"
    CONFLICT = "conflict"  # IDEMPOTENCY_KEY_REUSED
    IN_PROGRESS = "in_progress"  # REQUEST_IN_PROGRESS
    STORED_ERROR = "stored_error"
    RELEASED = "released"
    LEASE_LOST = "lease_lost"  # complete/release/renew refused: another attempt took over


@dataclass(frozen=True)
class Begin:
    """The result of `IdempotencyStore.begin`."""

    status: BeginStatus
    key: str
    rpc: str
    token: str | None = None  # fencing token, NEW only
    attempt: int = 0  # 1 for a fresh record, n+1 after a takeover; NEW only
    outcome: Outcome | None = None  # REPLAY only


def validate_request_id(request_id: str) -> None:
    """Raise INVALID_ARGUMENT (field request_id) unless request_id is 1-128 of [A-Za-z0-9._:-].

    The value is not echoed in the message: a client that misuses it could have put anything there.
    """
    if not isinstance(request_id, str) or not _REQUEST_ID_PATTERN.fullmatch(request_id):
        raise invalid_argument(
            REQUEST_ID_FIELD,
            f"request_id must be 1-{REQUEST_ID_MAX_LENGTH} characters of A-Z a-z 0-9 . _ : -",
        )


def record_key(merchant: str, rpc: str, request_id: str) -> str:
    """``idem:{m:<merchant>:<request_id>}:<rpc>``, one hash tag per record (module docstring)."""
    if not merchant:
        raise ValueError("merchant is required")
    if not rpc:
        raise ValueError("rpc is required")
    return f"idem:{hash_tag('m', quote(merchant, safe=''), request_id)}:{rpc}"


def fingerprint(
    rpc: str,
    request: Message,
    *,
    key: bytes | None = None,
    request_id_field: str = REQUEST_ID_FIELD,
) -> str:
    """Hex digest identifying "the same request" for one rpc.

    Deterministic serialization orders map entries, so equal messages give equal digests. The
    request_id field (if the message has one) is cleared on a copy: it names the request, it is
    not part of it. With ``key`` the digest is HMAC-SHA-256, so it cannot be brute-forced back to
    the card data inside the request.
    """
    if request.DESCRIPTOR.fields_by_name.get(request_id_field) is not None:
        copy = type(request)()
        copy.CopyFrom(request)
        copy.ClearField(request_id_field)
        request = copy
    parts = (
        b"giftcard.idempotency.v1",
        rpc.encode(),
        request.DESCRIPTOR.full_name.encode(),
        request.SerializeToString(deterministic=True),
    )
    # Length-prefix every part so no two different inputs concatenate to the same bytes.
    material = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    if key is not None:
        return hmac.new(key, material, hashlib.sha256).hexdigest()
    return hashlib.sha256(material).hexdigest()


def _error_to_json(error: MeshError) -> bytes:
    return json.dumps(
        {
            "code": error.code.value[0],
            "reason": error.reason,
            "message": error.message,
            "field": error.field,
            "metadata": {k: str(v) for k, v in error.metadata.items()},
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def _error_from_json(payload: bytes) -> MeshError:
    data = json.loads(payload)
    return MeshError(
        code=GRPC_CODE_BY_NUMBER[data["code"]],
        reason=data["reason"],
        message=data["message"],
        field=data.get("field"),
        metadata=dict(data.get("metadata") or {}),
        retryable=False,  # only final errors are stored
    )


class IdempotencyStore:
    """Idempotency records in Redis: low-level `begin`/`complete`/`release`/`renew`, and `run`.

    ``seal``/``unseal`` are the default hooks applied to stored response bytes (identity when
    None); `run` takes per-call overrides, so only the RPC that returns a one-time secret pays
    for encryption. ``on_event(event, rpc)`` is called for every `IdempotencyEvent`, and
    ``counters`` counts them, so telemetry can be wired later without touching this class.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        fingerprint_key: bytes | None = None,
        seal: Seal | None = None,
        unseal: Seal | None = None,
        transient_codes: Collection[grpc.StatusCode] = TRANSIENT_CODES,
        on_event: Callable[[IdempotencyEvent, str], None] | None = None,
    ) -> None:
        if lease_seconds <= 0 or ttl_seconds <= lease_seconds:
            raise ValueError("need 0 < lease_seconds < ttl_seconds")
        # get_connection_kwargs: Redis and RedisCluster both have it (a cluster has no single pool).
        if redis.get_connection_kwargs().get("decode_responses"):
            # Stored responses are binary protobuf; a decoding client would corrupt them.
            raise ValueError("IdempotencyStore needs a Redis client with decode_responses=False")
        self._scripts = ScriptSet(redis, Path(__file__).parent)
        self._ttl_ms = int(ttl_seconds * 1000)
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._fingerprint_key = fingerprint_key
        self._seal = seal
        self._unseal = unseal
        self._transient_codes = frozenset(transient_codes)
        self._on_event = on_event
        self.counters: Counter[IdempotencyEvent] = Counter()
        # In-flight handler work (possibly detached from a cancelled caller); asyncio keeps only
        # weak references to tasks, so this set keeps them alive until they finish.
        self._in_flight: set[asyncio.Task] = set()

    # -- low level ----------------------------------------------------------------------------

    def key(self, merchant: str, rpc: str, request_id: str) -> str:
        return record_key(merchant, rpc, request_id)

    def fingerprint(self, rpc: str, request: Message) -> str:
        return fingerprint(rpc, request, key=self._fingerprint_key)

    async def begin(
        self, merchant: str, rpc: str, request_id: str, request_fingerprint: str
    ) -> Begin:
        """Claim the record (NEW) or return its stored outcome (REPLAY).

        Raises MeshError FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED when the request_id was used
        with a different request, and ABORTED REQUEST_IN_PROGRESS (retryable) while another live
        attempt holds it.
        """
        key = record_key(merchant, rpc, request_id)
        token = secrets.token_hex(16)
        reply = await self._scripts["idempotency_begin"](
            keys=[key], args=[request_fingerprint, token, self._lease_ms, self._ttl_ms]
        )
        status = _text(reply[0])
        if status == "NEW":
            attempt = int(reply[1])
            self._emit(IdempotencyEvent.NEW if attempt == 1 else IdempotencyEvent.TAKEOVER, rpc)
            return Begin(BeginStatus.NEW, key, rpc, token=token, attempt=attempt)
        if status == "REPLAY":
            kind, payload = _text(reply[1]), bytes(reply[2])
            outcome: Outcome = _error_from_json(payload) if kind == "error" else payload
            self._emit(IdempotencyEvent.REPLAY, rpc)
            return Begin(BeginStatus.REPLAY, key, rpc, outcome=outcome)
        if status == "CONFLICT":
            self._emit(IdempotencyEvent.CONFLICT, rpc)
            raise MeshError(
                grpc.StatusCode.FAILED_PRECONDITION,
                IDEMPOTENCY_KEY_REUSED,
                "request_id was already used for a different request; use a new request_id",
                metadata={"request_id": request_id},
            )
        if status == "IN_PROGRESS":
            self._emit(IdempotencyEvent.IN_PROGRESS, rpc)
            raise _in_progress(request_id)
        raise RuntimeError(f"unexpected idempotency_begin reply {status!r}")

    async def complete(self, claim: Begin, outcome: Outcome) -> bool:
        """Store the final outcome and mark the record done; False if the claim was taken over.

        ``outcome`` is the already sealed response bytes, or a final MeshError.
        """
        if isinstance(outcome, MeshError):
            kind, payload = "error", _error_to_json(outcome)
        else:
            kind, payload = "response", bytes(outcome)
        reply = await self._scripts["idempotency_complete"](
            keys=[claim.key], args=[_token(claim), kind, payload, self._ttl_ms]
        )
        return self._fenced_ok(reply, claim)

    async def release(self, claim: Begin) -> bool:
        """Delete the claimed record so a retry runs again; False if the claim was taken over."""
        reply = await self._scripts["idempotency_release"](keys=[claim.key], args=[_token(claim)])
        return self._fenced_ok(reply, claim)

    async def renew(self, claim: Begin) -> bool:
        """Extend the claim's lease by lease_seconds from now; False if it was taken over."""
        reply = await self._scripts["idempotency_renew"](
            keys=[claim.key], args=[_token(claim), self._lease_ms]
        )
        return self._fenced_ok(reply, claim)

    def is_final(self, error: MeshError) -> bool:
        """True when the error is this request's answer (stored); False: transient (released)."""
        return not error.retryable and error.code not in self._transient_codes

    # -- the helper every mutating RPC uses ---------------------------------------------------

    async def run(
        self,
        merchant: str,
        rpc: str,
        request_id: str,
        request_message: Message,
        handler: Callable[[], Awaitable[ResponseT]],
        response_type: type[ResponseT],
        *,
        seal: Seal | None = None,
        unseal: Seal | None = None,
    ) -> ResponseT:
        """Run ``handler`` at most once per (merchant, rpc, request_id) and replay its outcome.

        ``rpc`` should be the full method name (e.g. ``giftcard.authorization.v1.
        AuthorizationService/Hold``). ``merchant`` is the authenticated caller, never the body.
        """
        validate_request_id(request_id)
        fingerprint = self.fingerprint(rpc, request_message)

        async def claim_and_execute() -> ResponseT:
            claim = await self.begin(merchant, rpc, request_id, fingerprint)
            if claim.status is BeginStatus.REPLAY:
                return self._replay(claim.outcome, response_type, unseal or self._unseal)
            return await self._execute(claim, rpc, request_id, handler, response_type, seal or self._seal)

        # Shielded, the claim included: if the caller is cancelled (its deadline) the work still
        # finishes and stores its outcome. A cancel between the claim landing in Redis and its
        # reply would otherwise leave the record in progress with no one working on it, and every
        # retry ABORTED until the lease ran out (tests/chaos/test_idempotent_retries.py).
        work = asyncio.ensure_future(claim_and_execute())
        self._in_flight.add(work)
        work.add_done_callback(self._forget)
        return await asyncio.shield(work)

    async def drain(self) -> None:
        """Wait for every in-flight handler, including those whose callers went away.

        Call on shutdown after the gRPC server has stopped, so their outcomes get stored.
        """
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    # -- internals ----------------------------------------------------------------------------

    async def _execute(
        self,
        claim: Begin,
        rpc: str,
        request_id: str,
        handler: Callable[[], Awaitable[ResponseT]],
        response_type: type[ResponseT],
        seal: Seal | None,
    ) -> ResponseT:
        renewer = _LeaseRenewer(lambda: self._renew_lease(claim, rpc, request_id), self._lease_ms / 3000)
        try:
            response = await handler()
        except MeshError as error:
            renewer.cancel()
            if self.is_final(error):
                if not await self.complete(claim, error):
                    raise _lease_lost(request_id) from error
                self._emit(IdempotencyEvent.STORED_ERROR, rpc)
                raise
            await self._release_quietly(claim, rpc, request_id)
            raise
        except BaseException:
            renewer.cancel()
            await self._release_quietly(claim, rpc, request_id)
            raise
        renewer.cancel()

        if not isinstance(response, response_type):
            # A wrong type would be stored and fail every replay; refuse it while the bug is fresh.
            await self._release_quietly(claim, rpc, request_id)
            raise TypeError(
                f"{rpc} handler returned {type(response).__name__}, expected "
                f"{response_type.__name__}"
            )
        payload = response.SerializeToString()
        if not await self.complete(claim, seal(payload) if seal else payload):
            raise _lease_lost(request_id)
        return response

    async def _renew_lease(self, claim: Begin, rpc: str, request_id: str) -> bool:
        """One renewal while the handler runs; False: stop renewing (the lease was lost)."""
        try:
            if not await self.renew(claim):
                log.warning(
                    "idempotency lease lost while handler runs",
                    extra={"rpc": rpc, "request_id": request_id},
                )
                return False
        except Exception:  # a Redis blip: try again next interval, the lease still has 2/3
            log.warning("idempotency lease renewal failed", exc_info=True,
                        extra={"rpc": rpc, "request_id": request_id})
        return True

    async def _release_quietly(self, claim: Begin, rpc: str, request_id: str) -> None:
        # Called while an exception propagates: never let a Redis error replace it. If the
        # release does not land, the lease expires and the client's retry takes the record over.
        try:
            if await self.release(claim):
                self._emit(IdempotencyEvent.RELEASED, rpc)
        except Exception:
            log.warning("idempotency release failed; lease will expire", exc_info=True,
                        extra={"rpc": rpc, "request_id": request_id})

    def _replay(
        self, outcome: Outcome | None, response_type: type[ResponseT], unseal: Seal | None
    ) -> ResponseT:
        if isinstance(outcome, MeshError):
            raise outcome
        assert outcome is not None
        return response_type.FromString(unseal(outcome) if unseal else outcome)

    def _fenced_ok(self, reply: bytes | str, claim: Begin) -> bool:
        if _text(reply) == "OK":
            return True
        self._emit(IdempotencyEvent.LEASE_LOST, claim.rpc)
        return False

    def _forget(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so a detached failure (caller gone) is logged once, not as
            # "exception was never retrieved"; an attached caller re-raises it anyway.
            log.debug("idempotent handler failed", exc_info=task.exception())

    def _emit(self, event: IdempotencyEvent, rpc: str) -> None:
        self.counters[event] += 1
        if self._on_event is not None:
            try:
                self._on_event(event, rpc)
            except Exception:  # telemetry must never fail a payment
                log.warning("idempotency on_event hook failed", exc_info=True)


class _LeaseRenewer:
    """Calls `renew()` every `interval` seconds until cancelled or `renew()` answers False.

    A timer, not a task per call: almost every handler finishes long before its first renewal
    is due, and a sleeping task per RPC (created, scheduled, cancelled) was a measurable part of
    an Authorize's CPU (bench/ profile); a timer handle costs a heap push and a cancel."""

    def __init__(self, renew: Callable[[], Awaitable[bool]], interval: float) -> None:
        self._renew = renew
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._due)

    def _due(self) -> None:
        self._timer = None
        self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        if await self._renew() and not self._stopped:
            self._timer = self._loop.call_later(self._interval, self._due)

    def cancel(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def _in_progress(request_id: str) -> MeshError:
    return MeshError(
        grpc.StatusCode.ABORTED,
        REQUEST_IN_PROGRESS,
        "a request with this request_id is still being processed; retry shortly",
        metadata={"request_id": request_id},
        retryable=True,
    )


def _lease_lost(request_id: str) -> MeshError:
    # Another attempt took this record over (our lease expired): its outcome is the one stored,
    # so the client must retry to receive it rather than take ours.
    log.error("idempotency lease lost before completion; outcome not stored",
              extra={"request_id": request_id})
    return MeshError(
        grpc.StatusCode.ABORTED,
        REQUEST_IN_PROGRESS,
        "this request was taken over by another attempt; retry to receive its outcome",
        metadata={"request_id": request_id},
        retryable=True,
    )


def _token(claim: Begin) -> str:
    if claim.status is not BeginStatus.NEW or claim.token is None:
        raise ValueError("only a NEW claim can be completed, released or renewed")
    return claim.token


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
