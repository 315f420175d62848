"""Pydantic bases for the JSON wire models of the designed vendor APIs (Radial, Clutch,
SmartClixx): requests refuse unknown fields and keep secrets as `SecretStr` until `body()` hands
the JSON to the HTTP client; replies ignore fields they do not know."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints
from pydantic.alias_generators import to_camel, to_pascal

# A decimal string with at most two places: the wire never carries a JSON number for money.
WireDecimal = Annotated[str, StringConstraints(pattern=r"^-?[0-9]+(\.[0-9]{1,2})?$")]


def reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: reveal(item) for key, item in value.items()}
    return value


class _WireRequest(BaseModel):
    def body(self) -> dict[str, Any]:
        """The JSON body, secrets revealed (only ever handed to the HTTP client)."""
        return reveal(self.model_dump(by_alias=True, exclude_none=True))


class CamelRequest(_WireRequest):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PascalRequest(_WireRequest):
    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="forbid", frozen=True)


class CamelReply(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class PascalReply(BaseModel):
    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="ignore", frozen=True)
