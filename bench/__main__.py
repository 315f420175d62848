"""`python -m bench` (full run) or `python -m bench --smoke` (seconds-long, for the smoke test)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from bench import report
from bench.run import FULL, SMOKE, Bench
from bench.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: checks the harness, not the speed")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results"),
                        help="directory for latest.json and latest.md (default: bench/results)")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario (overrides the profile)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="run only these mesh scenarios")
    parser.add_argument("--cards", type=int, help="cards to spread load over (full: 1000)")
    parser.add_argument("--holds", type=int, help="open holds for the Redis memory figure (full: 100000)")
    parser.add_argument("--rss-seconds", type=float, help="length of the RSS-over-time run (full: 60; 0 skips it)")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so every started process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    profile = SMOKE if args.smoke else FULL
    if args.duration:
        profile.load.duration = args.duration
    if args.cards:
        profile.cards = args.cards
    if args.holds:
        profile.memory_holds = args.holds
    if args.rss_seconds is not None:
        profile.rss_seconds = args.rss_seconds or None
    results = Bench(profile, args.out, set(args.only) if args.only else None).run()
    json_path, md_path = report.write(results, args.out)
    print(report.table(results))
    print()
    for target, measured, verdict in report.targets(results):
        print(f"{verdict:>24}  {target}: {measured}")
    print(f"\nwrote {json_path} and {md_path}")
    for phase, text in results.get("errors", {}).items():
        print(f"\nphase {phase} failed:\n{text}")
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
