"""Load Lua scripts that sit next to the module using them, and run them by EVALSHA.

`LuaScript` does what redis-py's `AsyncScript` does (EVALSHA, load on NOSCRIPT) minus its per-call
`isinstance` against a typing Protocol, ~2% of a GetBalance's server CPU (bench/ profile);
`ScriptSet` finds the `.lua` file and registers it once per client so every caller shares one
implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class LuaScript:
    """One Lua script on one client: `await script(keys=[...], args=[...])`."""

    def __init__(self, redis, source: str) -> None:
        self.redis = redis
        self.script = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence = (), args: Sequence = (), client=None):
        client = self.redis if client is None else client
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # First use on this server, or it restarted / flushed its script cache.
            await client.script_load(self.script)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


class ScriptSet:
    """The Lua scripts of one directory, registered on one Redis client."""

    def __init__(self, redis: Redis, directory: Path) -> None:
        self._redis = redis
        self._directory = directory
        self._scripts: dict[str, LuaScript] = {}

    def __getitem__(self, name: str) -> LuaScript:
        script = self._scripts.get(name)
        if script is None:
            source = (self._directory / f"{name}.lua").read_text()
            script = LuaScript(self._redis, source)
            self._scripts[name] = script
        return script


def hash_tag(*parts: str) -> str:
    """A Redis Cluster hash tag: every key built with the same tag lands in the same slot."""
    return "{" + ":".join(parts) + "}"
