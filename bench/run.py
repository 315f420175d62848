"""The whole benchmark, in one process tree, in this order:

1. a private Redis (AOF, appendfsync always) and the bench cards, created through the native ledger;
2. the echo baseline (bare grpc.aio) with h2load (and, for reference, with the varying-body client);
3. the mesh all-in-one, then one process per service: every scenario in turn;
4. scaling: all-in-one with 1 and 2 worker processes on one port (SO_REUSEPORT);
5. tracing cost: all-in-one with trace sampling 0, 0.1 and 1.0, spans exported for real;
6. (full) server RSS over a 60 s run;
7. Redis memory per open hold;
8. the echo baseline again (full), to show how much the machine drifted during the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import payloads
from bench.echo_server import METHOD as ECHO_METHOD
from bench.h2load import ensure_h2load
from bench.mesh import Mesh, start_all_in_one, start_separate, write_config
from bench.processes import RedisServer, free_port, python, spawn, wait_serving
from bench.scenarios import H2LOAD, LOADGEN, SCENARIOS, METHODS, Load, Outcome, Runner, Work

MODES = ("all-in-one", "separate")
TRACE_RATIOS = {"off": 0.0, "sampled_10pct": 0.1, "full": 1.0}


@dataclass
class Profile:
    name: str
    load: Load
    cards: int
    memory_holds: int
    rss_seconds: float | None  # None: skip the RSS-over-time run
    echo_twice: bool
    echo_with_loadgen: bool = True
    # Smoke: save process start-ups: reuse the all-in-one mesh as scaling N=1 (plus one more
    # worker on its port for N=2) and as tracing off (same config: ratio 0 never exports).
    economical: bool = False


FULL = Profile("full", Load(warmup=3, duration=10, monitor_calls=30), cards=1000, memory_holds=100_000,
               rss_seconds=60, echo_twice=True)
SMOKE = Profile("smoke", Load(warmup=0.2, duration=0.6, monitor_calls=3, loadgen_processes=1, min_calls=10,
                               loadgen_in_process=True), cards=20,
                memory_holds=300, rss_seconds=None, echo_twice=False, echo_with_loadgen=False, economical=True)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _create_cards(redis_url: str, config: Path, numbers: list[str]) -> None:
    from redis.asyncio import Redis

    from common.config import load_settings
    from gateway.adapters.native.ledger import CARD_ALREADY_EXISTS, NativeLedger
    from common.errors import MeshError

    settings = load_settings(str(config))
    client = Redis.from_url(redis_url)
    ledger = NativeLedger(client, settings.card_hash_key)

    async def create(number: str) -> None:
        try:
            await ledger.create_card("demo", number, payloads.CURRENCY,
                                     balance_minor=payloads.CARD_BALANCE_MINOR, active=True)
        except MeshError as error:
            if error.reason != CARD_ALREADY_EXISTS:
                raise

    for start in range(0, len(numbers), 50):  # within the client's connection pool
        await asyncio.gather(*(create(n) for n in numbers[start:start + 50]))
    await client.aclose()


class _ScriptRecorder:
    """Stands in for Redis inside a NativeLedger: records every script call (source, keys, args)
    and answers a minimal success. The bench then runs the recorded calls for real in pipelines,
    so 100k holds take seconds, with arguments built by NativeLedger.hold itself."""

    _REPLY = json.dumps({"transaction_id": "t_recorded", "amount_minor": payloads.AMOUNT_MINOR,
                         "balance_minor": 0, "held_minor": 0, "currency": payloads.CURRENCY})

    def __init__(self) -> None:
        self.calls: list[tuple[str, list, list]] = []
        self.sources: dict[str, str] = {}  # sha -> script source (set from the ledger's scripts)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args) -> str:
        self.calls.append((self.sources[sha], list(keys_and_args[:numkeys]), list(keys_and_args[numkeys:])))
        return self._REPLY


async def _memory_per_hold(redis: RedisServer, config: Path, holds: int, cards: int) -> dict:
    """Open `holds` holds with the native ledger's hold script on a flushed Redis, spread over
    `cards` cards, and divide the INFO used_memory delta by the count."""
    from common.config import load_settings
    from gateway.adapters.native.ledger import NativeLedger

    redis.client.flushall()
    numbers = payloads.card_numbers(cards)
    await _create_cards(redis.url, config, numbers)
    settings = load_settings(str(config))
    recorder = _ScriptRecorder()
    ledger = NativeLedger(recorder, settings.card_hash_key)
    recorder.sources = {script.sha: script.script for script in ledger._scripts.values()}
    expires = int(time.time() * 1000) + 7 * 24 * 3600 * 1000
    for i in range(holds):
        await ledger.hold("demo", numbers[i % cards], payloads.AMOUNT_MINOR, payloads.CURRENCY,
                          allow_partial=False, expires_at_ms=expires, client_txn_id=f"mem-{i}")
    scripts: dict[str, object] = {}
    # Memory does not depend on the fsync policy; `always` would only make the fill take minutes.
    redis.client.config_set("appendfsync", "no")
    before = redis.client.info("memory")
    started = time.monotonic()
    failures = 0
    for start in range(0, holds, 1000):
        pipe = redis.client.pipeline(transaction=False)
        for source, keys, args in recorder.calls[start:start + 1000]:
            script = scripts.setdefault(source, redis.client.register_script(source))
            script(keys=keys, args=args, client=pipe)
        failures += sum(isinstance(r, Exception) for r in pipe.execute(raise_on_error=False))
    elapsed = time.monotonic() - started
    after = redis.client.info("memory")
    redis.client.config_set("appendfsync", "always")
    opened = holds - failures
    delta = after["used_memory"] - before["used_memory"]
    dataset = after["used_memory_dataset"] - before["used_memory_dataset"]
    return {
        "holds": opened, "failed": failures, "cards": cards, "used_memory_delta_bytes": delta,
        "bytes_per_hold": delta / max(opened, 1), "dataset_bytes_per_hold": dataset / max(opened, 1),
        "hold_scripts_per_second": opened / elapsed,
        "method": "hold-script calls built by NativeLedger.hold (its Redis replaced by a recorder), run "
                  "for real in pipelines of 1000 (appendfsync no during the fill); INFO memory used_memory "
                  "delta / holds",
    }


class Bench:
    def __init__(self, profile: Profile, results_dir: Path, only: set[str] | None = None) -> None:
        self.profile = profile
        self.results_dir = results_dir
        self.only = only
        self.workdir = Path(tempfile.mkdtemp(prefix="giftcard-bench-"))
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir()
        self.results: dict = {
            "profile": profile.name,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
            "load": {"streams": profile.load.streams, "connections": profile.load.connections,
                     "warmup_s": profile.load.warmup, "duration_s": profile.load.duration},
            "scenarios": {},
        }

    def _phase(self, name: str, body) -> None:
        try:
            body()
        except Exception as error:
            import traceback

            _log(f"phase {name} failed: {error!r}")
            self.results.setdefault("errors", {})[name] = traceback.format_exc()[-2000:]

    def _factories(self) -> dict:
        config, logdir = self.config, self.logdir
        factories = {
            "all-in-one": lambda: start_all_in_one(config, logdir),
            "separate": lambda: start_separate(config, logdir),
            "scaling-n1": lambda: start_all_in_one(config, logdir, workers=1, tag="scaling-n1"),
            "scaling-n2": lambda: start_all_in_one(config, logdir, workers=2, tag="scaling-n2"),
        }
        for label, ratio in TRACE_RATIOS.items():
            env = {"GIFTCARD_TELEMETRY__TRACE_SAMPLE_RATIO": str(ratio),
                   "GIFTCARD_TELEMETRY__CONSOLE_EXPORTER": "true"}
            factories[f"tracing-{label}"] = (
                lambda env=env, label=label: start_all_in_one(config, logdir, env=env, keep_logs=False,
                                                              tag=f"tracing-{label}"))
        if self.profile.rss_seconds:
            factories["rss"] = lambda: start_all_in_one(config, logdir, tag="rss")
        return factories

    def _mesh(self, key: str) -> Mesh:
        if self.profile.economical:
            if key in ("scaling-n1", "tracing-off"):
                return self._kept
            if key == "scaling-n2":
                # One more worker on the kept all-in-one port: SO_REUSEPORT makes it N=2.
                extra = start_all_in_one(self.config, self.logdir, tag="scaling-n2", port=self._kept.port)
                return Mesh("scaling-n2", [*self._kept.processes, *extra.wait().processes], self._kept.ports)
        prestarted = self._prestarted.pop(key, None)
        return (prestarted or self._factories()[key]()).wait()

    def _release(self, mesh: Mesh) -> None:
        """Done with a mesh: stop it (economical: keep the all-in-one one for later phases)."""
        if self.profile.economical and mesh.mode == "all-in-one":
            self._kept = mesh
            return
        if self.profile.economical and mesh.mode == "scaling-n2":
            for process in mesh.processes[len(self._kept.processes):]:
                process.stop()
            return
        if self.profile.economical and mesh is getattr(self, "_kept", None):
            return
        mesh.stop()


    def run(self) -> dict:
        h2load = ensure_h2load()
        redis = RedisServer(self.workdir)
        self._prestarted: dict[str, Mesh] = {}
        try:
            self.config = write_config(self.workdir / "bench.yaml", redis.url,
                                       shutdown_grace=0.5 if self.profile.economical else 2)
            self.runner = Runner(self.workdir, redis, h2load, self.profile.load, _log)
            self.numbers = payloads.card_numbers(self.profile.cards)
            _log(f"creating {len(self.numbers) + 1} cards through the native ledger")
            asyncio.run(_create_cards(redis.url, self.config, [*self.numbers, payloads.HOT_CARD]))
            self._echo("start")
            # One broken phase must not cost the others: it is recorded under `errors` instead.
            for mode in MODES:
                self._phase(f"mode {mode}", lambda mode=mode: self._mode(mode))
            self._phase("scaling", self._scaling)
            self._phase("tracing", self._tracing)
            if self.profile.rss_seconds:
                self._phase("rss", self._rss_over_time)
            _log(f"memory: {self.profile.memory_holds} open holds")
            self._phase("memory", lambda: self.results.__setitem__("memory", asyncio.run(
                _memory_per_hold(redis, self.config, self.profile.memory_holds, min(1000, self.profile.cards)))))
            if self.profile.echo_twice:
                self._phase("echo end", lambda: self._echo("end"))
        finally:
            for mesh in [*self._prestarted.values(), getattr(self, "_kept", None)]:
                if mesh is not None:
                    mesh.stop()
            redis.stop()
        self.results["machine"]["loadavg_end"] = os.getloadavg()
        self.results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.results

    # -- echo ---------------------------------------------------------------------------------

    def _echo(self, when: str) -> None:
        body = payloads.authorize_full("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", payloads.card_numbers(1)[0])
        port = free_port()
        server = spawn("echo", [python(), "-m", "bench.echo_server", "--port", str(port)], port,
                       self.logdir / "echo.log")
        try:
            wait_serving([server])
            _log(f"echo baseline ({when}), h2load, {len(body)}-byte message")
            h2 = self.runner.run(f"echo-{when}", server.address, [server.pid],
                                 Work(H2LOAD, ECHO_METHOD, body=body), monitor=False)
            echo = self.results.setdefault("echo", {"message_bytes": len(body)})
            echo[f"h2load_{when}"] = _numbers(h2)
            if when == "start" and self.profile.echo_with_loadgen:
                _log("echo baseline, varying-body client (reference for that generator's ceiling)")
                variants = [payloads.authorize_variant(n) for n in self.numbers]
                lg = self.runner.run("echo-loadgen", server.address, [server.pid],
                                     Work(LOADGEN, ECHO_METHOD, variants=variants), monitor=False)
                echo["loadgen"] = _numbers(lg)
        finally:
            server.stop()
        measured = [v["rps"] for k, v in echo.items() if k.startswith("h2load_") and v.get("rps")]
        if not measured:
            raise RuntimeError("the echo baseline failed; nothing to compare with")
        # Several echo runs: the highest is the baseline, so noise cannot flatter the mesh.
        best = max(measured)
        self.results["echo_rps"] = best
        source = next(v for k, v in echo.items() if k.startswith("h2load_") and v.get("rps") == best)
        self.results["echo_p50_ms"] = source["p50_ms"]
        self.results["echo_p99_ms"] = source["p99_ms"]

    # -- the mesh, both modes -----------------------------------------------------------------

    def _work(self, scenario: str, mode: str, holds: list[str]) -> Work | None:
        method = METHODS[scenario][1]
        numbers = self.numbers
        if scenario == "GetBalance":
            return Work(H2LOAD, method, body=payloads.get_balance(numbers[0]))
        if scenario == "Authorize":
            return Work(LOADGEN, method, variants=[payloads.authorize_variant(n) for n in numbers], collect=True)
        if scenario == "AuthorizeHotCard":
            return Work(LOADGEN, method, variants=[payloads.authorize_variant(payloads.HOT_CARD)])
        if scenario == "Redeem":
            return Work(LOADGEN, method, variants=[payloads.redeem_variant(n) for n in numbers])
        if scenario == "AuthorizeReplay":
            return Work(H2LOAD, method, body=payloads.authorize_full(f"replay-{mode}-{int(time.time())}", numbers[1]))
        if scenario == "Capture":
            return Work(LOADGEN, method, variants=[payloads.capture_variant(h) for h in holds],
                        id_fields=[1, 4], once=True)
        if scenario == "Checkout":
            k = len(numbers)
            return Work(LOADGEN, method, variants=[
                payloads.checkout_variant([numbers[i], numbers[(i + 1) % k], numbers[(i + 2) % k]]) for i in range(k)])
        raise KeyError(scenario)

    def _mode(self, mode: str) -> None:
        _log(f"starting the mesh: {mode}")
        mesh = self._mesh(mode)
        if self.profile.economical and mode == "separate":
            # Boot the two traced meshes while the separate-mode scenarios run.
            self._prestarted = {key: self._factories()[key]() for key in ("tracing-sampled_10pct", "tracing-full")}
        holds: list[str] = []
        try:
            for scenario in SCENARIOS:
                if self.only and scenario not in self.only:
                    continue
                service = METHODS[scenario][0]
                if scenario == "Capture" and not holds:
                    outcome = self._capture_without_holds(mesh, mode)
                else:
                    work = self._work(scenario, mode, holds)
                    _log(f"{mode}/{scenario} ({work.generator})")
                    try:
                        outcome = self.runner.run(f"{mode}-{scenario}", mesh.address(service), mesh.pids, work)
                    except Exception as error:  # recorded, the next scenario still runs
                        outcome = Outcome("failed", work.generator, f"harness error: {error!r}"[:500])
                if scenario == "Authorize" and outcome.status == "ok":
                    holds = payloads.hold_ids(outcome.collected)
                outcome.rss_mb = self.runner.rss(mesh.pids)
                _log(f"  -> {_brief(outcome)}")
                self.results["scenarios"][f"{mode}/{scenario}"] = _scenario_json(outcome, self.results["echo_rps"])
        finally:
            self._release(mesh)

    def _capture_without_holds(self, mesh: Mesh, mode: str) -> Outcome:
        """No holds to capture: Capture is missing itself, or blocked by a missing Authorize."""
        import grpc

        from bench.h2load import check_status
        from bench.scenarios import METADATA

        method = METHODS["Capture"][1]
        body = payloads.splice([1, 4], f"probe-{int(time.time())}", payloads.capture_variant("h_does_not_exist"))
        code, details, _ = check_status(mesh.address("settlement"), method, body, METADATA)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return Outcome("missing", LOADGEN, f"UNIMPLEMENTED: {details}")
        authorize = self.results["scenarios"].get(f"{mode}/Authorize", {})
        if authorize.get("status") == "missing":
            return Outcome("missing", LOADGEN, "needs holds from Authorize, which is UNIMPLEMENTED "
                                               f"(Capture of an unknown hold answers {code.name})")
        return Outcome("failed", LOADGEN, "no holds to capture (Authorize did not produce any); "
                                          f"Capture of an unknown hold answers {code.name}")

    # -- scaling and tracing ------------------------------------------------------------------

    def _headline(self, mode: str = "all-in-one") -> str:
        """Authorize when it works, else GetBalance (and the report says so)."""
        key = f"{mode}/Authorize"
        return "Authorize" if self.results["scenarios"].get(key, {}).get("status") == "ok" else "GetBalance"

    def _scaling(self) -> None:
        scenario = self._headline()
        # 16 connections instead of 8: SO_REUSEPORT spreads connections (not calls) over the
        # workers by a hash, so more connections give a more even split.
        runner = Runner(self.workdir, self.runner.redis, self.runner.h2load,
                        dataclasses.replace(self.profile.load, connections=16), _log)
        self.results["scaling"] = {"scenario": scenario, "connections": 16, "workers": {}}
        self.results["scaling_n2_over_n1"] = self._scale(runner, scenario, self.results["scaling"])
        if scenario != "GetBalance":
            # Also with the cheapest generator (h2load, C): on 2 CPUs the Python load generator
            # and Redis take a share the server workers then cannot have.
            also = {"scenario": "GetBalance", "connections": 16, "workers": {}}
            self.results["scaling"]["also"] = also
            also["n2_over_n1"] = self._scale(runner, "GetBalance", also)

    def _scale(self, runner: Runner, scenario: str, into: dict) -> float | None:
        rps: dict[int, float] = {}
        # Full runs: N=1, N=2, N=1, N=2 and the better run of each (as for tracing: another
        # tenant of the machine must neither make nor hide a scaling); all figures kept.
        rounds = 1 if self.profile.economical else 2
        into["all_rps"] = {"1": [], "2": []}
        for round_ in range(rounds):
            for workers in (1, 2):
                _log(f"scaling: all-in-one x{workers} workers, {scenario} (round {round_ + 1} of {rounds})")
                mesh = self._mesh(f"scaling-n{workers}")
                try:
                    outcome = runner.run(f"scaling-n{workers}-{scenario}-{round_}", mesh.address("authorization"),
                                         mesh.pids, self._work(scenario, "scaling", []), monitor=False)
                    outcome.rss_mb = self.runner.rss(mesh.pids)
                finally:
                    self._release(mesh)
                _log(f"  -> {_brief(outcome)}, machine busy {_pct(outcome.machine_busy)}")
                into["all_rps"][str(workers)].append(outcome.rps)
                if outcome.rps and outcome.rps > rps.get(workers, 0) or str(workers) not in into["workers"]:
                    into["workers"][str(workers)] = _scenario_json(outcome, self.results["echo_rps"])
                    if outcome.rps:
                        rps[workers] = max(outcome.rps, rps.get(workers, 0))
        one = into["workers"]["1"]
        cpus = os.cpu_count() or 1
        own = [one.get(k) for k in ("server_cpu_ms_per_call", "redis_cpu_ms_per_call", "generator_cpu_ms_per_call")]
        if all(own) and rps.get(1):
            # The bench's own CPU per call at N=1 (server + Redis + load generator): with every
            # CPU of the machine spent on it, throughput would be cpus / that; over N=1's rps, the
            # most any number of workers can reach here (other tenants and the kernel only lower it).
            into["own_cpu_ms_per_call_n1"] = sum(own)
            into["ceiling_over_n1"] = cpus * 1000 / sum(own) / rps[1]
        return rps[2] / rps[1] if rps.get(1) and rps.get(2) else None
    def _tracing(self) -> None:
        scenario = self._headline()
        self.results["tracing"] = {
            "scenario": scenario,
            "exporter": "ConsoleSpanExporter behind a BatchSpanProcessor (telemetry.console_exporter=true), "
                        "server stderr to /dev/null: every sampled span is built, batched and "
                        "serialized to JSON; only the write is free",
            "runs": {},
        }
        rps: dict[str, float] = {}
        # Full runs go round the three settings twice and keep each one's better run: on a
        # shared 2-CPU machine one run can lose a third of its throughput to another tenant,
        # which would read as (or hide) a tracing cost. Every run's figure is kept in `all_rps`.
        rounds = 1 if self.profile.economical else 2
        self.results["tracing"]["all_rps"] = {label: [] for label in TRACE_RATIOS}
        for round_ in range(rounds):
            for label, ratio in TRACE_RATIOS.items():
                _log(f"tracing: sample ratio {ratio}, {scenario} (round {round_ + 1} of {rounds})")
                mesh = self._mesh(f"tracing-{label}")
                try:
                    outcome = self.runner.run(f"tracing-{label}-{round_}", mesh.address("authorization"), mesh.pids,
                                              self._work(scenario, "tracing", []), monitor=False)
                finally:
                    self._release(mesh)
                _log(f"  -> {_brief(outcome)}")
                self.results["tracing"]["all_rps"][label].append(outcome.rps)
                if outcome.rps and outcome.rps > rps.get(label, 0):
                    self.results["tracing"]["runs"][label] = _scenario_json(outcome, self.results["echo_rps"])
                    rps[label] = outcome.rps
                elif label not in self.results["tracing"]["runs"]:
                    self.results["tracing"]["runs"][label] = _scenario_json(outcome, self.results["echo_rps"])
        base = rps.get("off")
        # Cost = share of throughput lost against tracing off (negative = within noise, faster).
        self.results["tracing_cost"] = {
            label: (0.0 if label == "off" else (1 - rps[label] / base if base and rps.get(label) else None))
            for label in TRACE_RATIOS
        }

    def _rss_over_time(self) -> None:
        scenario = self._headline()
        seconds = self.profile.rss_seconds
        _log(f"RSS over a {seconds:g} s {scenario} run (all-in-one)")
        mesh = self._mesh("rss")
        try:
            outcome = self.runner.run("rss", mesh.address("authorization"), mesh.pids,
                                      self._work(scenario, "rss", []), sample_rss=True, duration=seconds,
                                      monitor=False)
        finally:
            self._release(mesh)
        samples = outcome.rss_samples_mb
        entry = {"scenario": scenario, "seconds": seconds, "samples_mb": samples, "rps": outcome.rps,
                 "status": outcome.status, "detail": outcome.detail}
        if len(samples) >= 2:
            first, last = samples[0], samples[-1]
            entry.update(first_mb=first, last_mb=last, max_mb=max(samples),
                         growth=(last - first) / first, max_growth=(max(samples) - first) / first)
        _log(f"  -> {entry.get('first_mb')} MB -> {entry.get('last_mb')} MB")
        self.results["rss_over_time"] = entry


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.0f}%"


def _numbers(outcome: Outcome) -> dict:
    return {"status": outcome.status, "generator": outcome.generator, "detail": outcome.detail,
            "rps": outcome.rps, "p50_ms": outcome.p50_ms, "p99_ms": outcome.p99_ms,
            "server_cpu_ms_per_call": outcome.server_cpu_ms_per_call, "rss_mb": outcome.rss_mb}


def _scenario_json(outcome: Outcome, echo_rps: float) -> dict:
    data = outcome.as_dict()
    data["ratio_to_echo"] = outcome.rps / echo_rps if outcome.rps else None
    return data


def _brief(outcome: Outcome) -> str:
    if outcome.status != "ok":
        return f"{outcome.status}: {outcome.detail}"
    errors = f", errors {outcome.errors}" if outcome.errors else ""
    rt = outcome.redis_round_trips_per_call
    return (f"{outcome.rps:.0f} rps, p50 {outcome.p50_ms:.1f} ms, p99 {outcome.p99_ms:.1f} ms, "
            f"round trips {rt if rt is None else round(rt, 2)}, cpu {outcome.server_cpu_ms_per_call:.2f} ms/call{errors}")
