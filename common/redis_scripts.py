"""Load Lua scripts that sit next to the module using them, and run them by EVALSHA.

redis-py's `Script` object already does load-on-NOSCRIPT and EVALSHA; this module only finds the
`.lua` file and registers it once per client so every caller shares one implementation.
"""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


class ScriptSet:
    """The Lua scripts of one directory, registered on one Redis client."""

    def __init__(self, redis: Redis, directory: Path) -> None:
        self._redis = redis
        self._directory = directory
        self._scripts: dict[str, AsyncScript] = {}

    def __getitem__(self, name: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            source = (self._directory / f"{name}.lua").read_text()
            script = self._redis.register_script(source)
            self._scripts[name] = script
        return script


def hash_tag(*parts: str) -> str:
    """A Redis Cluster hash tag: every key built with the same tag lands in the same slot."""
    return "{" + ":".join(parts) + "}"
