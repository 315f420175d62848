"""Credential checks the simulators share (constant-time comparisons; secrets never echoed)."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def basic_ok(request: Request, username: str, password: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return False
    try:
        user, sep, secret = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return bool(sep) and _same(user, username) and _same(secret, password)


def bearer_ok(request: Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and _same(presented.strip(), token)


def header_ok(request: Request, name: str, expected: str) -> bool:
    return _same(request.headers.get(name, ""), expected)
