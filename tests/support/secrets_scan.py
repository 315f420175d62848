"""Find card secrets where they must never be: log records written during a test, and Redis.

Tests register every full card number, PIN, CVV2 and claim URL they use or receive; at the end the
`SecretWatch` scans each captured log record (message, arguments, extra fields and exception text,
i.e. everything the JSON log formatter could print) and every value stored in Redis.
"""

from __future__ import annotations

import logging
import traceback

# Attributes every LogRecord has; the rest are `extra=` fields the JSON formatter prints.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}


def record_text(record: logging.LogRecord) -> str:
    parts = [str(record.msg), repr(record.args)]
    try:
        parts.append(record.getMessage())
    except Exception:  # a bad format string is not what this scan is about
        pass
    parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in _STANDARD]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.exc_text:
        parts.append(record.exc_text)
    return "\n".join(parts)


async def redis_dump(client) -> bytes:
    """Every key and value in the database, concatenated (binary, as stored)."""
    chunks: list[bytes] = []
    async for key in client.scan_iter(count=1000):
        chunks.append(key)
        kind = (await client.type(key)).decode()
        if kind == "string":
            chunks.append(await client.get(key) or b"")
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                chunks += [field, value]
        elif kind == "list":
            chunks += await client.lrange(key, 0, -1)
        elif kind == "set":
            chunks += list(await client.smembers(key))
        elif kind == "zset":
            chunks += await client.zrange(key, 0, -1)
        elif kind == "stream":
            for _, fields in await client.xrange(key):
                for field, value in fields.items():
                    chunks += [field, value]
    return b"\n".join(chunks)


# Shorter values (a 3-digit CVV2, a 4-digit PIN) occur by chance in timestamps and ids, so a scan
# for them proves nothing; tests give their programs 8-digit PINs to make PINs scannable.
MIN_SCANNABLE = 6


class SecretWatch:
    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, *values: str) -> None:
        self.secrets.update(v for v in values if v and len(v) >= MIN_SCANNABLE)

    def leaks_in_logs(self, records: list[logging.LogRecord]) -> list[tuple[str, str]]:
        found = []
        for record in records:
            text = record_text(record)
            found += [(record.name, "secret#%d" % i) for i, s in enumerate(sorted(self.secrets)) if s in text]
        return found

    async def leaks_in_redis(self, client) -> list[str]:
        dump = await redis_dump(client)
        return ["secret#%d" % i for i, s in enumerate(sorted(self.secrets)) if s.encode() in dump]
