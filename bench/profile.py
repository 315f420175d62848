"""Profile the all-in-one server under one scenario with py-spy (`pip install py-spy`).

    python -m bench.profile Authorize --seconds 10 [--native] [--top 40]

Starts a private Redis and `giftcard serve all`, drives the scenario with the same generator as
the bench, records the server with `py-spy record --format raw` (collapsed stacks) and prints the
functions with the most samples, inclusive and self. The raw profile is kept (path printed) for
flame graphs (e.g. speedscope, inferno)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench import payloads
from bench.mesh import start_all_in_one, write_config
from bench.h2load import ensure_h2load
from bench.processes import RedisServer
from bench.run import _create_cards
from bench.scenarios import METHODS, SCENARIOS, Load, Runner
from bench.run import Bench, SMOKE


def summarize(raw: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"{100 * n / total:6.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--native", action="store_true", help="include native (C) frames")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="giftcard-profile-"))
    redis = RedisServer(workdir)
    config = write_config(workdir / "bench.yaml", redis.url)
    numbers = payloads.card_numbers(200)
    asyncio.run(_create_cards(redis.url, config, [*numbers, payloads.HOT_CARD]))
    env = dict(item.split("=", 1) for item in args.env)
    mesh = start_all_in_one(config, workdir, env=env).wait()
    try:
        load = Load(warmup=1, duration=args.seconds + 2)
        runner = Runner(workdir, redis, ensure_h2load(), load, print)
        bench = Bench(SMOKE, workdir)
        bench.numbers = numbers
        holds: list[str] = []
        if args.scenario == "Capture":
            authorize = runner.run("holds", mesh.address("authorization"), mesh.pids,
                                   bench._work("Authorize", "profile", []), monitor=False)
            holds = payloads.hold_ids(authorization_collected(authorize))
        work = bench._work(args.scenario, "profile", holds)
        raw = workdir / f"{args.scenario}.pyspy.txt"
        recorder = subprocess.Popen(
            [py_spy, "record", "--format", "raw", "-r", "200", "-d", str(int(args.seconds)),
             "-o", str(raw), "-p", str(mesh.pids[0]), *(["--native"] if args.native else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        outcome_box = {}
        thread = threading.Thread(target=lambda: outcome_box.setdefault("o", runner.run(
            args.scenario, mesh.address(METHODS[args.scenario][0]), mesh.pids, work, monitor=False)))
        thread.start()
        time.sleep(0.5)
        recorder.wait()
        thread.join()
        outcome = outcome_box["o"]
        print(f"{args.scenario}: {outcome.status} {outcome.rps} rps, p99 {outcome.p99_ms} ms, "
              f"server CPU {outcome.server_cpu_ms_per_call} ms/call {outcome.detail}")
        print(summarize(raw, args.top))
        print(f"\nraw profile: {raw}")
    finally:
        mesh.stop()
        redis.stop()


def authorization_collected(outcome) -> list[bytes]:
    return outcome.collected


if __name__ == "__main__":
    main()
