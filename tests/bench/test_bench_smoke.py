"""The benchmark is not a test; this only keeps it from rotting: `python -m bench --smoke` runs
every phase for well under a second each and must write a report of the promised shape."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODES = ("all-in-one", "separate")
SCENARIOS = ("GetBalance", "Authorize", "AuthorizeHotCard", "Redeem", "Capture", "AuthorizeReplay", "Checkout")
SCENARIO_NUMBERS = ("rps", "ratio_to_echo", "p50_ms", "p99_ms", "redis_round_trips_per_call")


def _positive_float(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    if not shutil.which("h2load") and os.geteuid() != 0:
        pytest.skip("h2load (nghttp2-client) not installed and not root to install it")
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), (out / "latest.md").read_text()


def test_smoke_run_reports_every_scenario_in_both_modes_with_positive_numbers(report):
    data, _ = report
    assert _positive_float(data["echo_rps"])
    assert set(data["scenarios"]) == {f"{m}/{s}" for m in MODES for s in SCENARIOS}
    assert set(data["status"]) == set(data["scenarios"]) == set(data["generator"])
    for key, scenario in data["scenarios"].items():
        assert set(scenario) == set(SCENARIO_NUMBERS), key
        status = data["status"][key]
        assert data["generator"][key] in ("h2load", "grpcio-futures"), key
        # An RPC still answering UNIMPLEMENTED is recorded as missing, never with numbers;
        # anything that exists must run cleanly (a failure here means the bench's requests rotted).
        assert status["status"] in ("ok", "missing"), f"{key}: {status['detail']}"
        if status["status"] == "ok":
            for name in SCENARIO_NUMBERS:
                assert _positive_float(scenario[name]), f"{key}.{name} = {scenario[name]!r}"
        else:
            assert all(scenario[name] is None for name in SCENARIO_NUMBERS), key
            assert "UNIMPLEMENTED" in status["detail"] or "needs" in status["detail"], key


def test_smoke_run_reports_scaling_and_tracing_cost(report):
    data, _ = report
    assert _positive_float(data["scaling_n2_over_n1"])
    assert set(data["tracing_cost"]) == {"off", "sampled_10pct", "full"}
    assert data["tracing_cost"]["off"] == 0.0
    for label in ("sampled_10pct", "full"):
        cost = data["tracing_cost"][label]
        assert isinstance(cost, float) and math.isfinite(cost) and cost < 1.0, (label, cost)


def test_smoke_run_writes_the_markdown_report_with_targets_and_memory(report):
    data, markdown = report
    assert "| scenario | generator | RPS | x echo |" in markdown
    assert "## Targets (issue 9)" in markdown
    memory = data["detail"]["memory"]
    assert memory["holds"] > 0 and _positive_float(float(memory["bytes_per_hold"]))
