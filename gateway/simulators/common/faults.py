"""Fault injection for the simulators: one implementation, configured per simulator and per request.

A fault is written as a short spec, the same in the `X-Sim-Fault` request header, in
`/_sim/faults` rules and in steady-rate mode:

    latency=500ms            sleep, then serve normally (combinable with one action below)
    timeout-before[=30s]     hang WITHOUT applying, then drop the connection (nothing ever applied)
    timeout-after[=30s]      apply the operation, then hang; the reply is sent only if the client
                             is still waiting when the hang ends (it normally is not: that is the point)
    http-500 | http-502 | http-503 | http-504
                             answer that status with a plain-text body, nothing applied
    reset                    close the TCP connection abruptly (RST) before applying
    reset-after              apply, then reset instead of replying
    wrong-answer             apply correctly, but reply with a valid-looking wrong number (a balance
                             off by 1.00); the ledger itself stays right
    vendor-timeout           (Radial only) the vendor's own "Timeout" reply, nothing applied

Several are joined with commas: `latency=200ms,wrong-answer`. Only the vendor API is subject to
faults; the `/_sim/...` admin namespace never is. Hangs end early when the simulator stops, so a test
never waits on a hung handler at teardown.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

FAULT_HEADER = "x-sim-fault"
APPLIED_HEADER = b"x-sim-fault-applied"
DEFAULT_HANG_SECONDS = 30.0
HTTP_FAULTS = {"http-500": 500, "http-502": 502, "http-503": 503, "http-504": 504}
GENERIC_ACTIONS = ("timeout-before", "timeout-after", "reset", "reset-after", "wrong-answer", *HTTP_FAULTS)

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s)$")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultSpec:
    latency: float = 0.0  # seconds
    action: str | None = None
    hang: float | None = None  # seconds, for timeout-before / timeout-after

    def describe(self) -> str:
        parts = [f"latency={int(self.latency * 1000)}ms"] if self.latency else []
        if self.action:
            parts.append(self.action if self.hang is None else f"{self.action}={self.hang}s")
        return ",".join(parts) or "none"


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise FaultSpecError(f"bad duration {text!r}: use e.g. 500ms or 2s")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_spec(text: str, vendor_actions: Sequence[str] = ()) -> FaultSpec:
    latency = 0.0
    action: str | None = None
    hang: float | None = None
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        name, _, arg = item.partition("=")
        if name == "latency":
            if not arg:
                raise FaultSpecError("latency needs a duration, e.g. latency=500ms")
            latency = parse_duration(arg)
            continue
        if name not in GENERIC_ACTIONS and name not in vendor_actions:
            known = ", ".join(("latency", *GENERIC_ACTIONS, *vendor_actions))
            raise FaultSpecError(f"unknown fault {name!r}; known: {known}")
        if action is not None:
            raise FaultSpecError("at most one fault besides latency per request")
        action = name
        if arg:
            if name not in ("timeout-before", "timeout-after"):
                raise FaultSpecError(f"{name} takes no argument")
            hang = parse_duration(arg)
    return FaultSpec(latency=latency, action=action, hang=hang)


@dataclass
class FaultRule:
    """Inject `spec` into matching requests; `path` is exact or a prefix ending in `*`;
    `count` is how many more requests it applies to (None: until cleared)."""

    spec: FaultSpec
    path: str | None = None
    count: int | None = None

    def matches(self, path: str) -> bool:
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def to_json(self) -> dict[str, Any]:
        return {"fault": self.spec.describe(), "path": self.path, "count": self.count}


@dataclass
class FaultConfig:
    """Per-simulator fault settings (constructor / CLI / `PUT /_sim/faults`).

    `rate` in [0, 1] injects one of `rate_faults` (chosen by a RNG seeded with `seed`) into that
    fraction of vendor requests that no header or rule already covers: a steady-rate chaos mode that
    is reproducible for a given seed and request sequence.
    """

    rules: list[FaultRule] = field(default_factory=list)
    rate: float = 0.0
    rate_faults: tuple[str, ...] = ("http-503", "reset", "timeout-before", "timeout-after", "latency=200ms")
    seed: int = 0
    hang_seconds: float = DEFAULT_HANG_SECONDS

    @classmethod
    def from_json(cls, data: Mapping[str, Any], vendor_actions: Sequence[str] = ()) -> "FaultConfig":
        if not isinstance(data, Mapping):
            raise FaultSpecError("fault config must be an object")
        unknown = set(data) - {"rules", "rate", "rate_faults", "seed", "hang_seconds"}
        if unknown:
            raise FaultSpecError(f"unknown fault config keys: {sorted(unknown)}")
        rules = [rule_from_json(r, vendor_actions) for r in data.get("rules", [])]
        rate = float(data.get("rate", 0.0))
        if not 0.0 <= rate <= 1.0:
            raise FaultSpecError("rate must be within [0, 1]")
        rate_faults = tuple(data.get("rate_faults", cls.rate_faults))
        for spec in rate_faults:
            parse_spec(spec, vendor_actions)
        return cls(rules=rules, rate=rate, rate_faults=rate_faults, seed=int(data.get("seed", 0)),
                   hang_seconds=float(data.get("hang_seconds", DEFAULT_HANG_SECONDS)))

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r.to_json() for r in self.rules], "rate": self.rate,
                "rate_faults": list(self.rate_faults), "seed": self.seed,
                "hang_seconds": self.hang_seconds}


def rule_from_json(data: Any, vendor_actions: Sequence[str] = ()) -> FaultRule:
    if not isinstance(data, Mapping) or not isinstance(data.get("fault"), str):
        raise FaultSpecError('a rule is {"fault": "<spec>", "path": optional, "count": optional}')
    unknown = set(data) - {"fault", "path", "count"}
    if unknown:
        raise FaultSpecError(f"unknown rule keys: {sorted(unknown)}")
    count = data.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise FaultSpecError("count must be a positive integer")
    path = data.get("path")
    if path is not None and not isinstance(path, str):
        raise FaultSpecError("path must be a string")
    return FaultRule(spec=parse_spec(data["fault"], vendor_actions), path=path, count=count)


class FaultController:
    """Chooses the fault for each vendor request and owns the hang/stop machinery."""

    def __init__(self, config: FaultConfig | None = None, vendor_actions: Sequence[str] = ()) -> None:
        self.vendor_actions = tuple(vendor_actions)
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def add_rule(self, rule: FaultRule) -> None:
        with self._lock:
            self.config.rules.append(rule)

    def clear(self) -> None:
        self.configure(FaultConfig(hang_seconds=self.config.hang_seconds))

    def choose(self, path: str, header: str | None) -> FaultSpec | None:
        if header is not None:
            return parse_spec(header, self.vendor_actions)
        with self._lock:
            for rule in self.config.rules:
                if rule.matches(path):
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            self.config.rules.remove(rule)
                    return rule.spec
            if self.config.rate > 0 and self._rng.random() < self.config.rate:
                return parse_spec(self._rng.choice(self.config.rate_faults), self.vendor_actions)
        return None

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake early if the simulator is stopping."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    def hang_seconds(self, spec: FaultSpec) -> float:
        return spec.hang if spec.hang is not None else self.config.hang_seconds


# ------------------------------------------------------------------ wrong answers

def perturb(body: Any, paths: Sequence[str]) -> bool:
    """Add 1.00 to the first amount found at one of the dotted `paths`; True if one was changed.

    Keeps the value's wire type (decimal string stays a string with the same number of places)."""
    for dotted in paths:
        parent: Any = body
        keys = dotted.split(".")
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or keys[-1] not in parent:
            continue
        value = parent[keys[-1]]
        if isinstance(value, str):
            try:
                number = Decimal(value)
            except ArithmeticError:
                continue
            places = len(value.partition(".")[2])
            parent[keys[-1]] = f"{number + 1:.{places}f}"
            return True
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[keys[-1]] = value + 1
            return True
    return False


# ---------------------------------------------------------------------- middleware

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
VendorFault = Callable[[str, bytes], tuple[int, dict[str, Any]]]


async def abort_connection(send: Send) -> None:
    """Reset the client's TCP connection (RST, no response) from inside an ASGI app.

    Needs uvicorn's h11 protocol (the runner forces it): its `send` is a bound method of the request
    cycle, which holds the transport. SO_LINGER 0 turns the close into a reset.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("connection reset fault needs uvicorn with http='h11'")
    if transport.is_closing():  # the client already gave up (e.g. after a hang)
        return
    sock = transport.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    transport.abort()
    # Let connection_lost run so uvicorn sees the disconnect instead of trying to answer 500.
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class FaultMiddleware:
    """Outermost ASGI layer (it must receive uvicorn's own `send` to be able to reset)."""

    def __init__(self, app: Callable, controller: FaultController, *,
                 wrong_answer_paths: Sequence[str],
                 vendor_fault: VendorFault | None = None,
                 admin_prefix: str = "/_sim") -> None:
        self.app = app
        self.controller = controller
        self.wrong_answer_paths = tuple(wrong_answer_paths)
        self.vendor_fault = vendor_fault
        self.admin_prefix = admin_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.admin_prefix):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", []):
            if name.decode("latin-1").lower() == FAULT_HEADER:
                header = value.decode("latin-1")
        try:
            spec = self.controller.choose(scope["path"], header)
        except FaultSpecError as exc:
            await _plain(send, 400, f"bad {FAULT_HEADER} header: {exc}", "invalid")
            return
        if spec is None:
            await self.app(scope, receive, send)
            return
        if spec.latency:
            await self.controller.sleep(spec.latency)
        action = spec.action
        tag = spec.describe()
        if action is None:
            await self.app(scope, receive, _tagging(send, tag))
        elif action in HTTP_FAULTS:
            await _plain(send, HTTP_FAULTS[action], "simulated upstream failure", tag)
        elif action == "reset":
            await abort_connection(send)
        elif action == "timeout-before":
            await self.controller.sleep(self.controller.hang_seconds(spec))
            await abort_connection(send)
        elif action in ("timeout-after", "reset-after", "wrong-answer"):
            start, body = await _buffered(self.app, scope, receive)
            if action == "reset-after":
                await abort_connection(send)
                return
            if action == "timeout-after":
                await self.controller.sleep(self.controller.hang_seconds(spec))
                if self.controller.stopping.is_set():
                    await abort_connection(send)
                    return
            elif 200 <= start["status"] < 300:
                body = self._wrong(body)
            await _send_buffered(send, start, body, tag)
        else:
            assert self.vendor_fault is not None
            raw = await _read_body(receive)
            status, payload = self.vendor_fault(action, raw)
            await _json(send, status, payload, tag)

    def _wrong(self, body: bytes) -> bytes:
        try:
            data = json.loads(body)
        except ValueError:
            return body
        if not perturb(data, self.wrong_answer_paths):
            return body
        return json.dumps(data).encode()


def _tagging(send: Send, tag: str) -> Send:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), (APPLIED_HEADER, tag.encode())])
        await send(message)
    return wrapped


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _buffered(app: Callable, scope: Scope, receive: Receive) -> tuple[dict[str, Any], bytes]:
    """Run the app to completion (the operation is applied) while holding back its reply."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def capture(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return start, b"".join(chunks)


async def _send_buffered(send: Send, start: dict[str, Any], body: bytes, tag: str) -> None:
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers += [(b"content-length", str(len(body)).encode()), (APPLIED_HEADER, tag.encode())]
    await send({"type": "http.response.start", "status": start["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, text: str, tag: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (APPLIED_HEADER, tag.encode())]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: Any, tag: str) -> None:
    await _send_buffered(send, {"status": status, "headers": [(b"content-type", b"application/json")]},
                         json.dumps(payload).encode(), tag)


__all__ = [
    "FaultConfig", "FaultController", "FaultMiddleware", "FaultRule", "FaultSpec", "FaultSpecError",
    "parse_spec", "perturb",
]
