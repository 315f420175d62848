"""Run this package's Lua scripts and turn their error replies (`REASON {json}`) into MeshError."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.errors import MeshError
from common.redis_scripts import ScriptSet

_CODES = {
    "HOLD_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "TRANSACTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "OPERATION_NOT_FOUND": grpc.StatusCode.INTERNAL,
}
_MESSAGES = {
    "HOLD_NOT_FOUND": "hold not found",
    "HOLD_NOT_OPEN": "the hold has nothing open",
    "HOLD_EXPIRED": "the hold has expired",
    "AMOUNT_EXCEEDS_OPEN": "amount exceeds what is open on the hold",
    "TRANSACTION_REVERSED": "this transaction was reversed",
    "CLIENT_TRANSACTION_ID_REUSED": "client_transaction_id was already used for another operation",
}


def error_from_reply(text: str) -> MeshError:
    reason, _, rest = text.partition(" ")
    try:
        body, _ = json.JSONDecoder().raw_decode(rest) if rest.strip() else ({}, 0)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = _CODES.get(reason, grpc.StatusCode.FAILED_PRECONDITION)
    return MeshError(code, reason, _MESSAGES.get(reason, reason.lower().replace("_", " ")),
                     metadata={k: str(v) for k, v in body.items()})


class Scripts:
    """The `.lua` files of one directory (default: next to this module), on one Redis client."""

    def __init__(self, redis: Redis, directory: Path | None = None) -> None:
        self._set = ScriptSet(redis, directory or Path(__file__).parent)

    async def __call__(self, name: str, keys: list[str], args: list) -> object:
        try:
            return await self._set[name](keys=keys, args=args)
        except ResponseError as exc:
            raise error_from_reply(str(exc)) from None


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_hash(raw: dict) -> dict[str, bytes]:
    return {text(k): v for k, v in raw.items()}
