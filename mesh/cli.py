"""The `giftcard` command: `giftcard serve [all|<service>...]`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.config import load_settings
from common.server import run_until_signalled
from common.telemetry import configure_logging
from mesh.services import SPECS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="giftcard", description="Gift card payment mesh")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run services (all in one process by default)",
        description="Run all services in one process (`all`, the default) or the named ones; "
        "services not run here are reached at endpoints.<name> (GIFTCARD_ENDPOINTS__<NAME>).",
    )
    serve.add_argument("services", nargs="*", default=["all"], choices=["all", *SPECS], metavar="SERVICE",
                       help=f"all (default) or any of: {', '.join(SPECS)}")
    serve.add_argument("--config", help="YAML config file (default: $GIFTCARD_CONFIG)")
    serve.add_argument("--port", type=int, help="gRPC port (overrides grpc.port)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (overrides metrics.port)")
    return parser


async def _serve(args: argparse.Namespace) -> int:
    from mesh.runtime import ALL_SERVICES, MeshRuntime

    overrides: dict = {}
    if args.port is not None:
        overrides["grpc"] = {"port": args.port}
    if args.metrics_port is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    settings = load_settings(args.config, **overrides)
    configure_logging(settings.telemetry)
    services = ALL_SERVICES if "all" in args.services else args.services
    runtime = MeshRuntime(settings, services)
    await runtime.start()
    print(
        f"giftcard: serving {', '.join(runtime.services)} on {settings.grpc.host}:{runtime.port}",
        file=sys.stderr, flush=True,
    )
    await run_until_signalled([], on_stop=runtime.stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return asyncio.run(_serve(args))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
