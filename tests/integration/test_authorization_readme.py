"""services/authorization/README.md's grpcurl examples, run in order as written (JSON bodies sent
through a reflection client, as grpcurl does) against the dev config's demo merchant and cards."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from tests.support.grpcurl import grpcurl
from tests.support.mesh import start_mesh

README = Path(__file__).resolve().parents[2] / "services" / "authorization" / "README.md"
COMMAND = re.compile(r"-d '(.*?)' \\\n\s*127\.0\.0\.1:50051 (\S+)", re.DOTALL)


async def test_readme_examples_work_as_written(redis_client, redis_url):
    examples = [(json.loads(body), method) for body, method in COMMAND.findall(README.read_text())]
    assert len(examples) == 9
    mesh = await start_mesh("all-in-one", redis_url)
    address = f"127.0.0.1:{mesh.ports['authorization']}"
    try:
        headers = {"authorization": "Bearer dev-demo-key"}
        replies = [await asyncio.to_thread(grpcurl, address, method, body, headers) for body, method in examples]
    finally:
        await mesh.close()
    authorize, get_hold, part, rest, redeem, void, reverse, checkout_ok, checkout_declined = replies
    assert authorize["hold"]["holdId"] == "hld_8794fb9e98539ddf7e02c06d"
    assert authorize["approved"] == {"amountMinor": "2500", "currencyCode": "USD"}
    assert get_hold["hold"]["state"] == "HOLD_STATE_OPEN"
    assert part["hold"]["open"]["amountMinor"] == "2000"
    assert rest["released"]["amountMinor"] == "2000"
    assert rest["hold"]["state"] == "HOLD_STATE_RELEASED"
    assert redeem["transaction"]["transactionId"] == "txn_22ee98fdafda7cf2f4d74ce7"
    assert redeem["transaction"]["balanceAfter"]["amountMinor"] == "8850"
    assert redeem["redeemed"]["amountMinor"] == "1150"
    assert void["credited"]["amountMinor"] == "1150"
    assert void["redemption"]["state"] == "TRANSACTION_STATE_REVERSED"
    assert reverse == {"outcome": "REVERSAL_OUTCOME_NOTHING_TO_REVERSE"}
    assert checkout_ok["outcome"] == "CHECKOUT_OUTCOME_APPROVED"
    assert checkout_ok["totalApproved"]["amountMinor"] == "2500"
    assert checkout_declined["outcome"] == "CHECKOUT_OUTCOME_DECLINED"
    assert [t["state"] for t in checkout_declined["tenders"]] == ["TENDER_STATE_VOIDED", "TENDER_STATE_DECLINED"]
    assert checkout_declined["tenders"][1]["reason"] == "INSUFFICIENT_FUNDS"
