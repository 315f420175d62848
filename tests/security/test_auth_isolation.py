"""Authentication and merchant isolation through the public gRPC API.

- Every RPC of every service refuses calls without a valid key (no key, wrong key, malformed
  header, a key in the wrong header, a revoked key, an expired key) with UNAUTHENTICATED.
- Merchant B (acme) using merchant A's (demo) card, hold, transaction, settlement-hold and
  activation ids, on every RPC that takes one, gets exactly the answer a random id of the same
  shape gets (code, reason, message): no existence leak; and A's state is untouched.
- Keys are compared in constant time (code inspection + behaviour) and stored only as SHA-256
  digests (a scan of every Redis key and value finds no clear key).
- Optional mTLS (`grpc.tls`): with certificates generated here, a client without a certificate,
  with one from another CA, or speaking plaintext is refused; one with a good certificate is served.
"""

from __future__ import annotations

import ast
import datetime
import inspect
import ipaddress
import re
import secrets
import textwrap
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import timestamp_pb2

import common.auth
from common.auth import ApiKeyAuthenticator, key_digest
from common.cards import mask_number
from giftcard.authorization.v1 import authorization_pb2 as apb
from giftcard.balance.v1 import balance_pb2 as bpb
from giftcard.fulfillment.v1 import fulfillment_pb2 as fpb
from giftcard.gateway.v1 import gateway_pb2 as gpb
from giftcard.refund.v1 import refund_pb2 as rpb
from giftcard.settlement.v1 import settlement_pb2 as spb
from giftcard.type.v1 import card_pb2, money_pb2
from mesh.services import SPECS
from tests.security.hostile import all_rpcs
from tests.security.support import failure, raw_method
from tests.support.mesh import ACME_KEY, DEMO_KEY, MODES, auth, start_mesh
from tests.support.secrets_scan import redis_dump

RPCS = all_rpcs()


def usd(minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=minor, currency_code="USD")


def card(number: str) -> card_pb2.CardRef:
    return card_pb2.CardRef(card_number=number)


def digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


async def outcome(call) -> tuple[str, str, str]:
    """(code, reason, message) of a refused call, or ("OK", "", the response as text)."""
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        code, reason, _ = failure(error)
        return code.name, reason, error.details() or ""
    return "OK", "", str(response)


# -- authentication ------------------------------------------------------------------------------


@pytest.fixture
async def keyed_mesh(redis_client, redis_url):
    # No cache of key-store answers: a revocation takes effect on the next call.
    mesh = await start_mesh("all-in-one", redis_url, security={"dev_mode": True, "api_key_cache_seconds": 0})
    yield mesh
    await mesh.close()


async def test_every_rpc_refuses_every_kind_of_bad_credential(keyed_mesh):
    store = keyed_mesh.runtimes[0].key_store
    revoked, revoked_record = await store.create("demo")
    await store.expire("demo", grace_seconds=0, key_id=revoked_record.key_id)
    expired, expired_record = await store.create("demo")
    await keyed_mesh.runtimes[0].redis.hset(
        "auth:key:{" + expired_record.digest + "}", "expires_ms", 1)
    bad_metadata = {
        "no metadata": (),
        "wrong key": (("authorization", "Bearer not-a-key"),),
        "key differing in the last character": (("authorization", f"Bearer {DEMO_KEY[:-1]}X"),),
        "scheme only": (("authorization", "Bearer"),),
        "empty bearer": (("authorization", "Bearer    "),),
        "basic scheme": (("authorization", f"Basic {DEMO_KEY}"),),
        "no scheme": (("authorization", DEMO_KEY),),
        "key in another header": (("x-api-key", DEMO_KEY),),
        "key digest instead of key": (("authorization", f"Bearer {key_digest(DEMO_KEY)}"),),
        "revoked key": (("authorization", f"Bearer {revoked}"),),
        "expired key": (("authorization", f"Bearer {expired}"),),
        "huge key": (("authorization", "Bearer " + "k" * 7000),),
    }
    sent = 0
    for rpc in RPCS:
        method = raw_method(keyed_mesh.channel(rpc.service), rpc.path)
        for label, metadata in bad_metadata.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(b"", metadata=metadata, timeout=5)
            code, reason, _ = failure(caught.value)
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"), (rpc.name, label)
            sent += 1
    assert sent == len(RPCS) * len(bad_metadata)
    # A live key of the store works, and stops the moment it is revoked.
    live, live_record = await store.create("demo")
    balance = keyed_mesh.stub("balance")
    reply = await balance.GetBalance(bpb.GetBalanceRequest(card=card("6035710000000001")), metadata=auth(live), timeout=5)
    assert reply.available.amount_minor == 10000
    await store.expire("demo", grace_seconds=0, key_id=live_record.key_id)
    assert (await outcome(balance.GetBalance(bpb.GetBalanceRequest(card=card("6035710000000001")),
                                             metadata=auth(live), timeout=5)))[0] == "UNAUTHENTICATED"


async def test_api_keys_are_stored_only_as_digests(keyed_mesh, redis_client):
    store = keyed_mesh.runtimes[0].key_store
    created = [await store.create(m) for m in ("demo", "acme", "demo")]
    dump = await redis_dump(redis_client)
    for key, record in created:
        assert key.encode() not in dump
        assert key[len("gcm_"):].encode() not in dump  # not even the random part
        assert record.digest.encode() in dump
    # ... and the config holds digests only (a clear key there is refused at start-up).
    with pytest.raises(ValueError, match="digests"):
        from common.config import MerchantSettings

        MerchantSettings(api_key_sha256=[DEMO_KEY])


def test_config_keys_are_compared_in_constant_time_by_code_inspection():
    source = textwrap.dedent(inspect.getsource(ApiKeyAuthenticator._config_merchant))
    tree = ast.parse(source)
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert "hmac.compare_digest" in calls
    # No early exit and no ordinary equality on digests: the loop visits every stored digest.
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Return, ast.Break)) and _inside_loop(tree, n)]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Compare) and any(isinstance(o, (ast.Eq, ast.NotEq)) for o in n.ops)]
    assert "compare_digest" in inspect.getsource(common.auth)
    # No dict lookup keyed by the presented digest on the config path either.
    assert "_merchant_by_digest.get(" not in inspect.getsource(ApiKeyAuthenticator)


def _inside_loop(tree, node) -> bool:
    for loop in (n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While))):
        if any(child is node for child in ast.walk(loop)):
            return True
    return False


def test_constant_time_path_visits_every_digest_whatever_matches():
    digests = {f"m{i}": [key_digest(f"key-{i}")] for i in range(50)}
    authenticator = ApiKeyAuthenticator(digests)
    compared = []
    real = common.auth.hmac.compare_digest

    def counting(a, b):
        compared.append(1)
        return real(a, b)

    common.auth.hmac.compare_digest = counting
    try:
        for presented in ("key-0", "key-49", "key-x", "key-"):  # first, last, no match, prefix
            compared.clear()
            try:
                authenticator.authenticate((("authorization", f"Bearer {presented}"),))
            except Exception:
                pass
            assert len(compared) == 50, presented
    finally:
        common.auth.hmac.compare_digest = real


async def test_the_merchant_header_only_counts_for_the_mesh_internal_identity(redis_client, redis_url):
    """`x-giftcard-merchant` names the merchant for the mesh's own background calls (with
    security.internal_token); with a merchant key, or a wrong token, it changes nothing."""
    token = "internal-" + secrets.token_hex(16)
    mesh = await start_mesh("all-in-one", redis_url, security={"dev_mode": True, "internal_token": token})
    balance = mesh.stub("balance")
    request = bpb.GetBalanceRequest(card=card("6035710000000001"))  # a demo card
    try:
        for metadata, expected in (
            ((("authorization", f"Bearer {ACME_KEY}"), ("x-giftcard-merchant", "demo")), ("NOT_FOUND", "CARD_NOT_FOUND")),
            ((("authorization", f"Bearer {token}x"), ("x-giftcard-merchant", "demo")), ("UNAUTHENTICATED", "UNAUTHENTICATED")),
            ((("authorization", "Bearer "), ("x-giftcard-merchant", "demo")), ("UNAUTHENTICATED", "UNAUTHENTICATED")),
            ((("x-giftcard-merchant", "demo"),), ("UNAUTHENTICATED", "UNAUTHENTICATED")),
            ((("authorization", f"Bearer {token}"),), ("UNAUTHENTICATED", "UNAUTHENTICATED")),
        ):
            result = await outcome(balance.GetBalance(request, metadata=metadata, timeout=5))
            assert result[:2] == expected, metadata
        ok = await balance.GetBalance(request, metadata=(("authorization", f"Bearer {token}"),
                                                         ("x-giftcard-merchant", "demo")), timeout=5)
        assert ok.available.amount_minor == 10000
    finally:
        await mesh.close()


# -- isolation --------------------------------------------------------------------------------------


@pytest.fixture(params=MODES)
async def two_merchants(request, redis_client, redis_url):
    mesh = await start_mesh(request.param, redis_url, settlement={"scheduler_enabled": False})
    yield mesh
    await mesh.close()


def look_alike(real: str) -> str:
    """A random id of the same shape (prefix kept, random tail of the same length)."""
    keep = max(len(real) - 12, 0)
    tail = "".join(secrets.choice("0123456789abcdef") for _ in range(len(real) - keep))
    return real[:keep] + tail


async def test_merchant_b_learns_nothing_about_merchant_a_ids(two_merchants):
    mesh = two_merchants
    ledger = mesh.runtimes[0].providers.native_ledger
    number = "7402" + digits(12)
    await ledger.create_card("demo", number, "USD", balance_minor=5000, active=True)
    inactive = "7403" + digits(12)
    await ledger.create_card("demo", inactive, "USD", balance_minor=0, active=False)
    authz = mesh.stub("authorization")
    # Merchant A's objects: a hold, a redemption (by client transaction id), an activation,
    # a vendor-level hold and transaction at the gateway.
    hold = (await authz.Authorize(apb.AuthorizeRequest(
        request_id="a-auth", order_id="a-order", card=card(number), amount=usd(1000)), metadata=auth(), timeout=10)).hold
    txn = (await authz.Redeem(apb.RedeemRequest(
        request_id="a-redeem", order_id="a-order", card=card(number), amount=usd(500),
        client_transaction_id="a-client-txn"), metadata=auth(), timeout=10)).transaction
    await mesh.stub("fulfillment").ActivatePhysicalCard(fpb.ActivatePhysicalCardRequest(
        request_id="a-act", order_id="a-ship", line_id="1", card=card(inactive), amount=usd(700)),
        metadata=auth(), timeout=10)
    gateway = mesh.stub("gateway")
    placed = await gateway.PlaceHold(gpb.PlaceHoldRequest(
        reference_id="a-gw-hold", card=card(number), amount=usd(300),
        expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)), metadata=auth(), timeout=10)
    before = await ledger.get_card("demo", number)
    assert (before.balance_minor, before.held_minor) == (4500, 1300)

    fake_number = number[:4] + digits(12)
    fake_inactive = inactive[:4] + digits(12)
    hold_id, txn_id, gw_hold = hold.hold_id, txn.transaction_id, placed.provider_hold_id
    gw_txn = placed.result.provider_transaction_id

    def probes(tag: str, n: str, dead: str, h: str, t: str, ct: str, order: str, ph: str, pt: str):
        """Every id-taking call, built from the ids given (A's real ones, or look-alikes)."""
        b, s, r, f = mesh.stub("balance"), mesh.stub("settlement"), mesh.stub("refund"), mesh.stub("fulfillment")
        return {
            "balance.GetBalance": lambda k: b.GetBalance(bpb.GetBalanceRequest(card=card(n)), metadata=auth(k), timeout=10),
            "balance.PlanTender": lambda k: b.PlanTender(bpb.PlanTenderRequest(order_total=usd(100), cards=[card(n)]),
                                                         metadata=auth(k), timeout=10),
            "gateway.GetBalance": lambda k: gateway.GetBalance(gpb.GetBalanceRequest(card=card(n)), metadata=auth(k), timeout=10),
            "gateway.CaptureHold": lambda k: gateway.CaptureHold(gpb.CaptureHoldRequest(
                reference_id=tag + "-cap", card=card(n), provider_hold_id=ph, amount=usd(100)), metadata=auth(k), timeout=10),
            "gateway.ReleaseHold": lambda k: gateway.ReleaseHold(gpb.ReleaseHoldRequest(
                reference_id=tag + "-rel", card=card(n), provider_hold_id=ph), metadata=auth(k), timeout=10),
            "gateway.Reverse": lambda k: gateway.Reverse(gpb.ReverseRequest(
                reference_id=tag + "-rev", card=card(n), provider_transaction_id=pt), metadata=auth(k), timeout=10),
            "gateway.Reverse(by reference)": lambda k: gateway.Reverse(gpb.ReverseRequest(
                reference_id=tag + "-rev2", card=card(n), original_reference_id="a-gw-hold"), metadata=auth(k), timeout=10),
            "gateway.Redeem": lambda k: gateway.Redeem(gpb.RedeemRequest(
                reference_id=tag + "-red", card=card(n), amount=usd(100)), metadata=auth(k), timeout=10),
            "gateway.CashOut": lambda k: gateway.CashOut(gpb.CashOutRequest(reference_id=tag + "-co", card=card(n)),
                                                         metadata=auth(k), timeout=10),
            "gateway.Activate": lambda k: gateway.Activate(gpb.ActivateRequest(
                reference_id=tag + "-act", card=card(dead), amount=usd(100)), metadata=auth(k), timeout=10),
            "authorization.Authorize": lambda k: authz.Authorize(apb.AuthorizeRequest(
                request_id=tag + "-auth", order_id="b", card=card(n), amount=usd(100)), metadata=auth(k), timeout=10),
            "authorization.Redeem": lambda k: authz.Redeem(apb.RedeemRequest(
                request_id=tag + "-redeem", order_id="b", card=card(n), amount=usd(100)), metadata=auth(k), timeout=10),
            "authorization.GetHold": lambda k: authz.GetHold(apb.GetHoldRequest(hold_id=h), metadata=auth(k), timeout=10),
            "authorization.ReverseAuthorization": lambda k: authz.ReverseAuthorization(apb.ReverseAuthorizationRequest(
                request_id=tag + "-rev-auth", hold_id=h), metadata=auth(k), timeout=10),
            "authorization.VoidRedemption": lambda k: authz.VoidRedemption(apb.VoidRedemptionRequest(
                request_id=tag + "-void", transaction_id=t), metadata=auth(k), timeout=10),
            "authorization.ReverseTransaction(id)": lambda k: authz.ReverseTransaction(apb.ReverseTransactionRequest(
                request_id=tag + "-revt", transaction_id=t), metadata=auth(k), timeout=10),
            "authorization.ReverseTransaction(client id)": lambda k: authz.ReverseTransaction(
                apb.ReverseTransactionRequest(request_id=tag + "-revc", client_transaction_id=ct), metadata=auth(k), timeout=10),
            "settlement.Capture": lambda k: s.Capture(spb.CaptureRequest(
                request_id=tag + "-capture", hold_id=h, amount=usd(100), shipment_id="s1", final_shipment=True),
                metadata=auth(k), timeout=10),
            "settlement.ScheduleReversal": lambda k: s.ScheduleReversal(spb.ScheduleReversalRequest(
                request_id=tag + "-sched", hold_id=h), metadata=auth(k), timeout=10),
            "refund.Refund": lambda k: r.Refund(rpb.RefundRequest(request_id=tag + "-refund", transaction_id=t, amount=usd(100)),
                                                metadata=auth(k), timeout=10),
            "refund.Reload": lambda k: r.Reload(rpb.ReloadRequest(request_id=tag + "-reload", card=card(n), amount=usd(100)),
                                                metadata=auth(k), timeout=10),
            "refund.CashOut": lambda k: r.CashOut(rpb.CashOutRequest(request_id=tag + "-cashout", card=card(n)),
                                                  metadata=auth(k), timeout=10),
            "fulfillment.GetActivation": lambda k: f.GetActivation(fpb.GetActivationRequest(order_id=order, line_id="1"),
                                                                   metadata=auth(k), timeout=10),
            "fulfillment.ActivatePhysicalCard": lambda k: f.ActivatePhysicalCard(fpb.ActivatePhysicalCardRequest(
                request_id=tag + "-act2", order_id=tag + "-ship", line_id="1", card=card(dead), amount=usd(100)),
                metadata=auth(k), timeout=10),
        }

    real = probes("breal", number, inactive, hold_id, txn_id, "a-client-txn", "a-ship", gw_hold, gw_txn)
    fake = probes("bfake", fake_number, fake_inactive, look_alike(hold_id), look_alike(txn_id), "z-client-txn", "z-ship",
                  look_alike(gw_hold) if gw_hold else "", look_alike(gw_txn))
    secrets_to_mask = ["breal", "bfake", number, fake_number, inactive, fake_inactive, hold_id, txn_id, gw_hold, gw_txn]
    # ActivatePhysicalCard's answer carries a fresh activation id and times: compare the outcome.
    compared = 0
    for name in real:
        on_real = await outcome(real[name](ACME_KEY))
        on_fake = await outcome(fake[name](ACME_KEY))
        if name == "balance.PlanTender":  # a plan answers OK, with a skip reason per card
            assert "CARD_NOT_FOUND" in on_real[2]
        elif name == "authorization.ReverseTransaction(client id)":
            assert on_real[0] == "OK" and "REVERSAL_OUTCOME_NOTHING_TO_REVERSE" in on_real[2]
        elif name == "gateway.Reverse(by reference)":
            # Reversal by reference of an operation this merchant never did: "nothing to
            # reverse" (a tombstone in B's own namespace, so a late original cannot land).
            assert on_real[0] == "OK" and "reversed: true" not in on_real[2]
        elif name in ("gateway.Activate", "fulfillment.ActivatePhysicalCard"):
            # Activating card stock creates the card in B's own namespace (B sells it, B owes
            # it): B's answer is the same for A's number and for a fresh one, and A's card stays
            # as it was (checked below).
            pass
        else:
            assert on_real[0] != "OK", f"{name}: merchant B acted on merchant A's object"
        assert _masked(on_real, secrets_to_mask) == _masked(on_fake, secrets_to_mask), name
        compared += 1
    assert compared == len(real) >= 24
    after = await ledger.get_card("demo", number)
    assert (after.balance_minor, after.held_minor) == (4500, 1300)
    untouched = await ledger.get_card("demo", inactive)
    assert untouched.balance_minor == 700  # activated by A with 7.00 above, nothing since
    still = await authz.GetHold(apb.GetHoldRequest(hold_id=hold_id), metadata=auth(), timeout=10)
    assert still.hold.hold_id == hold_id
    activation = await mesh.stub("fulfillment").GetActivation(
        fpb.GetActivationRequest(order_id="a-ship", line_id="1"), metadata=auth(), timeout=10)
    assert activation.activation.amount.amount_minor == 700


def _masked(result, values):
    code, reason, message = result
    for value in values:
        if value:
            message = message.replace(value, "<id>").replace(mask_number(value), "<masked>")
    # Ids the call itself just created (a tombstone transaction) differ from call to call.
    return code, reason, re.sub(r'provider_transaction_id: "[^"]*"', "provider_transaction_id: <new>", message)


# -- mTLS ------------------------------------------------------------------------------------------


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("giftcard test CA", ca_key, None, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, ca.subject, ca_key, ca=False, sans=[
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("pos-terminal-1", client_key, ca.subject, ca_key, ca=False)
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = _certificate("rogue CA", rogue_ca_key, None, None, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate("pos-terminal-1", rogue_key, rogue_ca.subject, rogue_ca_key, ca=False)
    files = {}
    for name, data in {"ca.pem": _pem(ca), "server.pem": _pem(server), "server.key": _key_pem(server_key)}.items():
        (tmp_path / name).write_bytes(data)
        files[name] = str(tmp_path / name)
    return files, _pem(ca), (_key_pem(client_key), _pem(client)), (_key_pem(rogue_key), _pem(rogue))


async def _balance_over(channel) -> str:
    stub = SPECS["balance"].stub(channel)
    try:
        reply = await stub.GetBalance(bpb.GetBalanceRequest(card=card("6035710000000001")), metadata=auth(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return f"OK {reply.available.amount_minor}"


async def test_mtls_refuses_clients_without_a_certificate_from_the_configured_ca(redis_client, redis_url, tmp_path):
    files, ca_pem, (client_key, client_cert), (rogue_key, rogue_cert) = _pki(tmp_path)
    mesh = await start_mesh("all-in-one", redis_url, grpc={
        "port": 0, "shutdown_grace_seconds": 5,
        "tls": {"cert_file": files["server.pem"], "key_file": files["server.key"],
                "client_ca_file": files["ca.pem"], "require_client_cert": True},
    })
    target = f"127.0.0.1:{mesh.ports['balance']}"
    channels = {
        "good certificate": grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca_pem, client_key, client_cert)),
        "no certificate": grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca_pem)),
        "certificate of another CA": grpc.aio.secure_channel(
            target, grpc.ssl_channel_credentials(ca_pem, rogue_key, rogue_cert)),
        "plaintext": grpc.aio.insecure_channel(target),
    }
    try:
        results = {label: await _balance_over(channel) for label, channel in channels.items()}
        assert results == {
            "good certificate": "OK 10000",
            "no certificate": "UNAVAILABLE",
            "certificate of another CA": "UNAVAILABLE",
            "plaintext": "UNAVAILABLE",
        }
        # mTLS does not replace the API key: a certified client without a key is still refused.
        stub = SPECS["balance"].stub(channels["good certificate"])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBalance(bpb.GetBalanceRequest(card=card("6035710000000001")), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        for channel in channels.values():
            await channel.close()
        await mesh.close()


async def test_tls_without_client_certificates_serves_any_tls_client(redis_client, redis_url, tmp_path):
    files, ca_pem, _, _ = _pki(tmp_path)
    mesh = await start_mesh("all-in-one", redis_url, grpc={
        "port": 0, "shutdown_grace_seconds": 5,
        "tls": {"cert_file": files["server.pem"], "key_file": files["server.key"]},
    })
    target = f"127.0.0.1:{mesh.ports['balance']}"
    tls = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca_pem))
    plain = grpc.aio.insecure_channel(target)
    try:
        assert await _balance_over(tls) == "OK 10000"
        assert await _balance_over(plain) == "UNAVAILABLE"
    finally:
        await tls.close()
        await plain.close()
        await mesh.close()


async def test_mtls_between_the_services_in_microservices_mode(redis_client, redis_url, tmp_path):
    """One server per service, every one requiring client certificates: the balance service
    reaches the gateway over mTLS with its own certificate, and outsiders without one are refused
    by the gateway too."""
    files, ca_pem, (client_key, client_cert), _ = _pki(tmp_path)
    mesh = await start_mesh("separate", redis_url, grpc={
        "port": 0, "shutdown_grace_seconds": 5,
        "tls": {"cert_file": files["server.pem"], "key_file": files["server.key"],
                "client_ca_file": files["ca.pem"], "require_client_cert": True},
    })
    good = grpc.aio.secure_channel(f"127.0.0.1:{mesh.ports['balance']}",
                                   grpc.ssl_channel_credentials(ca_pem, client_key, client_cert))
    no_cert = grpc.aio.secure_channel(f"127.0.0.1:{mesh.ports['gateway']}", grpc.ssl_channel_credentials(ca_pem))
    try:
        assert await _balance_over(good) == "OK 10000"  # balance -> gateway hop over mTLS
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await SPECS["gateway"].stub(no_cert).GetBalance(
                gpb.GetBalanceRequest(card=card("6035710000000001")), metadata=auth(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await good.close()
        await no_cert.close()
        await mesh.close()


def test_mtls_settings_require_a_client_ca():
    from common.config import GrpcTlsSettings

    with pytest.raises(ValueError, match="client_ca_file"):
        GrpcTlsSettings(cert_file="c", key_file="k", require_client_cert=True)
