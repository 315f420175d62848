"""`python -m gateway.simulators <vendor> [--port N] [--host H] [--cards FILE] [--fault SPEC] ...`"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import VENDORS, create_simulator
from .common.faults import FaultConfig, FaultRule, FaultSpecError, parse_spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.simulators",
                                     description="Run a gift card vendor sandbox.")
    parser.add_argument("vendor", choices=VENDORS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--cards", help="JSON file: a list of card specs to seed (see /_sim/cards)")
    parser.add_argument("--options", help="JSON object of vendor options (see /_sim/config)")
    parser.add_argument("--fault", action="append", default=[],
                        help="fault applied to every vendor request, e.g. latency=200ms (repeatable "
                             "as PATH:SPEC to limit it to one path)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="steady-rate chaos, 0..1")
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--rate-faults", help="comma-free list separated by ';' of specs for --fault-rate")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)

    try:
        simulator = create_simulator(args.vendor, options=json.loads(args.options) if args.options else None)
        rules = []
        for item in args.fault:
            path, sep, spec = item.rpartition(":") if item.startswith("/") else ("", "", item)
            rules.append(FaultRule(spec=parse_spec(spec, simulator.vendor_actions), path=path or None))
        config = FaultConfig(rules=rules, rate=args.fault_rate, seed=args.fault_seed,
                             hang_seconds=args.hang_seconds)
        if args.rate_faults:
            config.rate_faults = tuple(s for s in args.rate_faults.split(";") if s)
            for spec in config.rate_faults:
                parse_spec(spec, simulator.vendor_actions)
        simulator.faults.configure(config)
        if args.cards:
            with open(args.cards, encoding="utf-8") as handle:
                for spec in json.load(handle):
                    simulator.seed_card(spec)
    except (ValueError, FaultSpecError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from .common.server import serve_forever

    serve_forever(simulator, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
