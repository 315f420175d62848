"""What every HTTP vendor adapter shares beyond the `commit` choke point (gateway/adapters/http.py):
its client's lifetime and the single currency of the vendor program it is configured for."""

from __future__ import annotations

from common.errors import CURRENCY_MISMATCH, invalid_argument
from common.money import Money
from gateway.ports import UnsupportedOperations


class VendorProvider(UnsupportedOperations):
    """Base of the vendor adapters: subclasses set `self._client` (with `aclose()`) and
    `self._currency` (vendor requests carry no currency, or one fixed per program)."""

    _client: object
    _currency: str

    async def aclose(self) -> None:
        await self._client.aclose()

    def _check_currency(self, amount: Money, field: str = "amount") -> None:
        if amount.currency != self._currency:
            raise invalid_argument(
                f"{field}.currency_code", f"this {self.name} program is in {self._currency}", CURRENCY_MISMATCH
            )
