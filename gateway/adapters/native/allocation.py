"""E-gift allocation for the native provider: card programs (number ranges, PIN / CVV2 / claim-link
rules) and the allocation record that makes `NativeProvider.allocate` idempotent by reference_id.

Programs come from the merchant's native provider profile:

    providers:
      - provider: native
        options:
          programs:
            egift-usd:                 # the program_id callers pass (a Clutch CardsetID, say)
              prefix: "603572"          # digits the numbers start with
              number_length: 16         # including the Luhn check digit (12..19)
              pin_digits: 4             # 0 = no PIN
              cvv2: false               # true: a 3-digit CVV2 instead of a PIN (SmartClixx)
              claim_links: false        # true: claim URL + proxy number, no PIN (Radial)
              claim_url_base: "https://claim.example/"

The allocation record, ``native:alloc:{m:<merchant>:<reference_id>}``, holds the generated
credentials sealed with AES-GCM (common/sealing.py, the key name as associated data), never in
clear. It is written with SET NX *before* the card is provisioned in the ledger, so a crash after
the number was drawn but before the caller heard of it is resumed with the same number: the retry
finds the record and re-runs the (idempotent) provisioning. It expires after RECORD_TTL_SECONDS;
the fulfillment service keeps its own sealed copy for as long as its activation needs one.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping
from urllib.parse import quote

import grpc

from common.errors import CARD_ALREADY_EXISTS, MeshError
from common.redis_scripts import hash_tag
from common.sealing import Sealer

RECORD_TTL_SECONDS = 7 * 24 * 3600
PROGRAM_NOT_FOUND = "PROGRAM_NOT_FOUND"
# Drawing a number that already exists is rare (a 16-digit program has 10^9 numbers per prefix
# of 6); more than a few in a row means the range is exhausted or misconfigured.
_MAX_DRAWS = 8


def luhn_check_digit(payload: str) -> str:
    """The digit that makes payload + digit pass the Luhn (mod 10) check."""
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # doubled: these sit in odd positions once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and luhn_check_digit(number[:-1]) == number[-1]


def _random_digits(count: int) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(count))


@dataclass(frozen=True)
class Program:
    program_id: str
    prefix: str
    number_length: int = 16
    pin_digits: int = 4
    cvv2: bool = False
    claim_links: bool = False
    claim_url_base: str = ""

    @classmethod
    def parse(cls, program_id: str, options: Mapping[str, Any]) -> "Program":
        program = cls(
            program_id=program_id,
            prefix=str(options.get("prefix", "")),
            number_length=int(options.get("number_length", 16)),
            pin_digits=int(options.get("pin_digits", 4)),
            cvv2=bool(options.get("cvv2", False)),
            claim_links=bool(options.get("claim_links", False)),
            claim_url_base=str(options.get("claim_url_base", "")),
        )
        if not program.prefix.isdigit() or not 1 <= len(program.prefix) <= program.number_length - 7:
            raise ValueError(f"program {program_id}: prefix must be digits, leaving >= 6 random digits")
        if not 12 <= program.number_length <= 19:
            raise ValueError(f"program {program_id}: number_length must be 12..19")
        if not 0 <= program.pin_digits <= 12:
            raise ValueError(f"program {program_id}: pin_digits must be 0..12")
        if program.claim_links and not program.claim_url_base:
            raise ValueError(f"program {program_id}: claim_links needs claim_url_base")
        return program

    def draw_number(self) -> str:
        payload = self.prefix + _random_digits(self.number_length - len(self.prefix) - 1)
        return payload + luhn_check_digit(payload)


class CardPrograms:
    """merchant -> program_id -> Program, from settings; unknown programs are NOT_FOUND."""

    def __init__(self, programs: Mapping[str, Mapping[str, Program]]) -> None:
        self._programs = programs

    @classmethod
    def from_settings(cls, settings) -> "CardPrograms":
        found: dict[str, dict[str, Program]] = {}
        for merchant_id, merchant in settings.merchants.items():
            for profile in merchant.providers:
                if profile.provider != "native":
                    continue
                for program_id, options in (profile.options.get("programs") or {}).items():
                    found.setdefault(merchant_id, {})[str(program_id)] = Program.parse(str(program_id), options)
        return cls(found)

    def get(self, merchant: str, program_id: str) -> Program:
        program = self._programs.get(merchant, {}).get(program_id)
        if program is None:
            raise MeshError(
                grpc.StatusCode.NOT_FOUND, PROGRAM_NOT_FOUND,
                "no card program with this program_id is configured for the merchant",
                field="program_id",
            )
        return program


@dataclass(frozen=True)
class Credentials:
    """What an allocation hands out. Secrets: kept out of reprs, sealed at rest."""

    card_number: str = field(repr=False)
    pin: str = field(default="", repr=False)
    cvv2: str = field(default="", repr=False)
    claim_url: str = field(default="", repr=False)  # a bearer link: whoever has it claims the card
    proxy_number: str = ""

    @property
    def ledger_pin(self) -> str | None:
        """The secret the ledger verifies (a CVV2 is checked like a PIN)."""
        return self.pin or self.cvv2 or None


def draw_credentials(program: Program) -> Credentials:
    if program.claim_links:
        return Credentials(
            card_number=program.draw_number(),
            claim_url=program.claim_url_base + secrets.token_urlsafe(24),
            proxy_number=_random_digits(19),
        )
    if program.cvv2:
        return Credentials(card_number=program.draw_number(), cvv2=_random_digits(3))
    return Credentials(card_number=program.draw_number(), pin=_random_digits(program.pin_digits))


class AllocationStore:
    def __init__(self, redis, secret: bytes, ttl_seconds: int = RECORD_TTL_SECONDS) -> None:
        self._redis = redis
        self._sealer = Sealer(secret)
        self._ttl = ttl_seconds

    @staticmethod
    def key(merchant: str, reference_id: str) -> str:
        return f"native:alloc:{hash_tag('m', quote(merchant, safe=''), reference_id)}"

    async def reserve(
        self, ledger, merchant: str, reference_id: str, program: Program
    ) -> tuple[Credentials, bool]:
        """(credentials, replayed): this reference's recorded credentials, or new ones recorded now.

        A fresh number is first probed in the ledger (any answer but CARD_NOT_FOUND means it is
        taken) and only then recorded, so `provision` never has to draw again: a card that exists
        under a recorded number is this reference's own (created by an earlier, interrupted
        attempt or by a concurrent one)."""
        key = self.key(merchant, reference_id)
        stored = await self._redis.get(key)
        if stored is not None:
            return self._unseal(key, program, stored), True
        fresh = await self._draw_unused(ledger, merchant, program)
        if await self._redis.set(key, self._seal(key, program, fresh), nx=True, ex=self._ttl):
            return fresh, False
        stored = await self._redis.get(key)
        if stored is None:  # expired between the two calls: start over
            return await self.reserve(ledger, merchant, reference_id, program)
        return self._unseal(key, program, stored), True

    async def provision(self, ledger, merchant: str, creds: Credentials, currency: str) -> None:
        """Create the card, inactive and empty, in the ledger; an existing one is ours (above)."""
        try:
            await ledger.create_card(merchant, creds.card_number, currency, pin=creds.ledger_pin)
        except MeshError as error:
            if error.reason != CARD_ALREADY_EXISTS:
                raise

    async def _draw_unused(self, ledger, merchant: str, program: Program) -> Credentials:
        for _ in range(_MAX_DRAWS):
            creds = draw_credentials(program)
            try:
                await ledger.get_card(merchant, creds.card_number)
            except MeshError as error:
                if error.reason == "CARD_NOT_FOUND":
                    return creds
        raise MeshError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "PROGRAM_RANGE_EXHAUSTED",
            "could not draw an unused card number for this program", retryable=True,
        )

    def _seal(self, key: str, program: Program, creds: Credentials) -> bytes:
        payload = json.dumps({"program_id": program.program_id, **asdict(creds)}).encode()
        return self._sealer.seal(payload, key.encode())

    def _unseal(self, key: str, program: Program, sealed: bytes) -> Credentials:
        data = json.loads(self._sealer.unseal(sealed, key.encode()))
        if data.pop("program_id") != program.program_id:
            raise MeshError(
                grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED",
                "reference_id was already used to allocate from another program",
            )
        return Credentials(**data)
