"""The one simulator skeleton: vendor routes + the `/_sim` admin namespace + fault middleware.

A vendor module subclasses `Simulator`, lists its routes, and supplies four renderings of its own
wire shapes: authentication failure, invalid request, business refusal (from a `LedgerError`), and
optionally vendor-specific faults. Everything else (JSON parsing without floats, locking, card
seeding, ledger inspection, fault configuration) lives here once.

Admin namespace (never subject to faults, never part of any vendor API):

    GET    /_sim/health            {"vendor": ..., "status": "ok"}
    POST   /_sim/reset             empty the ledger, clear faults
    POST   /_sim/cards             seed one card {...} or {"cards": [{...}, ...]}
    GET    /_sim/cards/{number}    one card's state (balance, available, status, holds)
    GET    /_sim/ledger            every card (masked), hold and transaction
    GET    /_sim/faults            current fault config
    PUT    /_sim/faults            replace it: {"rules": [...], "rate": 0.1, "rate_faults": [...],
                                   "seed": 7, "hang_seconds": 30}
    POST   /_sim/faults            add one rule {"fault": "http-503", "path": "/gift/*", "count": 2}
    DELETE /_sim/faults            clear all rules and the rate
    GET    /_sim/config            vendor options; PATCH /_sim/config changes some of them
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import FaultConfig, FaultController, FaultMiddleware, FaultSpecError, rule_from_json
from .ledger import ACTIVE, CARD_STATUSES, Card, Ledger, LedgerError
from .money import AmountError, to_decimal
from .validation import Invalid


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]


Handler = Callable[[Any, Request], Reply]


class _NoFloats(json.JSONEncoder):
    """Replies carry amounts as preformatted strings; a stray Decimal/float is a simulator bug."""

    def default(self, o: Any) -> Any:
        raise TypeError(f"unserialisable {type(o).__name__} in a simulator reply")


class VendorJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, cls=_NoFloats, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """JSON with decimals as `Decimal` (never float) and NaN/Infinity refused."""
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


class Simulator:
    """Base class; one instance = one vendor sandbox with its own ledger and fault settings."""

    vendor: ClassVar[str] = "base"
    # Dotted reply paths that `wrong-answer` perturbs, first match wins.
    wrong_answer_paths: ClassVar[tuple[str, ...]] = ()
    # Extra fault actions only this vendor understands (e.g. Radial's "vendor-timeout").
    vendor_actions: ClassVar[tuple[str, ...]] = ()
    # Card seeding: which alias kinds and attributes `/_sim/cards` accepts for this vendor.
    seed_aliases: ClassVar[tuple[str, ...]] = ()
    seed_attributes: ClassVar[tuple[str, ...]] = ()
    # Attributes never shown by the admin API (secrets such as CVV2).
    secret_attributes: ClassVar[tuple[str, ...]] = ("cvv2",)

    @dataclasses.dataclass
    class Options:
        pass

    def __init__(self, *, options: Mapping[str, Any] | None = None,
                 faults: FaultConfig | Mapping[str, Any] | None = None) -> None:
        self.options = self._apply_options(self.Options(), options or {})
        # One seeded RNG per simulator (auth codes, generated numbers, PINs): reproducible runs.
        self.rng = random.Random(getattr(self.options, "seed", 0))
        self.ledger = self.make_ledger()
        if isinstance(faults, Mapping):
            faults = FaultConfig.from_json(faults, self.vendor_actions)
        self.faults = FaultController(faults, self.vendor_actions)
        self.app = FaultMiddleware(
            self._build_starlette(), self.faults,
            wrong_answer_paths=self.wrong_answer_paths,
            vendor_fault=self.vendor_fault if self.vendor_actions else None,
        )

    # ---------------------------------------------------------------- hooks

    def make_ledger(self) -> Ledger:
        return Ledger()

    def routes(self) -> Sequence[tuple[str, Handler]]:
        """(path, handler) pairs of the vendor API; every route is POST with a JSON body."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> Reply | None:
        """None if the request carries valid credentials, else the vendor's auth failure reply."""
        return None

    def invalid(self, problem: Invalid) -> Reply:
        raise NotImplementedError

    def refused(self, error: LedgerError) -> Reply:
        raise NotImplementedError

    def vendor_fault(self, action: str, raw_body: bytes) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def on_reset(self) -> None:
        """Vendor state outside the ledger to forget on `/_sim/reset`."""

    # ---------------------------------------------------- idempotent replay

    def replayable(self, key: str | None, request: Request, body: Any, run: Callable[[], Reply],
                   reused: Callable[[], Reply]) -> Reply:
        """Run once per client key: the same key with the same path and body replays the stored reply
        (business refusals included); the same key with anything else gets `reused()`.
        Call with the ledger locked (handlers are)."""
        if key is None:
            return run()
        fingerprint = hashlib.sha256(
            json.dumps([request.url.path, body], sort_keys=True, default=str).encode()).hexdigest()
        seen = self.ledger.request_ids.get(key)
        if seen is not None:
            return seen[1] if seen[0] == fingerprint else reused()
        try:
            reply = run()
        except LedgerError as error:
            reply = self.refused(error)
        self.ledger.request_ids[key] = (fingerprint, reply)
        return reply

    # --------------------------------------------------------- vendor routes

    def _endpoint(self, handler: Handler) -> Callable:
        async def endpoint(request: Request) -> Response:
            denied = self.authenticate(request)
            if denied is not None:
                return VendorJSON(denied.body, status_code=denied.status)
            raw = await request.body()
            content_type = request.headers.get("content-type", "")
            try:
                if "json" not in content_type.lower():
                    raise Invalid("Content-Type", "must be application/json")
                try:
                    body = parse_json(raw)
                except ValueError:
                    raise Invalid("body", "must be valid JSON") from None
                with self.ledger.locked():
                    reply = handler(body, request)
            except Invalid as problem:
                reply = self.invalid(problem)
            except LedgerError as error:
                reply = self.refused(error)
            return VendorJSON(reply.body, status_code=reply.status)
        return endpoint

    # ----------------------------------------------------------------- admin

    def _build_starlette(self) -> Starlette:
        routes = [Route(path, self._endpoint(handler), methods=["POST"]) for path, handler in self.routes()]
        routes += [
            Route("/_sim/health", self._admin_health, methods=["GET"]),
            Route("/_sim/reset", self._admin_reset, methods=["POST"]),
            Route("/_sim/cards", self._admin_seed_cards, methods=["POST"]),
            Route("/_sim/cards/{number}", self._admin_card, methods=["GET"]),
            Route("/_sim/ledger", self._admin_ledger, methods=["GET"]),
            Route("/_sim/faults", self._admin_faults, methods=["GET", "PUT", "POST", "DELETE"]),
            Route("/_sim/config", self._admin_config, methods=["GET", "PATCH"]),
        ]
        return Starlette(routes=routes)

    async def _admin_health(self, request: Request) -> Response:
        return JSONResponse({"vendor": self.vendor, "status": "ok"})

    async def _admin_reset(self, request: Request) -> Response:
        self.ledger.reset()
        self.faults.clear()
        self.on_reset()
        return JSONResponse({"reset": True})

    async def _admin_seed_cards(self, request: Request) -> Response:
        try:
            data = parse_json(await request.body())
            specs = data["cards"] if isinstance(data, dict) and "cards" in data else [data]
            if not isinstance(specs, list):
                raise _AdminError("cards must be a list")
            with self.ledger.locked():
                cards = [self.seed_card(spec) for spec in specs]
                views = [self.card_admin_view(c) for c in cards]
        except (ValueError, _AdminError, LedgerError, AmountError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"cards": views}, status_code=201)

    def seed_card(self, spec: Any) -> Card:
        """Create a card from an admin spec. Keys: number (required), pin, balance ("0.00"),
        status ("active" | "inactive" | "closed"; default active), currency ("USD"), aliases {kind:
        value} for `seed_aliases`, and the vendor's `seed_attributes` as top-level keys."""
        if not isinstance(spec, dict):
            raise _AdminError("a card spec must be an object")
        allowed = {"number", "pin", "balance", "status", "currency", "aliases", *self.seed_attributes}
        unknown = set(spec) - allowed
        if unknown:
            raise _AdminError(f"unknown card keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        number = spec.get("number")
        if not isinstance(number, str) or not number:
            raise _AdminError("number must be a non-empty string")
        status = spec.get("status", ACTIVE)
        if status not in CARD_STATUSES:
            raise _AdminError(f"status must be one of {CARD_STATUSES}")
        aliases = spec.get("aliases") or {}
        if not isinstance(aliases, dict) or set(aliases) - set(self.seed_aliases):
            raise _AdminError(f"aliases must be an object with keys among {list(self.seed_aliases)}")
        pin = spec.get("pin")
        if pin is not None and not isinstance(pin, str):
            raise _AdminError("pin must be a string")
        return self.ledger.add_card(
            number, balance=to_decimal(spec.get("balance", "0")), status=status, pin=pin,
            currency=spec.get("currency", "USD"), aliases=aliases,
            attributes={k: spec[k] for k in self.seed_attributes if k in spec},
        )

    def card_admin_view(self, card: Card) -> dict[str, Any]:
        view = self.ledger.card_view(card)
        view["attributes"] = {k: v for k, v in card.attributes.items() if k not in self.secret_attributes}
        view["holds"] = [self.ledger.hold_view(h) for h in self.ledger.holds.values()
                         if h.card_number == card.number]
        return view

    async def _admin_card(self, request: Request) -> Response:
        with self.ledger.locked():
            try:
                card = self.ledger.card(request.path_params["number"])
            except LedgerError:
                return JSONResponse({"error": "card not found"}, status_code=404)
            return JSONResponse(self.card_admin_view(card))

    async def _admin_ledger(self, request: Request) -> Response:
        return JSONResponse(self.ledger.snapshot())

    async def _admin_faults(self, request: Request) -> Response:
        try:
            if request.method == "PUT":
                self.faults.configure(FaultConfig.from_json(parse_json(await request.body()),
                                                            self.vendor_actions))
            elif request.method == "POST":
                self.faults.add_rule(rule_from_json(parse_json(await request.body()), self.vendor_actions))
            elif request.method == "DELETE":
                self.faults.clear()
        except (ValueError, FaultSpecError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.faults.config.to_json())

    async def _admin_config(self, request: Request) -> Response:
        if request.method == "PATCH":
            try:
                self.options = self._apply_options(self.options, parse_json(await request.body()))
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(dataclasses.asdict(self.options))

    @classmethod
    def _apply_options(cls, current: Any, changes: Any) -> Any:
        if not isinstance(changes, Mapping):
            raise ValueError("options must be an object")
        names = {f.name for f in dataclasses.fields(current)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown {cls.vendor} options {sorted(unknown)}; known: {sorted(names)}")
        return dataclasses.replace(current, **changes)


class _AdminError(ValueError):
    pass
