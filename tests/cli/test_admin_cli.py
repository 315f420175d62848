"""The operator commands run as a user runs them (`python -m mesh ...` subprocesses) against a
live `giftcard serve` process and Redis: output, exit codes (0 ok, 1 failure, 2 usage), and API
keys managed at runtime taking effect on the running server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from giftcard.authorization.v1 import authorization_pb2
from giftcard.balance.v1 import balance_pb2, balance_pb2_grpc
from giftcard.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from giftcard.settlement.v1 import settlement_pb2
from giftcard.type.v1 import card_pb2, money_pb2
from mesh.services import SPECS
from tests.support.mesh import DEMO_KEY, auth
from tests.support.processes import start_server, write_config

CACHE_SECONDS = 0.5
NEW_CARD = "7777001234567890"


def giftcard(config, *args: str, stdin: str | None = None, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIFTCARD_")}, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args, *(["--config", str(config)] if config else [])],
        input=stdin, capture_output=True, text=True, timeout=timeout, env=env,
    )


@pytest.fixture
def config(tmp_path, redis_url, redis_client):
    return write_config(
        tmp_path, redis_url, security={"dev_mode": True, "api_key_cache_seconds": CACHE_SECONDS}
    )


@pytest.fixture
def quiet_config(tmp_path, redis_url, redis_client):
    """As `config`, with the settlement scheduler off so only the CLI settles deferred captures."""
    return write_config(tmp_path, redis_url, settlement={"scheduler_enabled": False})


@pytest.fixture
def server(config, tmp_path):
    process = start_server(config, ["all"], tmp_path / "server.log")
    yield process
    assert process.stop() == 0


async def balance_with_key(server, key: str, number: str = NEW_CARD):
    async with grpc.aio.insecure_channel(server.address) as channel:
        return await balance_pb2_grpc.BalanceServiceStub(channel).GetBalance(
            balance_pb2.GetBalanceRequest(card=card_pb2.CardRef(card_number=number)),
            metadata=auth(key), timeout=5,
        )


async def code_with_key(server, key: str) -> grpc.StatusCode:
    try:
        await balance_with_key(server, key)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("args", [
    [], ["merchant"], ["merchant", "add"], ["merchant", "list"], ["key"], ["key", "create"], ["key", "rotate"],
    ["key", "revoke"], ["key", "list"], ["card"], ["card", "issue"], ["card", "balance"], ["holds"],
    ["holds", "list"], ["audit"], ["serve"], ["jobs"], ["jobs", "run"], ["jobs", "run", "settlement"],
])
def test_help_everywhere(args):
    result = giftcard(None, *args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: giftcard")


@pytest.mark.parametrize("args", [
    ["key"], ["key", "create"], ["card", "issue"], ["bogus"], ["key", "rotate", "m", "--grace", "soon"],
    ["merchant", "add", "m", "--provider", "nope"],
])
def test_usage_errors_exit_2(args):
    result = giftcard(None, *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_bad_amount_is_a_usage_error(config):
    result = giftcard(config, "card", "issue", NEW_CARD, "--amount", "1.234")
    assert result.returncode == 2
    assert "--amount" in result.stderr


async def test_runtime_merchant_and_key_lifecycle_on_a_live_server(config, server):
    added = giftcard(config, "merchant", "add", "shop2", "--currency", "usd")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "merchant shop2 added (provider native, currencies USD)"
    assert giftcard(config, "merchant", "add", "shop2").returncode == 1
    assert giftcard(config, "merchant", "add", "demo").returncode == 1  # configured already
    listed = giftcard(config, "merchant", "list")
    assert listed.stdout.splitlines() == ["demo\tconfig", "shop2\truntime"]

    issued = giftcard(config, "card", "issue", NEW_CARD, "--merchant", "shop2", "--amount", "25.00")
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.strip() == "issued 777700******7890 active 25.00 USD"
    assert NEW_CARD not in issued.stdout + issued.stderr

    created = giftcard(config, "key", "create", "shop2")
    assert created.returncode == 0, created.stderr
    [first_key] = created.stdout.split()  # the key alone on stdout, shown once
    assert first_key.startswith("gcm_") and len(first_key) > 40
    assert "cannot be shown again" in created.stderr

    # The running server accepts the new key at once and routes the runtime merchant's card.
    reply = await balance_with_key(server, first_key)
    assert (reply.masked_number, reply.balance.amount_minor) == ("777700******7890", 2500)
    # Merchant isolation still holds: shop2's key does not see demo's cards.
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await balance_with_key(server, first_key, "6035710000000001")
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND

    rotated = giftcard(config, "key", "rotate", "shop2", "--grace", "0")
    assert rotated.returncode == 0, rotated.stderr
    [second_key] = rotated.stdout.split()
    assert second_key != first_key
    assert "stops working now" in rotated.stderr
    await asyncio.sleep(CACHE_SECONDS + 0.3)
    assert await code_with_key(server, first_key) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_with_key(server, second_key) == grpc.StatusCode.OK

    keys = giftcard(config, "key", "list", "shop2").stdout.splitlines()
    assert [line.split("\t")[1] for line in keys] == ["revoked", "active"]
    assert first_key not in "\n".join(keys) and second_key not in "\n".join(keys)

    revoked = giftcard(config, "key", "revoke", "shop2")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked {keys[1].split(chr(9))[0]}"
    await asyncio.sleep(CACHE_SECONDS + 0.3)
    assert await code_with_key(server, second_key) == grpc.StatusCode.UNAUTHENTICATED
    assert giftcard(config, "key", "revoke", "shop2").returncode == 1  # nothing left to revoke


async def test_rotation_grace_keeps_the_old_key_working(config, server):
    """During the grace period both keys work; the old one is listed with its end. (That it stops
    exactly at the end is tested against the store in tests/integration/test_api_key_store.py.)"""
    first = giftcard(config, "key", "create", "demo").stdout.strip()
    rotated = giftcard(config, "key", "rotate", "demo", "--grace", "600")
    second = rotated.stdout.strip()
    assert rotated.returncode == 0, rotated.stderr
    assert "stops working in 600 s" in rotated.stderr
    assert "configured in the config file" in rotated.stderr  # the dev key is not touched
    # Authenticated (NOT_FOUND: the new card is not demo's), not UNAUTHENTICATED.
    assert await code_with_key(server, first) == grpc.StatusCode.NOT_FOUND
    assert await code_with_key(server, second) == grpc.StatusCode.NOT_FOUND
    states = [line.split("\t")[1] for line in giftcard(config, "key", "list", "demo").stdout.splitlines()]
    assert len(states) == 2 and states[0].startswith("expires in ") and states[1] == "active"


def test_keys_for_unknown_merchants_are_refused(config):
    result = giftcard(config, "key", "create", "nobody")
    assert result.returncode == 1
    assert "unknown merchant nobody" in result.stderr
    assert result.stdout == ""


async def test_card_issue_and_balance(config, server):
    issued = giftcard(config, "card", "issue", NEW_CARD, "--amount", "10.50", "--pin-stdin", stdin="4321\n")
    assert issued.returncode == 0, issued.stderr
    again = giftcard(config, "card", "issue", NEW_CARD, "--amount", "1")
    assert again.returncode == 1
    assert "CARD_ALREADY_EXISTS" in again.stderr

    balance = giftcard(config, "card", "balance", NEW_CARD, "--pin-stdin", stdin="4321\n")
    assert balance.returncode == 0, balance.stderr
    assert balance.stdout.strip() == (
        "777700******7890 active balance 10.50 USD held 0.00 USD available 10.50 USD"
    )
    unknown = giftcard(config, "card", "issue", NEW_CARD, "--merchant", "nobody", "--amount", "1")
    assert unknown.returncode == 1 and "unknown merchant nobody" in unknown.stderr
    wrong = giftcard(config, "card", "balance", NEW_CARD, "--pin-stdin", stdin="0000\n")
    assert wrong.returncode == 1
    assert "INVALID_PIN" in wrong.stderr
    missing = giftcard(config, "card", "balance", "7777000000000000")
    assert missing.returncode == 1
    assert "CARD_NOT_FOUND" in missing.stderr
    for result in (issued, again, balance, wrong, missing):
        assert NEW_CARD not in result.stdout + result.stderr
        assert "4321" not in result.stdout + result.stderr


async def test_holds_list_shows_open_holds_masked(config, server):
    expire = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    async with grpc.aio.insecure_channel(server.address) as channel:
        await gateway_pb2_grpc.ProviderGatewayServiceStub(channel).PlaceHold(
            gateway_pb2.PlaceHoldRequest(
                reference_id="cli-hold-1", card=card_pb2.CardRef(card_number="6035710000000001"),
                amount=money_pb2.Money(amount_minor=1234, currency_code="USD"), expire_time=expire,
            ),
            metadata=auth(), timeout=5,
        )
    listed = giftcard(config, "holds", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    merchant, hold_id, masked, open_amount, authorized, expires = line.split("\t")
    assert (merchant, masked, open_amount, authorized) == ("demo", "603571******0001", "open 12.34 USD", "of 12.34 USD")
    assert hold_id.startswith("h_")
    assert "1 open hold(s)" in listed.stderr
    as_json = giftcard(config, "holds", "list", "--json", "--merchant", "demo")
    assert '"open_minor": 1234' in as_json.stdout
    assert giftcard(config, "holds", "list", "--merchant", "other").stdout == ""


async def test_audit_passes_on_a_clean_ledger_and_fails_on_a_broken_one(config, server, redis_client):
    clean = giftcard(config, "audit", "--progress-every", "1")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip() == "audited 3 card(s): 0 violation(s)"
    assert "audited 1 cards" in clean.stderr  # progress

    [key] = [k async for k in redis_client.scan_iter(match="{gc:demo:*}:card")
             if (await redis_client.hget(k, "masked")) == b"603571******0001"]
    await redis_client.hset(key, "balance", 99999)
    broken = giftcard(config, "audit")
    assert broken.returncode == 1
    assert "VIOLATION demo 603571******0001: history sums to 10000, balance is 99999" in broken.stdout
    assert broken.stdout.strip().endswith("audited 3 card(s): 1 violation(s)")
    assert giftcard(config, "audit", "--merchant", "acme").stdout.strip() == "audited 0 card(s): 0 violation(s)"


def test_unreachable_redis_is_exit_1(tmp_path):
    config = write_config(tmp_path, "redis://127.0.0.1:1/0")
    result = giftcard(config, "audit")
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr


async def test_jobs_run_settlement_settles_deferred_captures(quiet_config, tmp_path):
    server = start_server(quiet_config, ["all"], tmp_path / "server.log")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            authorization, settlement = SPECS["authorization"].stub(channel), SPECS["settlement"].stub(channel)
            for index, number in enumerate(("7777000000000011", "7777000000000012", "7777000000000013")):
                assert giftcard(quiet_config, "card", "issue", number, "--amount", "50").returncode == 0
                hold = (await authorization.Authorize(authorization_pb2.AuthorizeRequest(
                    request_id=f"cli-auth-{index}", order_id=f"o-{index}", card=card_pb2.CardRef(card_number=number),
                    amount=money_pb2.Money(amount_minor=2000, currency_code="USD"),
                ), metadata=auth(), timeout=10)).hold
                await settlement.Capture(settlement_pb2.CaptureRequest(
                    request_id=f"cli-cap-{index}", hold_id=hold.hold_id, shipment_id="s-1", invoice_id="i-1",
                    amount=money_pb2.Money(amount_minor=1500, currency_code="USD"), defer_to_batch=True,
                ), metadata=auth(), timeout=10)

        target = ["--target", server.address]
        missing_key = giftcard(quiet_config, "jobs", "run", "settlement", *target)
        assert missing_key.returncode == 2 and "GIFTCARD_API_KEY" in missing_key.stderr
        wrong_key = giftcard(quiet_config, "jobs", "run", "settlement", *target, env={"GIFTCARD_API_KEY": "nope"})
        assert wrong_key.returncode == 1 and "UNAUTHENTICATED" in wrong_key.stderr

        ran = giftcard(quiet_config, "jobs", "run", "settlement", *target, "--max-items", "2", "--until-empty",
                       env={"GIFTCARD_API_KEY": DEMO_KEY})
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "settlement: 3 batch(es), settled 3, failed 0"
        assert ran.stderr.splitlines() == [
            "batch 1: 2 item(s), settled 2, failed 0",
            "batch 2: 1 item(s), settled 1, failed 0",
            "batch 3: 0 item(s), settled 0, failed 0",
        ]
        balance = giftcard(quiet_config, "card", "balance", "7777000000000011")
        # Not the final shipment: the rest of the hold (5.00) stays held.
        assert balance.stdout.strip() == "777700******0011 active balance 35.00 USD held 5.00 USD available 30.00 USD"
        assert giftcard(quiet_config, "audit").returncode == 0
    finally:
        assert server.stop() == 0


async def test_serve_without_service_arguments_serves_everything(config, tmp_path):
    server = start_server(config, [], tmp_path / "server.log")
    try:
        reply = await balance_with_key(server, DEMO_KEY, "6035710000000001")
        assert reply.balance.amount_minor == 10000
        assert "serving gateway, balance, authorization, fulfillment, settlement, refund" in server.logs()
    finally:
        assert server.stop() == 0
