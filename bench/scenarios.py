"""One scenario = one RPC driven at a fixed concurrency for a fixed time, with the server's CPU,
RSS, Redis commands and Redis memory measured over exactly that window.

Two generators: h2load for a repeated body (the echo baseline, GetBalance, AuthorizeReplay) and
`bench.loadgen` (grpcio futures on raw bodies) when every call needs a fresh request_id."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import payloads
from bench.h2load import check_status, run_h2load
from bench.loadgen import read_records, write_records
from bench.processes import (
    ROOT, Monitor, RedisServer, cpu_seconds, harness_cpu_seconds, python, rss_bytes, script_names, with_parent,
)

METADATA = [("authorization", "Bearer dev-demo-key")]
AUTHZ = "/giftcard.authorization.v1.AuthorizationService"
METHODS = {
    "GetBalance": ("balance", "/giftcard.balance.v1.BalanceService/GetBalance"),
    "Authorize": ("authorization", f"{AUTHZ}/Authorize"),
    "AuthorizeHotCard": ("authorization", f"{AUTHZ}/Authorize"),
    "Redeem": ("authorization", f"{AUTHZ}/Redeem"),
    "AuthorizeReplay": ("authorization", f"{AUTHZ}/Authorize"),
    "Capture": ("settlement", "/giftcard.settlement.v1.SettlementService/Capture"),
    "Checkout": ("authorization", f"{AUTHZ}/Checkout"),
}
SCENARIOS = tuple(METHODS)
H2LOAD = "h2load"
LOADGEN = "grpcio-futures"


@dataclass
class Load:
    """How hard and how long: `streams` calls in flight over `connections` HTTP/2 connections."""

    warmup: float
    duration: float
    streams: int = 32
    connections: int = 8
    loadgen_processes: int = 2
    monitor_calls: int = 50
    # Run the generator in threads of the harness (smoke: no process start-up per scenario).
    loadgen_in_process: bool = False
    # Stretch a loadgen window until this many calls succeeded (at most max_stretch seconds more).
    min_calls: int = 1
    max_stretch: float = 30.0


@dataclass
class Work:
    """What to send. h2load: `body` every time. loadgen: splice(id_fields, uid, variant)."""

    generator: str
    method: str
    body: bytes | None = None
    variants: list[bytes] = field(default_factory=list)
    id_fields: list[int] = field(default_factory=lambda: [1, 2])
    once: bool = False  # each variant used once (Capture: one capture per hold)
    collect: bool = False  # keep the OK responses (Authorize: the holds for Capture)


@dataclass
class Outcome:
    status: str  # ok | missing | failed
    generator: str
    detail: str = ""
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    redis_round_trips_per_call: float | None = None
    redis_client_commands: dict[str, float] = field(default_factory=dict)
    # Commands sent by clients (MONITOR); more than the round trips when some are pipelined.
    redis_client_commands_per_call: float | None = None
    redis_round_trips_spread: list[int] = field(default_factory=list)  # [min, max] over the monitored calls
    redis_commands_per_call: float | None = None  # INFO commandstats, includes script-internal calls
    evalsha_per_call: float | None = None
    server_cpu_ms_per_call: float | None = None
    redis_cpu_ms_per_call: float | None = None
    machine_cpu_ms_per_call: float | None = None  # every process on the machine, per call
    generator_cpu_ms_per_call: float | None = None  # load generator + harness, per call
    machine_busy: float | None = None  # share of all CPUs busy during the measured window
    redis_bytes_per_call: float | None = None
    rss_mb: list[float] = field(default_factory=list)
    rss_samples_mb: list[float] = field(default_factory=list)
    worker_cpu_share: list[float] = field(default_factory=list)
    collected: list[bytes] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "collected"}
        return data


class _ThreadChild:
    """bench.loadgen in a thread, behind the few Popen members the harness uses."""

    def __init__(self, spec: dict) -> None:
        import io

        from bench import loadgen

        self._start = threading.Event()
        self._start_at = 0.0
        self._ready = threading.Event()
        self.returncode: int | None = None
        self._out = ""

        def wait_for_start() -> float:
            self._ready.set()
            self._start.wait()
            return self._start_at

        def target() -> None:
            try:
                self._out = json.dumps(loadgen.run(spec, wait_for_start))
                self.returncode = 0
            except Exception as error:  # surfaced as a failed scenario
                import traceback

                self._out = repr(error) + traceback.format_exc()[-500:]
                self.returncode = 1
                self._ready.set()

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        this = self

        class _Out:
            def readline(self) -> str:
                this._ready.wait(60)
                return "READY\n" if this.returncode is None else this._out

        class _In:
            def write(self, text: str) -> None:
                this._start_at = float(text)
                this._start.set()

            def flush(self) -> None:
                pass

        self.stdout, self.stdin = _Out(), _In()
        del io

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        self._thread.join(timeout)
        return self._out, None

    def kill(self) -> None:
        self._start.set()


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Snapshot:
    def __init__(self, pids: list[int], redis: RedisServer) -> None:
        self.at = time.monotonic()
        self.cpu = [cpu_seconds(pid) for pid in pids]
        self.redis_cpu = cpu_seconds(redis.pid)
        self.redis = redis.stats()
        self.machine_busy = machine_busy_seconds()
        self.harness_cpu = harness_cpu_seconds({*pids, redis.pid})


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (all CPUs, /proc/stat: everything but idle
    and iowait): server, load generator, Redis, the kernel's loopback work, and other tenants."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Runner:
    def __init__(self, workdir: Path, redis: RedisServer, h2load: str, load: Load, log) -> None:
        self.workdir = workdir
        self.redis = redis
        self.h2load = h2load
        self.load = load
        self.log = log
        self._seq = 0

    def _uid(self, label: str) -> str:
        self._seq += 1
        return f"b{int(time.time()) % 100000}-{label}-{self._seq}"

    # -- the one entry point ------------------------------------------------------------------

    def run(self, name: str, target: str, pids: list[int], work: Work, *, sample_rss: bool = False,
            duration: float | None = None, monitor: bool = True) -> Outcome:
        probe_body = work.body if work.generator == H2LOAD else payloads.splice(
            work.id_fields, self._uid("probe"), work.variants[0])
        code, details, _ = check_status(target, work.method, probe_body, METADATA)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return Outcome("missing", work.generator, f"UNIMPLEMENTED: {details}")
        if code != grpc.StatusCode.OK:
            return Outcome("failed", work.generator, f"probe answered {code.name}: {details}")
        variants = work.variants[1:] if work.once else work.variants
        monitor_variants: list[bytes] = []
        if work.once and monitor:
            keep = min(self.load.monitor_calls, len(variants) // 4)
            variants, monitor_variants = variants[: len(variants) - keep], variants[len(variants) - keep:]
        if work.generator == LOADGEN and not variants:
            return Outcome("failed", work.generator, "no request bodies left to send")

        duration = duration or self.load.duration
        if work.generator == H2LOAD:
            outcome = self._h2load(name, target, pids, work, duration, sample_rss)
            code, details, _ = check_status(target, work.method, work.body, METADATA)
            if code != grpc.StatusCode.OK:
                outcome.status = "failed"
                outcome.detail = f"after the run this body answers {code.name}: {details} (h2load counts HTTP 200)"
        else:
            outcome = self._loadgen(name, target, pids, work, variants, duration, sample_rss)
        if outcome.status == "ok" and monitor:
            self._monitor(outcome, target, work, monitor_variants)
        return outcome

    # -- generators ---------------------------------------------------------------------------

    def _measure_window(self, pids, duration, sample_rss, outcome: Outcome) -> tuple[Snapshot, Snapshot]:
        before = Snapshot(pids, self.redis)
        end = before.at + duration
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(1.0, left))
            if sample_rss:
                outcome.rss_samples_mb.append(round(sum(rss_bytes(pid) for pid in pids) / 2**20, 1))
        return before, Snapshot(pids, self.redis)

    def _h2load(self, name, target, pids, work: Work, duration, sample_rss) -> Outcome:
        outcome = Outcome("ok", H2LOAD)
        result: dict = {}

        def drive() -> None:
            try:
                result["run"] = run_h2load(
                    self.h2load, target, work.method, work.body, METADATA, workdir=self.workdir,
                    duration=duration, warmup=self.load.warmup, connections=self.load.connections,
                    streams_per_connection=max(1, self.load.streams // self.load.connections), name=name,
                )
            except Exception as error:  # reported below
                result["error"] = error

        thread = threading.Thread(target=drive)
        thread.start()
        # h2load connects, warms up for `warmup`, then measures for `duration`.
        time.sleep(self.load.warmup + 0.3)
        before, after = self._measure_window(pids, duration, sample_rss, outcome)
        thread.join()
        if "error" in result:
            return Outcome("failed", H2LOAD, str(result["error"])[:500])
        run = result["run"]
        if not run.latencies:
            return Outcome("failed", H2LOAD, f"no call completed in the {duration:g} s window")
        outcome.calls = run.requests
        if run.failed_http:
            outcome.errors["HTTP_FAILED"] = run.failed_http
        outcome.rps = run.rps
        outcome.p50_ms = percentile(run.latencies, 0.50) * 1000
        outcome.p99_ms = percentile(run.latencies, 0.99) * 1000
        self._derive(outcome, before, after, calls=run.rps * (after.at - before.at), ok_calls=run.rps * (after.at - before.at))
        return outcome

    def _loadgen(self, name, target, pids, work: Work, variants, duration, sample_rss) -> Outcome:
        load = self.load
        procs = max(1, min(load.loadgen_processes, load.connections))
        variants_file = self.workdir / f"{name}.variants"
        write_records(variants_file, variants)
        children = []
        for index in range(procs):
            spec = {
                "target": target, "method": work.method, "metadata": METADATA,
                "warmup": load.warmup, "duration": duration,
                "min_calls": max(1, load.min_calls // procs), "max_stretch": load.max_stretch,
                "window": max(1, load.streams // procs), "connections": max(1, load.connections // procs),
                "id_prefix": f"{self._uid(name)}-p{index}-", "id_fields": work.id_fields,
                "variants_file": str(variants_file), "variants_once": work.once,
                # Spread the cards over the processes; in `once` mode each takes its own share.
                "variants_offset": index, "variants_stride": procs,
                "collect_file": str(self.workdir / f"{name}.p{index}.collected") if work.collect else None,
                "latency_file": str(self.workdir / f"{name}.p{index}.latencies"),
                "timeout": 10,
            }
            spec_file = self.workdir / f"{name}.p{index}.json"
            spec_file.write_text(json.dumps(spec))
            if load.loadgen_in_process:
                children.append((spec, _ThreadChild(spec)))
                continue
            children.append((spec, subprocess.Popen(
                with_parent([python(), "-m", "bench.loadgen", str(spec_file)]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )))
        for _, child in children:
            line = child.stdout.readline()
            if line.strip() != "READY":
                for _, other in children:
                    other.kill()
                return Outcome("failed", LOADGEN, f"load generator did not start: {line!r}")
        start_at = time.time() + 0.2
        for _, child in children:
            child.stdin.write(f"{start_at}\n")
            child.stdin.flush()
        time.sleep(max(0.0, start_at + load.warmup - time.time()))
        outcome = Outcome("ok", LOADGEN)
        before, after = self._measure_window(pids, duration, sample_rss, outcome)
        reports = []
        for spec, child in children:
            out, _ = child.communicate(timeout=60)
            if child.returncode != 0:
                return Outcome("failed", LOADGEN, f"load generator exited {child.returncode}: {str(out)[-300:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        latencies = array("d")
        for spec, _ in children:
            with open(spec["latency_file"], "rb") as handle:
                latencies.frombytes(handle.read())
            if spec["collect_file"]:
                outcome.collected.extend(read_records(spec["collect_file"]))
        measured_ok = sum(r["measured_ok"] for r in reports)
        measured_calls = sum(r["measured_calls"] for r in reports)
        seconds = max(r["measured_seconds"] for r in reports)
        for report in reports:
            for code, count in report["errors"].items():
                outcome.errors[code] = outcome.errors.get(code, 0) + count
            outcome.error_samples.extend(report["error_samples"])
        outcome.error_samples = outcome.error_samples[:5]
        outcome.calls = measured_calls
        if measured_ok == 0:
            outcome.status = "failed"
            outcome.detail = f"no successful calls; errors {outcome.errors}: {outcome.error_samples[:2]}"
            return outcome
        outcome.rps = measured_ok / seconds
        outcome.p50_ms = percentile(latencies, 0.50) * 1000
        outcome.p99_ms = percentile(latencies, 0.99) * 1000
        self._derive(outcome, before, after, calls=measured_calls, ok_calls=measured_ok)
        return outcome

    def _derive(self, outcome: Outcome, before: Snapshot, after: Snapshot, calls: float, ok_calls: float) -> None:
        calls = max(calls, 1.0)
        cpu = [b - a for a, b in zip(before.cpu, after.cpu)]
        outcome.server_cpu_ms_per_call = sum(cpu) / calls * 1000
        if len(cpu) > 1 and sum(cpu) > 0:
            outcome.worker_cpu_share = [round(c / sum(cpu), 3) for c in cpu]
        outcome.redis_cpu_ms_per_call = (after.redis_cpu - before.redis_cpu) / calls * 1000
        # What one call costs the whole machine, and how busy the machine was: with every CPU
        # busy, more server workers cannot add throughput (scaling, bench/README.md).
        machine = after.machine_busy - before.machine_busy
        outcome.machine_cpu_ms_per_call = machine / calls * 1000
        outcome.generator_cpu_ms_per_call = (after.harness_cpu - before.harness_cpu) / calls * 1000
        outcome.machine_busy = machine / max((after.at - before.at) * (os.cpu_count() or 1), 1e-9)
        # The harness's own INFO calls are in the delta too: two per snapshot, negligible.
        outcome.redis_commands_per_call = (after.redis["total_commands"] - before.redis["total_commands"]) / calls
        evalsha = sum(after.redis["commands"].get(c, 0) - before.redis["commands"].get(c, 0) for c in ("evalsha", "eval"))
        outcome.evalsha_per_call = evalsha / calls
        outcome.redis_bytes_per_call = (
            after.redis["used_memory_dataset"] - before.redis["used_memory_dataset"]) / max(ok_calls, 1.0)

    def rss(self, pids: list[int]) -> list[float]:
        return [round(rss_bytes(pid) / 2**20, 1) for pid in pids]

    # -- round trips --------------------------------------------------------------------------

    def _monitor(self, outcome: Outcome, target: str, work: Work, once_variants: list[bytes]) -> None:
        """A few sequential calls under MONITOR, one at a time, each between two harness markers
        (ECHO) and two read counts (INFO total_reads_processed). Per call: the client commands
        MONITOR saw between its markers, and its Redis round trips = the read events Redis
        processed during it (the mesh pipelines some commands, e.g. a hold's expiry-index ZADD
        travels with its record's script: several commands, one round trip). The mesh's own
        background work (settlement scheduler) also talks to Redis now and then; the median call
        is reported, so such a tick does not count as the RPC's. Not during the timed run:
        MONITOR slows Redis down."""
        if work.once:
            bodies = [payloads.splice(work.id_fields, self._uid("mon"), v) for v in once_variants]
        elif work.generator == H2LOAD:
            bodies = [work.body] * self.load.monitor_calls
        else:
            bodies = [payloads.splice(work.id_fields, self._uid("mon"), work.variants[i % len(work.variants)])
                      for i in range(self.load.monitor_calls)]
        if not bodies:
            return
        if not hasattr(self, "_script_names"):
            self._script_names = script_names(ROOT)
        client = self.redis.client

        def reads() -> int:
            return client.info("stats")["total_reads_processed"]

        monitor = Monitor(self.redis.port, self._script_names)
        round_trips: dict[str, int] = {}
        try:
            with grpc.insecure_channel(target) as channel:
                call = channel.unary_unary(work.method)
                for index, body in enumerate(bodies):
                    marker = f"bench-call-{index}"
                    client.echo(marker)
                    before = reads()
                    try:
                        call(body, metadata=tuple(METADATA), timeout=10)
                    except grpc.RpcError:
                        continue
                    # Minus 1: the second INFO's own read is counted before it answers.
                    round_trips[marker] = reads() - before - 1
            client.echo("bench-call-end")
        finally:
            sample = monitor.stop()
        per_call: dict[str, dict[str, int]] = {}
        current = None
        for kind, text in sample.sequence:
            if kind == "marker":
                current = per_call.setdefault(text, {}) if text in round_trips else None
            elif current is not None:
                current[text] = current.get(text, 0) + 1
        if not round_trips:
            return
        outcome.redis_round_trips_per_call = float(statistics.median(round_trips.values()))
        totals = {marker: sum(per_call.get(marker, {}).values()) for marker in round_trips}
        typical = float(statistics.median(totals.values()))
        outcome.redis_client_commands_per_call = typical
        # The command mix of the calls that sent the median number of commands.
        chosen = [per_call.get(m, {}) for m, total in totals.items() if total == typical] or list(per_call.values())
        names = sorted({name for commands in chosen for name in commands})
        outcome.redis_client_commands = {n: round(sum(c.get(n, 0) for c in chosen) / len(chosen), 2) for n in names}
        outcome.redis_round_trips_spread = [min(round_trips.values()), max(round_trips.values())]


def summarize(outcomes: list[Outcome]) -> dict:
    """Mean and spread of repeated measurements (used for the echo baseline)."""
    values = [o.rps for o in outcomes if o.rps]
    return {"mean": statistics.fmean(values) if values else None, "values": values}
