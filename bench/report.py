"""bench/results/latest.json (the shape issue 9 asks for, plus detail) and latest.md, and the
table printed at the end of a run."""

from __future__ import annotations

import json
import os
import math
from pathlib import Path

from bench.scenarios import SCENARIOS

MODES = ("all-in-one", "separate")


def _f(value, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _ratio(value, base) -> float | None:
    return value / base if value and base else None


SCENARIO_KEYS = ("rps", "ratio_to_echo", "p50_ms", "p99_ms", "redis_round_trips_per_call")


def public_json(results: dict) -> dict:
    """Exactly the issue's shape first (each scenario has only the five numbers; null when the
    scenario did not run), then what else was measured: `status` (ok / missing / failed, with the
    reason), `generator` per scenario, and everything else under `detail`."""
    scenarios = {key: {name: data.get(name) for name in SCENARIO_KEYS} for key, data in results["scenarios"].items()}
    return {
        "echo_rps": results["echo_rps"],
        "scenarios": scenarios,
        "scaling_n2_over_n1": results.get("scaling_n2_over_n1"),
        "tracing_cost": results.get("tracing_cost", {"off": 0.0, "sampled_10pct": None, "full": None}),
        "status": {key: {"status": data["status"], "detail": data.get("detail", "")}
                   for key, data in results["scenarios"].items()},
        "generator": {key: data["generator"] for key, data in results["scenarios"].items()},
        "detail": {k: v for k, v in results.items() if k not in ("echo_rps", "scaling_n2_over_n1", "tracing_cost")},
    }


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every target of issue 9."""
    s = results["scenarios"]
    rows = []

    def scenario_target(key: str, label: str, field: str, limit: float, at_least: bool, fmt: str) -> None:
        data = s.get(key)
        if not data or data.get("status") != "ok":
            status = data.get("status", "not run") if data else "not run"
            rows.append((label, status, f"NOT MEASURED ({status})"))
            return
        value = data.get(field)
        if value is None:
            rows.append((label, "-", "NOT MEASURED"))
            return
        ok = value >= limit if at_least else value <= limit
        rows.append((label, format(value, fmt), "met" if ok else "MISSED"))

    scenario_target("all-in-one/GetBalance", "GetBalance all-in-one >= 0.60 x echo RPS", "ratio_to_echo", 0.60, True, ".2f")
    scenario_target("all-in-one/Authorize", "Authorize all-in-one >= 0.45 x echo RPS", "ratio_to_echo", 0.45, True, ".2f")
    scenario_target("all-in-one/Authorize", "Authorize all-in-one p99 <= 15 ms at 32 streams", "p99_ms", 15.0, False, ".1f")
    scenario_target("all-in-one/Authorize", "Authorize <= 2 Redis round trips per call", "redis_round_trips_per_call", 2.0, False, ".2f")
    scenario_target("separate/Authorize", "Authorize separate >= 0.30 x echo RPS", "ratio_to_echo", 0.30, True, ".2f")
    scaling = results.get("scaling_n2_over_n1")
    scen = results.get("scaling", {}).get("scenario", "?")
    rows.append((f"N=2 workers >= 1.6 x N=1 ({scen})", _f(scaling),
                 "NOT MEASURED" if scaling is None else ("met" if scaling >= 1.6 else "MISSED")))
    cost = results.get("tracing_cost", {}).get("sampled_10pct")
    scen = results.get("tracing", {}).get("scenario", "?")
    rows.append((f"10% trace sampling costs <= 10% ({scen})", _f(cost * 100 if cost is not None else None, 1, "%"),
                 "NOT MEASURED" if cost is None else ("met" if cost <= 0.10 else "MISSED")))
    memory = results.get("memory", {})
    per_hold = memory.get("bytes_per_hold")
    rows.append((f"Redis memory per open hold <= 1 KiB ({memory.get('holds', '?')} holds)", _f(per_hold, 0, " B"),
                 "NOT MEASURED" if per_hold is None else ("met" if per_hold <= 1024 else "MISSED")))
    rss = results.get("rss_over_time")
    if rss and "growth" in rss:
        rows.append((f"server RSS flat within 10% over {rss['seconds']:g} s ({rss['scenario']})",
                     f"{rss['first_mb']} -> {rss['last_mb']} MB ({rss['growth'] * 100:+.1f}%, max {rss['max_growth'] * 100:+.1f}%)",
                     "met" if abs(rss["growth"]) <= 0.10 and rss["max_growth"] <= 0.10 else "MISSED"))
    else:
        rows.append(("server RSS flat within 10% over 60 s", "-", "NOT MEASURED (full run only)"))
    return rows


def table(results: dict) -> str:
    echo = results["echo_rps"]
    echo_p50, echo_p99 = results.get("echo_p50_ms"), results.get("echo_p99_ms")
    lines = [
        f"echo baseline (bare grpc.aio, h2load, {results['echo']['message_bytes']}-byte message): "
        f"{echo:.0f} rps, p50 {_f(echo_p50)} ms, p99 {_f(echo_p99)} ms",
        "",
        "| scenario | generator | RPS | x echo | p50 ms | p50 x echo | p99 ms | p99 x echo | Redis round trips/call | "
        "Redis cmds/call (incl. in scripts) | server CPU ms/call | Redis CPU ms/call | RSS MB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in MODES:
        for scenario in SCENARIOS:
            key = f"{mode}/{scenario}"
            data = results["scenarios"].get(key)
            if data is None:
                continue
            if data["status"] != "ok":
                lines.append(f"| {key} | {data['generator']} | {data['status'].upper()}: {data.get('detail', '')[:90]} "
                             "| | | | | | | | | | | |")
                continue
            errors = ", ".join(f"{k} {v}" for k, v in data.get("errors", {}).items()) or "0"
            lines.append(
                f"| {key} | {data['generator']} | {data['rps']:.0f} | {_f(data['ratio_to_echo'])} | "
                f"{_f(data['p50_ms'], 1)} | {_f(_ratio(data['p50_ms'], echo_p50))} | {_f(data['p99_ms'], 1)} | "
                f"{_f(_ratio(data['p99_ms'], echo_p99))} | {_f(data.get('redis_round_trips_per_call'))} | "
                f"{_f(data.get('redis_commands_per_call'), 1)} | {_f(data.get('server_cpu_ms_per_call'))} | "
                f"{_f(data.get('redis_cpu_ms_per_call'), 3)} | {'+'.join(str(r) for r in data.get('rss_mb', []))} | {errors} |"
            )
    return "\n".join(lines)


def markdown(results: dict) -> str:
    out = [
        f"# Benchmark report ({results['profile']} run, {results['started_at']} .. {results.get('finished_at', '?')})",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in results['machine']['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in results['machine'].get('loadavg_end', ()))}. "
        f"Load: {results['load']['streams']} calls in flight over {results['load']['connections']} HTTP/2 "
        f"connections, {results['load']['warmup_s']:g} s warm-up + {results['load']['duration_s']:g} s measured per scenario. "
        "Generators: `h2load` = nghttp2's h2load (one repeated body; gRPC status of that body checked before "
        "and after); `grpcio-futures` = bench/loadgen.py (grpcio sync channel, `.future()` on pre-built "
        "bodies, fresh request_id per call).",
        "",
        table(results),
        "",
        "Ratios: RPS / echo RPS (higher is better); latency / echo latency (lower is better). "
        "Round trips: read events Redis processed during a call (INFO total_reads_processed), median of a few "
        "sequential calls; a pipeline of several commands is one round trip (the commands each call sends "
        "are listed below, from MONITOR). Redis cmds/call: INFO total_commands_processed delta per call, which also "
        "counts every redis.call() inside a Lua script. CPU: utime+stime of the server process(es) per call.",
        "",
        "## Echo baseline",
        "",
    ]
    for key, data in results["echo"].items():
        if isinstance(data, dict):
            out.append(f"- {key}: {_f(data.get('rps'), 0)} rps, p50 {_f(data.get('p50_ms'))} ms, "
                       f"p99 {_f(data.get('p99_ms'))} ms, server CPU {_f(data.get('server_cpu_ms_per_call'), 3)} ms/call "
                       f"({data.get('generator')})")
    out.append(f"- baseline used for the ratios: the highest h2load figure, {results['echo_rps']:.0f} rps")
    runs = [v["rps"] for k, v in results["echo"].items() if k.startswith("h2load_") and isinstance(v, dict) and v.get("rps")]
    if len(runs) > 1:
        out.append(f"- noise: the same echo run drifted {100 * (max(runs) - min(runs)) / max(runs):.0f}% between the "
                   "start and the end of this run (the machine is shared)")
    out += ["", "## Targets (issue 9)", "", "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in targets(results)]
    out += ["", "## Redis commands per call (client side, from MONITOR)", ""]
    for key, data in results["scenarios"].items():
        if data.get("redis_client_commands"):
            sent = data.get("redis_client_commands_per_call")
            trips = data.get("redis_round_trips_per_call")
            summary = f" ({_f(sent)} commands in {_f(trips)} round trips)" if sent is not None else ""
            out.append(f"- {key}{summary}: " + ", ".join(f"{k} {v}" for k, v in data["redis_client_commands"].items()))
    scaling = results.get("scaling", {})
    if scaling:
        runs = [(scaling, results.get("scaling_n2_over_n1"))]
        if scaling.get("also"):
            runs.append((scaling["also"], scaling["also"].get("n2_over_n1")))
        for run, ratio in runs:
            out += ["", f"## Scaling ({run['scenario']}, all-in-one, SO_REUSEPORT, "
                        f"{run.get('connections', '?')} connections)", ""]
            for workers, data in run["workers"].items():
                share = data.get("worker_cpu_share")
                busy = data.get("machine_busy")
                out.append(f"- N={workers}: {_f(data.get('rps'), 0)} rps ({data.get('generator')}), p99 {_f(data.get('p99_ms'))} ms; "
                           f"CPU ms/call: server {_f(data.get('server_cpu_ms_per_call'))}, Redis "
                           f"{_f(data.get('redis_cpu_ms_per_call'))}, load generator {_f(data.get('generator_cpu_ms_per_call'))}, "
                           f"whole machine {_f(data.get('machine_cpu_ms_per_call'))}; machine busy "
                           f"{_f(busy * 100 if busy is not None else None, 0, '%')}"
                           + (f", CPU share per worker {share}" if share else "") + f" ({data['status']})")
            out.append(f"- N=2 / N=1 = {_f(ratio)}")
            if any(len(v) > 1 for v in run.get("all_rps", {}).values()):
                out.append("- every run (rps, interleaved N=1, N=2, N=1, N=2; the better of each counts): " + "; ".join(
                    f"N={n} {', '.join(_f(x, 0) for x in values)}" for n, values in run["all_rps"].items()))
            ceiling = run.get("ceiling_over_n1")
            if ceiling is not None:
                out.append(f"- ceiling on this machine: {_f(ceiling)} x N=1 = {os.cpu_count()} CPUs / "
                           f"{_f(run.get('own_cpu_ms_per_call_n1'))} ms (server + Redis + load generator CPU per call "
                           "at N=1) / N=1 rps: what any number of workers could reach with every CPU of the machine "
                           "spent on this bench (the kernel's loopback work and other tenants only lower it)")
    tracing = results.get("tracing", {})
    if tracing:
        out += ["", f"## Tracing cost ({tracing['scenario']}, all-in-one)", "", f"Exporter: {tracing['exporter']}.", ""]
        if any(len(v) > 1 for v in tracing.get("all_rps", {}).values()):
            out += ["Each setting ran twice, interleaved (off, 10%, full, off, 10%, full); the better run of each "
                    "counts. All runs (rps): " + "; ".join(
                        f"{label} {', '.join(_f(x, 0) for x in values)}" for label, values in tracing["all_rps"].items()),
                    ""]
        for label, data in tracing["runs"].items():
            cost = results["tracing_cost"].get(label)
            out.append(f"- {label}: {_f(data.get('rps'), 0)} rps, p99 {_f(data.get('p99_ms'))} ms, "
                       f"CPU {_f(data.get('server_cpu_ms_per_call'))} ms/call, throughput cost "
                       f"{_f(cost * 100 if cost is not None else None, 1, '%')}")
    memory = results.get("memory")
    if memory:
        out += ["", "## Memory", "",
                f"- Redis: {memory['holds']} open holds on {memory['cards']} cards: used_memory +{memory['used_memory_delta_bytes']} B "
                f"= {memory['bytes_per_hold']:.0f} B per hold ({_f(memory.get('dataset_bytes_per_hold'), 0)} B of it "
                f"dataset, i.e. without allocator/buffer overhead) ({memory['method']})."]
        for key, data in results["scenarios"].items():
            if data.get("redis_bytes_per_call") is not None and data["status"] == "ok":
                out.append(f"- {key}: Redis used_memory_dataset grows {data['redis_bytes_per_call']:.0f} B per call "
                           "(everything the call leaves: idempotency record, mesh records, ledger entries)")
    rss = results.get("rss_over_time")
    if rss:
        out.append(f"- Server RSS over {rss['seconds']:g} s of {rss['scenario']} (MB, one sample per second): {rss.get('samples_mb')}")
    if results.get("errors"):
        out += ["", "## Harness errors (phases that did not finish)", ""]
        out += [f"- {name}:\n\n```\n{text}\n```" for name, text in results["errors"].items()]
    return "\n".join(out) + "\n"


def write(results: dict, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "latest.json"
    md_path = directory / "latest.md"
    json_path.write_text(json.dumps(public_json(results), indent=2, default=float) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path
