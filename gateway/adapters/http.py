"""The shared base of every HTTP vendor adapter: one `commit` choke point per vendor profile.

Building an adapter on it (the Paytronix and Ackroo adapters are the worked examples)
----------------------------------------------------------------------------------------
    gateway/adapters/<vendor>/
        wire.py        the vendor's request/reply shapes (TypedDicts / dataclasses), field names
                       exactly as the vendor spells them; nothing else.
        translate.py   pure functions: port arguments -> wire payload, wire reply -> port result,
                       and ONE exhaustive `ERRORS: dict[str, VendorErrorRule]` table of the vendor's
                       error codes -> MeshError (`raise_vendor_error(...)`). Money crosses here only:
                       `wire_amount(money)` -> "12.30", `parse_amount(vendor, "12.30", currency)`.
        client.py      `class <Vendor>Client`: owns a `VendorHttp` and says, per operation, the path
                       and whether the call is `idempotent` (safe to resend: reads, or writes that
                       carry the vendor's own idempotency handle); it decodes success vs failure of
                       the reply with translate.py.
        provider.py    `class <Vendor>Provider(UnsupportedOperations)`: the port verbs (ports.py) in
                       a few lines each: translate -> client -> translate. `name`, `capabilities`
                       (hold_mode "shadow" for a vendor without holds; gateway.emulation adds them).
        __init__.py    `build(profile, *, breaker, metrics, tracer_provider) -> Provider`.

    http = VendorHttp(
        "acme", profile,                     # base_url, timeout_seconds, credentials, options
        auth=httpx.BasicAuth(user, pw),      # or headers={"Authorization": "Bearer ..."}: both stay
        breaker=breaker,                     #   inside the httpx client, never logged
        sensitive_fields={"cardNumber"},     # added to SENSITIVE_FIELDS for scrub()
    )
    reply = await http.commit("redeem", "/v1/redeem", payload, idempotent=False)
    reply.status_code, reply.body            # parsed JSON (None if the body was not JSON)

What `commit` guarantees, so adapters don't repeat it:
- Deadline: no attempt waits past the caller's deadline (`common.context.current_call()` when a
  call is bound) nor past `profile.timeout_seconds`; no attempt starts without time left.
- Retries with jittered exponential backoff (`options.max_attempts`, default 3) only when safe:
  the request never left (connection refused / DNS / pool), or `idempotent=True`.
- A write that may have reached the vendor (timeout, reset, 500/504 after sending) is never
  resent: it raises `DEADLINE_EXCEEDED` / `UNAVAILABLE` reason PROVIDER_TIMEOUT, retryable, with
  `metadata["outcome"] = "unknown"`. The service layer's write-ahead intent then reverses it by
  reference (ports.Provider.reverse(original_reference_id=...)) or the resolver does; the adapter
  never guesses.
- Circuit breaker (breaker.py): provider faults (connection errors, timeouts, 5xx) count; while
  open every call fails fast with UNAVAILABLE PROVIDER_UNAVAILABLE.
- 5xx never reaches the adapter; any reply < 500 does (the adapter's table maps 4xx bodies).
- Logging: one DEBUG line per attempt with the scrubbed request/reply bodies; card numbers, PINs,
  CVV2s, tracks and tokens are replaced (`scrub`); headers (credentials) are never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from common.config import ProviderProfile
from common.context import current_call
from common.errors import (
    PROVIDER_ERROR,
    PROVIDER_TIMEOUT,
    PROVIDER_UNAVAILABLE,
    MeshError,
)
from common.money import Money, format_decimal, from_decimal
from gateway.adapters.breaker import CircuitBreaker

# Field names (any vendor's spelling, compared case-insensitively without _ and -) whose values are
# card data or secrets. scrub() replaces them wherever they appear in a logged structure.
SENSITIVE_FIELDS = frozenset({
    "cardnumber", "printedcardnumber", "pan", "number", "tracktwo", "trackinfo", "trackdata",
    "track2", "barcode", "phonenumber", "accounttoken", "pin", "cardregcode", "cvv", "cvv2",
    "securitycode", "applenfcvaspayload", "googlenfcvaspayload", "newcardnumber", "password",
    "token", "secret", "apikey", "authorization", "claimurl", "cardclaimlink",
})
# 12-19 digit runs (optionally spaced/dashed) are treated as card numbers anywhere in free text.
_PAN_RE = re.compile(r"(?<!\d)(?:\d[ -]?){11,18}\d(?!\d)")
FILTERED = "[FILTERED]"

# Never less than this per attempt: below it a request cannot complete and only adds load.
MIN_ATTEMPT_SECONDS = 0.05


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def scrub(value: Any, extra_fields: frozenset[str] | set[str] = frozenset()) -> Any:
    """A copy of `value` (JSON-like structure or text) safe to log: sensitive fields filtered,
    card-number-like digit runs masked to their last 4."""
    sensitive = SENSITIVE_FIELDS | {_norm(f) for f in extra_fields}
    if isinstance(value, Mapping):
        return {
            k: (FILTERED if _norm(str(k)) in sensitive and v not in (None, "") else scrub(v, extra_fields))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(v, extra_fields) for v in value]
    if isinstance(value, str):
        return _PAN_RE.sub(lambda m: "*" * 6 + re.sub(r"\D", "", m.group())[-4:], value)
    return value


# -- errors every adapter raises the same way ---------------------------------------------------

def provider_timeout(vendor: str, operation: str, *, sent: bool = True, code=grpc.StatusCode.DEADLINE_EXCEEDED) -> MeshError:
    """The call may or may not have been applied at the vendor: retryable, outcome unknown."""
    return MeshError(
        code, PROVIDER_TIMEOUT,
        f"provider {vendor} did not answer {operation} in time; outcome unknown" if sent
        else f"no time left to call provider {vendor} for {operation}",
        metadata={"provider": vendor, "operation": operation, "outcome": "unknown" if sent else "not_sent"},
        retryable=True,
    )


def provider_unavailable(vendor: str, operation: str, detail: str) -> MeshError:
    """The request did not reach the vendor or the vendor refused it as a whole: not applied."""
    return MeshError(
        grpc.StatusCode.UNAVAILABLE, PROVIDER_UNAVAILABLE, f"provider {vendor} unavailable for {operation}: {detail}",
        metadata={"provider": vendor, "operation": operation, "outcome": "not_applied"}, retryable=True,
    )


def provider_error(vendor: str, operation: str, detail: str, vendor_code: str = "") -> MeshError:
    """The vendor answered something the adapter cannot use (malformed, unknown error code, auth)."""
    metadata = {"provider": vendor, "operation": operation}
    if vendor_code and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", vendor_code):
        metadata["vendor_code"] = vendor_code
    return MeshError(grpc.StatusCode.INTERNAL, PROVIDER_ERROR, f"provider {vendor} {operation}: {detail}", metadata=metadata)


def unusable_reply(vendor: str, operation: str, detail: str) -> MeshError:
    """A success reply the adapter cannot read (missing id, bad amount) to a call that may have
    moved money: not a refusal. Retryable with outcome unknown, so the caller's intent stays
    pending and is reversed by reference instead of being recorded as declined."""
    return MeshError(
        grpc.StatusCode.UNKNOWN, PROVIDER_ERROR, f"provider {vendor} {operation}: unusable reply ({detail}); outcome unknown",
        metadata={"provider": vendor, "operation": operation, "outcome": "unknown"}, retryable=True,
    )


@dataclass(frozen=True, slots=True)
class VendorErrorRule:
    """One row of an adapter's error table: vendor error code -> gRPC code + ErrorInfo reason.
    `retryable` marks a refusal that may succeed later; `outcome_unknown` a refusal that says the
    operation may have been applied earlier (e.g. a duplicate external id after a lost reply)."""

    code: grpc.StatusCode
    reason: str
    message: str
    retryable: bool = False
    outcome_unknown: bool = False


def raise_vendor_error(
    vendor: str, operation: str, vendor_code: str, table: Mapping[str, VendorErrorRule]
) -> MeshError:
    """The MeshError for `vendor_code` through the adapter's table; an unknown code is a
    PROVIDER_ERROR (INTERNAL) naming it, never a guess."""
    rule = table.get(vendor_code)
    if rule is None:
        return provider_error(vendor, operation, "unrecognised vendor error", vendor_code)
    metadata = {"provider": vendor, "operation": operation, "vendor_code": vendor_code}
    if rule.outcome_unknown:
        metadata["outcome"] = "unknown"
    return MeshError(rule.code, rule.reason, rule.message, metadata=metadata, retryable=rule.retryable)


# -- money at the wire --------------------------------------------------------------------------

def wire_amount(money: Money) -> str:
    """Minor units -> the vendor's decimal string with the currency's exponent (1230 USD -> "12.30")."""
    return format_decimal(money)


def parse_amount(vendor: str, operation: str, value: Any, currency: str) -> Money:
    """A vendor decimal (string or JSON number) -> Money; a malformed one is a PROVIDER_ERROR."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise provider_error(vendor, operation, "amount missing or not a decimal")
    try:
        # A JSON float goes through str() so 10.1 stays 10.1, not its binary expansion.
        return from_decimal(str(value), currency)
    except ValueError as exc:
        raise provider_error(vendor, operation, f"bad amount ({exc})") from None


# -- the choke point ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "RetryPolicy":
        default = cls()
        return cls(
            max_attempts=max(1, int(options.get("max_attempts", default.max_attempts))),
            base_backoff_seconds=float(options.get("backoff_seconds", default.base_backoff_seconds)),
            max_backoff_seconds=float(options.get("max_backoff_seconds", default.max_backoff_seconds)),
        )

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return random.uniform(0, min(self.max_backoff_seconds, self.base_backoff_seconds * (2 ** attempt)))


@dataclass(frozen=True, slots=True)
class VendorReply:
    status_code: int
    body: Any  # parsed JSON, or None when the body was not JSON
    text: str = field(default="", repr=False)
    # True when this reply answers a resend whose earlier attempt may have been applied (its
    # reply was lost): a refusal then does not prove that nothing moved.
    resent: bool = False

    @property
    def json_object(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


def breaker_from_profile(name: str, profile: ProviderProfile, on_state=None) -> CircuitBreaker:
    """A breaker with `options.breaker_failure_threshold` (default 5) and
    `options.breaker_reset_seconds` (default 30)."""
    return CircuitBreaker(
        name, failure_threshold=int(profile.options.get("breaker_failure_threshold", 5)),
        reset_seconds=float(profile.options.get("breaker_reset_seconds", 30.0)), on_state=on_state,
    )


def _remaining_deadline() -> float | None:
    try:
        return current_call().remaining()
    except MeshError:
        return None  # no call bound (a background job): the profile timeout alone bounds it


class _NotSent(Exception):
    """The request never left this process (connect failure): safe to resend."""


class VendorHttp:
    """One pooled `httpx.AsyncClient` per vendor profile and the `commit` choke point over it."""

    def __init__(
        self, vendor: str, profile: ProviderProfile, *,
        auth: httpx.Auth | None = None, headers: Mapping[str, str] | None = None,
        breaker: CircuitBreaker | None = None, retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None, tracer_provider=None,
        sensitive_fields: set[str] | frozenset[str] = frozenset(),
        logger: logging.Logger | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if not profile.base_url:
            raise ValueError(f"provider {vendor}: base_url is required")
        self.vendor = vendor
        self.timeout_seconds = profile.timeout_seconds
        self.breaker = breaker or breaker_from_profile(vendor, profile)
        self.retry = retry or RetryPolicy.from_options(profile.options)
        self._sensitive = frozenset(sensitive_fields)
        self._log = logger or logging.getLogger(f"giftcard.gateway.{vendor}")
        self._sleep = sleep
        limits = httpx.Limits(
            max_connections=int(profile.options.get("max_connections", 100)),
            max_keepalive_connections=int(profile.options.get("max_keepalive_connections", 20)),
        )
        self.client = httpx.AsyncClient(
            base_url=profile.base_url.rstrip("/"), auth=auth, headers=dict(headers or {}),
            timeout=httpx.Timeout(profile.timeout_seconds), limits=limits, transport=transport,
            follow_redirects=False,
        )
        if tracer_provider is not None:
            from common.telemetry import instrument_http_client

            instrument_http_client(self.client, tracer_provider)

    async def aclose(self) -> None:
        await self.client.aclose()

    def _attempt_budget(self, operation: str) -> float:
        budget = self.timeout_seconds
        remaining = _remaining_deadline()
        if remaining is not None:
            budget = min(budget, remaining)
        return budget

    async def commit(
        self, operation: str, path: str, payload: Mapping[str, Any] | None, *, idempotent: bool,
        method: str = "POST", headers: Mapping[str, str] | None = None,
    ) -> VendorReply:
        """Send one vendor request (with retries when safe) and return its reply (< 500)."""
        attempt = 0
        # An earlier attempt may have been applied (timeout, reset, 500/504): whatever the last
        # attempt says, a failure of this call is then an unknown outcome, never "not applied".
        uncertain = False
        while True:
            budget = self._attempt_budget(operation)
            if budget < MIN_ATTEMPT_SECONDS:
                raise provider_timeout(self.vendor, operation, sent=uncertain)
            self.breaker.before_call()
            try:
                reply = await self._send(operation, method, path, payload, headers, budget)
            except _NotSent as exc:
                self.breaker.record_failure()
                error = provider_unavailable(self.vendor, operation, str(exc))
                safe = True
            except (httpx.TimeoutException, asyncio.TimeoutError):
                self.breaker.record_failure()
                error = provider_timeout(self.vendor, operation)
                safe = idempotent
            except (httpx.TransportError, ConnectionError) as exc:
                # Reset / protocol error after the request was (maybe) sent.
                self.breaker.record_failure()
                error = provider_timeout(self.vendor, operation, code=grpc.StatusCode.UNAVAILABLE)
                error.message = f"provider {self.vendor} dropped {operation} ({type(exc).__name__}); outcome unknown"
                safe = idempotent
            except BaseException:
                self.breaker.release_probe()
                raise
            else:
                if reply.status_code < 500:
                    self.breaker.record_success()
                    return dataclasses.replace(reply, resent=True) if uncertain else reply
                self.breaker.record_failure()
                if reply.status_code in (502, 503):
                    # Refused in front of the application (proxy / overload): not applied.
                    error = provider_unavailable(self.vendor, operation, f"HTTP {reply.status_code}")
                    safe = True
                else:
                    # 500 / 504 / other: the application may have applied it.
                    error = provider_timeout(self.vendor, operation, code=grpc.StatusCode.UNAVAILABLE)
                    error.message = f"provider {self.vendor} answered {operation} with HTTP {reply.status_code}; outcome unknown"
                    safe = idempotent
            attempt += 1
            uncertain = uncertain or error.metadata.get("outcome") == "unknown"
            if uncertain and error.metadata.get("outcome") != "unknown":
                error = provider_timeout(self.vendor, operation, code=grpc.StatusCode.UNAVAILABLE)
            if not safe or attempt >= self.retry.max_attempts:
                raise error
            delay = self.retry.backoff(attempt)
            remaining = _remaining_deadline()
            if remaining is not None and remaining - delay < MIN_ATTEMPT_SECONDS:
                raise error
            self._log.info(
                "retrying vendor call",
                extra={"provider": self.vendor, "operation": operation, "attempt": attempt, "reason": error.reason},
            )
            await self._sleep(delay)

    async def _send(self, operation, method, path, payload, headers, budget) -> VendorReply:
        started = time.perf_counter()
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("vendor request %s %s %s", operation, path,
                            json.dumps(scrub(payload, self._sensitive)) if payload is not None else "")
        # httpx timeouts are per phase (connect, each read): the outer timeout bounds the total.
        try:
            async with asyncio.timeout(budget):
                response = await self.client.request(
                    method, path, json=payload, headers=headers, timeout=httpx.Timeout(budget),
                )
                text = response.text
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _NotSent(type(exc).__name__) from None
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("vendor reply %s %s HTTP %s in %.3fs %s", operation, path, response.status_code,
                            time.perf_counter() - started,
                            json.dumps(scrub(body, self._sensitive)) if body is not None else "<non-JSON>")
        return VendorReply(response.status_code, body, text)
