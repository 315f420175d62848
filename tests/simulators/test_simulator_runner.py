"""The command-line runner, as a developer or `make run` starts it: a separate process on a port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serves_a_seeded_vendor_with_a_path_fault(tmp_path: Path):
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps([{"number": "612573981949778930", "balance": "12.00"}]))
    port = _free_port()
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.simulators", "ackroo", "--port", str(port), "--cards", str(cards),
         "--fault", "/transaction/gift/debit:http-503"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(base + "/_sim/health", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.1)
        headers = {"Authorization": "Bearer ackroo-sim-token"}
        card = {"device_id": "d", "cardnumber": "612573981949778930"}
        assert httpx.post(base + "/device/card", json=card, headers=headers).json()["gc_balance"] == "12.00"
        debit = httpx.post(base + "/transaction/gift/debit", json={**card, "amount": "1", "clerk_id": "c"},
                           headers=headers)
        assert debit.status_code == 503
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_cli_rejects_an_unknown_fault():
    result = subprocess.run([sys.executable, "-m", "gateway.simulators", "radial", "--fault", "explode"],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unknown fault" in result.stderr
