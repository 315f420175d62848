"""One entry per vendor for the contract suite: how to point a merchant at it and how to seed and
read its ledger. Adding a vendor (radial, clutch, smartclixx) = one `Harness` in HARNESSES; every
scenario in test_contract.py then runs against it, driven by the capabilities it declares.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from common.auth import key_digest

CURRENCY = "USD"


def new_number(prefix: str = "6035") -> str:
    return prefix + "".join(secrets.choice("0123456789") for _ in range(16 - len(prefix)))


@dataclass
class Harness:
    name: str
    # Simulator vendor name (None: the in-house native ledger, no HTTP).
    simulator: str | None
    credentials: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    simulator_options: dict[str, Any] | None = None
    # Operations the vendor cannot do at all: UNIMPLEMENTED naming vendor + operation.
    unsupported: frozenset[str] = frozenset()
    # The vendor can reverse a timed-out write by our reference.
    reverse_by_reference: bool = True
    # A timed-out redeem is resent by the adapter under the same reference and answered (Paytronix:
    # the vendor refuses the duplicate id, the adapter answers from its journal).
    answers_resent_redeem: bool = False
    # The vendor path a plain redeem goes to (fault injection targets it).
    redeem_path: str = ""
    # The vendor holds funds itself (hold_mode native): the merchant's emulation mode is ignored.
    native_holds: bool = False
    # A PIN the vendor needs on physical activation (Radial: PAN + PIN + amount); seeded with it.
    activation_pin: str = ""

    def profile(self, base_url: str | None, hold_emulation: str, **extra) -> dict[str, Any]:
        if self.simulator is None:
            return {"provider": "native"}
        return {
            "provider": self.name, "base_url": base_url, "credentials": dict(self.credentials),
            "options": {**self.options, "breaker_failure_threshold": 3, "breaker_reset_seconds": 0.5,
                        "backoff_seconds": 0.01},
            "timeout_seconds": 2.0, "hold_emulation": hold_emulation, **extra,
        }


HARNESSES: dict[str, Harness] = {
    "native": Harness("native", None, unsupported=frozenset({"issue_value"})),
    "paytronix": Harness(
        "paytronix", "paytronix",
        credentials={"username": "paytronix-sim", "password": "paytronix-sim-secret"},
        options={"merchant_id": 1, "store_code": "S-001", "terminal_id": "T1"},
        unsupported=frozenset({"allocate", "issue_value"}), redeem_path="/gift/redeem.json",
        answers_resent_redeem=True,
    ),
    "ackroo": Harness(
        "ackroo", "ackroo", credentials={"token": "ackroo-sim-token"},
        options={"device_id": "0d373af2942291bf", "clerk_id": "giftcard-mesh"},
        unsupported=frozenset({"allocate", "issue_value", "exchange", "tip"}),
        reverse_by_reference=False, redeem_path="/transaction/gift/debit",
    ),
    # Designed wire models (gateway/adapters/README.md). Clutch and SmartClixx replay writes by
    # their own request handle, so the base would resend a timed-out write and get the first
    # answer; max_attempts 1 keeps the suite's timeout scenarios about the timeout path (their
    # own tests cover the replay). SmartClixx redeem = authorization + settlement and nothing
    # undoes a settlement there ("reverse_settlement" unsupported: those scenarios skip).
    "radial": Harness(
        "radial", "radial", credentials={"api_key": "radial-sim-key"}, options={"store_id": "STORE1"},
        unsupported=frozenset({"exchange", "issue_value", "tip"}),
        redeem_path="/v1.0/stores/STORE1/storedvalue/Redeem", activation_pin="4321",
    ),
    "clutch": Harness(
        "clutch", "clutch", credentials={"api_key": "clutch-sim-key", "api_secret": "clutch-sim-secret"},
        options={"brand": "SIMBRAND", "location": "WEB", "terminal": "mesh-1", "max_attempts": 1},
        unsupported=frozenset({"exchange", "tip", "cash_out"}), redeem_path="/merchant/settlement",
        native_holds=True,
    ),
    "smartclixx": Harness(
        "smartclixx", "smartclixx", credentials={"api_key": "smartclixx-sim-key"}, options={"max_attempts": 1},
        unsupported=frozenset({"exchange", "issue_value", "tip", "cash_out", "credit", "reverse_settlement"}),
        redeem_path="/api/v1/settlements", native_holds=True,
    ),
}

# Merchants of the contract mesh: one per hold emulation mode (native ignores the mode).
MERCHANT_KEYS = {"shadow": "contract-shadow-key", "redeem_at_authorize": "contract-rat-key"}


def merchants(harness: Harness, base_url: str | None, **profile_extra) -> dict[str, Any]:
    return {
        mode: {
            "api_key_sha256": [key_digest(key)], "currencies": [CURRENCY],
            "providers": [harness.profile(base_url, mode, **profile_extra)],
        }
        for mode, key in MERCHANT_KEYS.items()
    }


class VendorLedger:
    """Seed and read cards where the vendor keeps them (simulator admin API or native ledger)."""

    def __init__(self, harness: Harness, simulator=None, runtime=None) -> None:
        self.harness = harness
        self.simulator = simulator
        self.runtime = runtime

    async def seed(self, merchant: str, balance_minor: int, *, active: bool = True, pin: str | None = None) -> str:
        number = new_number()
        if self.simulator is None:
            await self.runtime.providers.native_ledger.create_card(
                merchant, number, CURRENCY, pin=pin, balance_minor=balance_minor, active=active,
            )
            return number
        spec = {"number": number, "balance": f"{Decimal(balance_minor).scaleb(-2):.2f}",
                "status": "active" if active else "inactive"}
        if pin:
            spec["pin"] = pin
        httpx.post(f"{self.simulator.base_url}/_sim/cards", json=spec, timeout=5).raise_for_status()
        return number

    async def balance(self, merchant: str, number: str) -> int:
        if self.simulator is None:
            state = await self.runtime.providers.native_ledger.get_card(merchant, number)
            return state.balance_minor
        reply = httpx.get(f"{self.simulator.base_url}/_sim/cards/{number}", timeout=5)
        reply.raise_for_status()
        return int(Decimal(str(reply.json()["balance"])).scaleb(2))
