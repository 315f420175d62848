"""The README's grpcurl commands work as written against `giftcard serve all --config
config/dev.yaml` on a fresh Redis: each answers OK, or exactly the error the README says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from grpc_status import rpc_status

from common.errors import error_info
from mesh.services import SPECS
from tests.support.grpcurl import examples, grpcurl
from tests.support.processes import start_server

ROOT = Path(__file__).resolve().parents[2]


def _outcome(example, address: str) -> tuple[str, str]:
    try:
        grpcurl(address, example.method, example.body, example.headers)
        return "OK", ""
    except grpc.RpcError as error:
        info = error_info(rpc_status.from_call(error)) if rpc_status.from_call(error) else None
        return error.code().name, info.reason if info else ""


async def test_every_readme_grpcurl_example_answers_as_documented(tmp_path, redis_url, redis_client):
    found = examples((ROOT / "README.md").read_text())
    documented = {e.method for e in found if e.method}
    public = {
        f"{spec.full_name}/{method.name}"
        for spec in SPECS.values() if spec.name != "gateway"
        for method in descriptor_pool.Default().FindServiceByName(spec.full_name).methods
    }
    assert public - documented == set()  # every public RPC has an example
    server = start_server(
        ROOT / "config" / "dev.yaml", ["all"], tmp_path / "server.log",
        env={"GIFTCARD_REDIS__URL": redis_url, "GIFTCARD_METRICS__ENABLED": "false"},
    )
    try:
        mismatches = []
        for example in found:
            if example.method is None:
                continue
            got = await asyncio.to_thread(_outcome, example, server.address)
            expected = (example.expect_code, example.expect_reason)
            if got != expected and not (example.expect_reason == "" and got[0] == expected[0]):
                mismatches.append(f"README.md:{example.line} {example.method}: expected {expected}, got {got}")
        assert mismatches == []
    finally:
        assert server.stop() == 0
