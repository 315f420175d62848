"""The provider port: what every adapter implements, in the mesh's own types.

Adapters import only this module and `common/`. Amounts are `common.money.Money` (integer minor
units); card secrets live in `CardId`, whose repr never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import grpc

from common.cards import CardId, mask_number  # noqa: F401  (re-exported for adapters)
from common.errors import OPERATION_NOT_SUPPORTED, MeshError
from common.money import Money

# Card statuses as adapters report them (mapped to giftcard.type.v1.CardStatus by the gateway).
INACTIVE, ACTIVE, DEACTIVATED, LOCKED = "inactive", "active", "deactivated", "locked"


@dataclass(frozen=True, slots=True)
class Capabilities:
    hold_mode: str = "native"  # native | shadow | redeem_at_authorize
    partial_hold: bool = False
    partial_redeem: bool = False
    tip: bool = False
    reverse_by_reference: bool = False
    cash_out: bool = False
    exchange: bool = False
    allocate: bool = False
    claim_links: bool = False
    activate: bool = False
    credit: bool = False
    issue_value: bool = False
    pin_required: bool = False


@dataclass(frozen=True, slots=True)
class OperationResult:
    provider_transaction_id: str
    amount: Money
    masked_number: str
    balance: Money | None = None
    status: str = ACTIVE
    replayed: bool = False
    # Holds: the provider's hold id and what is still reserved on it.
    hold_id: str | None = None
    open: Money | None = None


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    masked_number: str
    status: str
    balance: Money
    held: Money


@dataclass(frozen=True, slots=True)
class Allocation:
    result: OperationResult
    card_number: str = field(default="", repr=False)
    pin: str = field(default="", repr=False)
    cvv2: str = field(default="", repr=False)
    claim_url: str = ""
    proxy_number: str = ""
    # The allocation already activated and loaded the card (e.g. Radial FundAndActivate).
    activated: bool = False


@dataclass(frozen=True, slots=True)
class Reversal:
    result: OperationResult
    # False: the original never reached the provider; nothing was undone.
    reversed: bool


def unsupported(provider: str, operation: str) -> MeshError:
    return MeshError(
        grpc.StatusCode.UNIMPLEMENTED, OPERATION_NOT_SUPPORTED,
        f"provider {provider} does not support {operation}",
        metadata={"provider": provider, "operation": operation},
    )


class Provider(Protocol):
    """A gift card provider. `reference_id` is the mesh's id of the operation: adapters send it as
    the vendor's idempotency / external transaction handle so that a retry never applies twice and
    a timed-out call can be reversed by it."""

    name: str
    capabilities: Capabilities

    async def balance(self, merchant: str, card: CardId) -> BalanceInfo: ...

    async def place_hold(
        self, merchant: str, reference_id: str, card: CardId, amount: Money, *,
        allow_partial: bool, expires_at_ms: int,
    ) -> OperationResult: ...

    async def capture_hold(
        self, merchant: str, reference_id: str, card: CardId, hold_id: str, amount: Money, *,
        release_remainder: bool,
    ) -> OperationResult: ...

    async def release_hold(
        self, merchant: str, reference_id: str, card: CardId, hold_id: str, amount: Money | None
    ) -> OperationResult: ...

    async def redeem(
        self, merchant: str, reference_id: str, card: CardId, amount: Money, *,
        tip: Money | None, allow_partial: bool,
    ) -> OperationResult: ...

    async def credit(
        self, merchant: str, reference_id: str, card: CardId, amount: Money, *, kind: str
    ) -> OperationResult: ...

    async def reverse(
        self, merchant: str, reference_id: str, card: CardId, *,
        provider_transaction_id: str | None, original_reference_id: str | None, original_operation: str = "",
    ) -> Reversal:
        """`original_operation`: "hold" when the caller knows original_reference_id named a
        PlaceHold (only the hold emulation uses it), else ""."""

    async def activate(
        self, merchant: str, reference_id: str, card: CardId, amount: Money, *, promo_code: str
    ) -> OperationResult: ...

    async def allocate(
        self, merchant: str, reference_id: str, program_id: str, amount: Money
    ) -> Allocation: ...

    async def issue_value(
        self, merchant: str, reference_id: str, card: CardId, amount: Money
    ) -> OperationResult: ...

    async def cash_out(self, merchant: str, reference_id: str, card: CardId) -> OperationResult: ...

    async def exchange(
        self, merchant: str, reference_id: str, from_card: CardId, to_card: CardId
    ) -> OperationResult: ...


class UnsupportedOperations:
    """Mix-in: every operation answers UNIMPLEMENTED naming the provider; adapters override what
    their vendor can do."""

    name: str = "unknown"

    async def place_hold(self, *args, **kwargs):
        raise unsupported(self.name, "hold")

    async def capture_hold(self, *args, **kwargs):
        raise unsupported(self.name, "capture")

    async def release_hold(self, *args, **kwargs):
        raise unsupported(self.name, "release")

    async def credit(self, *args, **kwargs):
        raise unsupported(self.name, "credit")

    async def reverse(self, *args, **kwargs):
        raise unsupported(self.name, "reverse")

    async def activate(self, *args, **kwargs):
        raise unsupported(self.name, "activate")

    async def allocate(self, *args, **kwargs):
        raise unsupported(self.name, "allocate")

    async def issue_value(self, *args, **kwargs):
        raise unsupported(self.name, "issue_value")

    async def cash_out(self, *args, **kwargs):
        raise unsupported(self.name, "cash_out")

    async def exchange(self, *args, **kwargs):
        raise unsupported(self.name, "exchange")
