"""Run this package's Lua scripts and turn their error replies (`REASON {json}`) into MeshError."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

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

    async def after(self, redis: Redis, commands: list[tuple], name: str, keys: list[str], args: list) -> object:
        """Send `commands` (plain Redis commands, e.g. ("ZADD", key, score, member)) and then the
        script, in one pipeline (one round trip, no MULTI: the keys may sit in different Cluster
        slots). One Redis runs them in that order; on a Cluster each node's share is sent apart,
        so a caller must not depend on the order for safety. Any error among them raises, so the
        caller never goes on as if they had all landed. Returns the script's reply. Use it only
        for commands that are harmless to repeat (a retry sends them again)."""
        if isinstance(redis, RedisCluster):
            # redis-py refuses EVALSHA inside a Cluster pipeline: one command at a time there.
            for command in commands:
                await redis.execute_command(*command)
            return await self(name, keys, args)
        script = self._set[name]
        for attempt in (1, 2):
            pipe = redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 1 and isinstance(replies[-1], NoScriptError):
                await redis.script_load(script.script)  # first use on this server (or a restart)
                continue
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise error_from_reply(str(reply)) from None
                if isinstance(reply, Exception):
                    raise reply
            return replies[-1]
        raise AssertionError("unreachable")


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_hash(raw: dict) -> dict[str, bytes]:
    return {text(k): v for k, v in raw.items()}
