"""A circuit breaker per vendor endpoint: stop sending to a vendor that keeps failing.

closed -> (failure_threshold consecutive failures) -> open -> (reset_seconds later, one probe
allowed) -> half_open -> success: closed / failure: open again.

Only provider faults count as failures (connection errors, timeouts, 5xx); a business refusal
(insufficient funds, card not found) proves the vendor is up and counts as a success. While open,
calls fail fast with UNAVAILABLE PROVIDER_UNAVAILABLE instead of waiting out a timeout each.
The state goes to `on_state(name, state)` (the `giftcard_circuit_breaker_state` gauge through
`ProviderMetrics.set_breaker_state`) on every transition.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from common.errors import PROVIDER_UNAVAILABLE, MeshError, unavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self, name: str, *, failure_threshold: int = 5, reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_state = on_state
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._emit()

    @property
    def state(self) -> str:
        # An open breaker whose cool-down has passed is ready for a probe: report it as half-open.
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            return HALF_OPEN
        return self._state

    def before_call(self) -> None:
        """Raise UNAVAILABLE if the call must not be sent; in half-open, let exactly one probe go."""
        if self._state == CLOSED:
            return
        if self._state == OPEN:
            if self._clock() - self._opened_at < self.reset_seconds:
                raise self._open_error()
            self._transition(HALF_OPEN)
        # half-open: one probe at a time; the others fail fast until it reports back.
        if self._probe_in_flight:
            raise self._open_error()
        self._probe_in_flight = True

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state != CLOSED:
            self._transition(CLOSED)

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            if self._state != OPEN:
                self._transition(OPEN)

    def release_probe(self) -> None:
        """The probe ended without telling anything about the vendor (e.g. the caller cancelled)."""
        self._probe_in_flight = False

    def _transition(self, state: str) -> None:
        self._state = state
        self._emit()

    def _emit(self) -> None:
        if self._on_state is not None:
            self._on_state(self.name, self._state)

    def _open_error(self) -> MeshError:
        error = unavailable(PROVIDER_UNAVAILABLE, f"provider {self.name} is unavailable (circuit open)")
        error.metadata.update({"provider": self.name, "circuit": "open"})
        return error
